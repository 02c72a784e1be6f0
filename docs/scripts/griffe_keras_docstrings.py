"""A griffe extension that renders Keras-style `Example:` sections as code.

Keras docstrings write

    Example:

    >>> model = AllConvNet()

with the doctest lines at the same indentation as the `Example:` title.
Google-style parsing (griffe) only treats an *indented* block under
`Examples:` as examples, so without help the `>>>` lines become plain
Markdown text (nested block quotes). This extension renames the title to
`Examples:` and indents the block below it, so the API reference shows
the examples as highlighted Python sessions. The source is not changed.
"""

from __future__ import annotations

import re

import griffe

_TITLE = re.compile(r"^Examples?:\s*$")
_NEXT_SECTION = re.compile(r"^[A-Z][\w ]*:\s*$")


def indent_examples(text):
    """Returns `text` with every unindented `Example:` block indented."""
    lines = text.splitlines()
    out = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not _TITLE.match(line):
            out.append(line)
            index += 1
            continue
        out.append("Examples:")
        index += 1
        while index < len(lines) and not _NEXT_SECTION.match(lines[index]):
            body = lines[index]
            if body.strip() and not body.startswith("    "):
                body = "    " + body
            out.append(body)
            index += 1
    return "\n".join(out)


class KerasExamples(griffe.Extension):
    """Indents Keras-style example blocks before the docstrings are parsed."""

    def on_object(self, *, obj, **kwargs):
        docstring = obj.docstring
        if docstring is not None and "Example" in docstring.value:
            docstring.value = indent_examples(docstring.value)
