"""Writes the `--help` of every `nin-layers` sub-command into docs/cli.md.

    python docs/scripts/cli_help.py          # rewrite the help blocks of docs/cli.md
    python docs/scripts/cli_help.py --check  # exit 1 if docs/cli.md is out of date

In docs/cli.md, each block between `<!-- help: COMMAND -->` and
`<!-- end help -->` is replaced by the output of `nin-layers COMMAND --help`
formatted 80 columns wide. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "cli.md"
BLOCK = re.compile(r"(<!-- help: (?P<command>[\w-]*) -->\n)(.*?)(<!-- end help -->)", re.DOTALL)


def help_texts():
    """Returns {"": main help, "train": ..., ...} formatted 80 columns wide."""
    from nin_layers.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        parser = build_parser()
        texts = {"": parser.format_help()}
        for action in parser._subparsers._group_actions:
            for name, subparser in action.choices.items():
                texts[name] = subparser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return texts


def render(page_text, texts):
    """Returns the page with every help block replaced by the current help."""

    def replace(match):
        text = texts[match["command"]].rstrip()
        return f"{match[1]}```text\n{text}\n```\n{match[4]}"

    return BLOCK.sub(replace, page_text)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    current = PAGE.read_text(encoding="utf-8")
    updated = render(current, help_texts())
    if "--check" in argv:
        if updated != current:
            print(f"{PAGE} is out of date: run python docs/scripts/cli_help.py")
            return 1
        return 0
    PAGE.write_text(updated, encoding="utf-8")
    print(f"updated {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
