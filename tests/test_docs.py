"""The documentation never rots: its examples run and the site builds.

- The `>>>` examples in the docstrings of every `nin_layers` module run
  under `doctest`.
- The ```python blocks of every page in docs/ (and of README.md) run, page
  by page, in one namespace per page, in a temporary folder. A block whose
  first line holds `# skip-test` is not run (network or long training).
  A line `print(expr)  # text` checks that it prints exactly `text`; a
  comment starting with `~` is an approximate value and is not checked.
  A block followed by a ```text block that starts with `SomeError: message`
  must raise that error with that message (`...` stands for any text):
  the FAQ shows the real messages.
- `mkdocs build --strict` succeeds (skipped when mkdocs is not installed),
  every page is in the navigation, and the command line page shows the
  current `--help` of every sub-command.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nin_layers

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
ERROR_BLOCK = re.compile(
    r"\s*```text\n(?P<type>[A-Z]\w*(?:Error|Exception)): (?P<message>[^\n]*)\n"
)
CHECKED_PRINT = re.compile(r"^(?P<indent>\s*)print\((?P<expr>.+)\)\s+#\s(?P<expected>[^~].*?)\s*$")


# ---------------------------------------------------------------- doctests
def _modules():
    return sorted(
        info.name
        for info in pkgutil.iter_modules(nin_layers.__path__, "nin_layers.")
        if info.name != "nin_layers.__main__"
    )


@pytest.mark.parametrize("module_name", ["nin_layers", *_modules()])
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


# ---------------------------------------------------- Markdown code blocks
def python_blocks(text):
    """The ```python blocks of a Markdown text, minus `# skip-test` ones.

    Returns `(line, code, error)` tuples. `error` is `None`, or
    `(type_name, message)` when the block is followed by a ```text block
    whose first line is `SomeError: message`: the block must raise it.
    """
    blocks = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        if "skip-test" in first:
            continue
        error = None
        following = ERROR_BLOCK.match(text, match.end())
        if following:
            error = (following["type"], following["message"])
        blocks.append((text.count("\n", 0, match.start()) + 1, code, error))
    return blocks


def with_print_checks(code):
    """Rewrites `print(x)  # expected` lines into checked prints."""
    lines = []
    for line in code.splitlines():
        match = CHECKED_PRINT.match(line)
        if match:
            expected = repr(match["expected"])
            line = f"{match['indent']}__check_print__({match['expr']}, expected={expected})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _check_print(*values, expected):
    printed = " ".join(str(value) for value in values)
    print(printed)
    assert printed == expected, f"printed {printed!r}, the page says {expected!r}"


def _check_error(error, expected):
    """`error` is of the page's type and holds its message (`...` = anything)."""
    type_name, message = expected
    assert type(error).__name__ == type_name, f"raised {error!r}, the page says {type_name}"
    text, position = str(error), 0
    for fragment in message.split("..."):
        fragment = fragment.strip()
        found = text.find(fragment, position)
        assert found >= 0, f"the page says {fragment!r}, the error says {text!r}"
        position = found + len(fragment)


def _pages_with_code():
    pages = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
    return [page for page in pages if python_blocks(page.read_text(encoding="utf-8"))]


def test_print_check_rewriting():
    code = 'x = 3\nprint(x + 1)  # 4\nprint(x)  # ~3\nprint("a")\n'
    rewritten = with_print_checks(code)
    assert "__check_print__(x + 1, expected='4')" in rewritten
    assert "print(x)  # ~3" in rewritten
    assert 'print("a")' in rewritten
    with pytest.raises(AssertionError, match="the page says '5'"):
        exec(with_print_checks("print(2 + 2)  # 5"), {"__check_print__": _check_print})


def test_block_extraction_skip_marker_and_expected_errors():
    text = (
        "# t\n```python\nx = 1\n```\n\n```python\n# skip-test: network\ny = 2\n```\n"
        "```python\nint('a')\n```\n\n```text\nValueError: invalid literal ...\n```\n"
    )
    assert python_blocks(text) == [
        (2, "x = 1\n", None),
        (10, "int('a')\n", ("ValueError", "invalid literal ...")),
    ]
    _check_error(ValueError("invalid literal for int()"), ("ValueError", "invalid literal ..."))
    with pytest.raises(AssertionError):
        _check_error(ValueError("other"), ("ValueError", "invalid literal ..."))
    with pytest.raises(AssertionError):
        _check_error(TypeError("invalid literal"), ("ValueError", "invalid literal"))


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_page_code_runs(page, tmp_path, monkeypatch):
    import keras

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}", "__check_print__": _check_print}
    text = page.read_text(encoding="utf-8")
    try:
        for line, code, error in python_blocks(text):
            where = f"the code block at {page.name} line {line}"
            compiled = compile(with_print_checks(code), f"{page.name}:{line}", "exec")
            try:
                exec(compiled, namespace)
            except Exception as raised:
                if error is None:
                    raise AssertionError(f"{where} failed: {raised!r}") from raised
                _check_error(raised, error)
            else:
                assert error is None, f"{where} should raise {error[0]}: {error[1]}"
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()


# ------------------------------------------------------------------- site
def _nav_pages():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return set(re.findall(r":\s*([\w/.-]+\.md)\s*$", config, re.MULTILINE))


def test_every_page_is_in_the_navigation():
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "scripts" not in p.parts}
    nav = _nav_pages()
    assert pages - nav == set(), "pages missing from the nav of mkdocs.yml"
    assert nav - pages == set(), "nav entries without a page"


def test_every_picture_exists_and_is_committed_png():
    for page in DOCS.rglob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            path = (page.parent / target).resolve()
            assert path.is_file(), f"{page.name} shows a missing picture: {target}"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{target} is not a PNG"


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"mkdocs build --strict took {elapsed:.1f} s")
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "nin-layers" in home
    reference = (tmp_path / "site" / "api" / "heads" / "index.html").read_text(encoding="utf-8")
    # The docstring examples are rendered as code, not as Markdown text.
    assert 'class="highlight"' in reference and "PointwiseClassifierHead(" in reference


def test_keras_example_sections_are_indented_for_griffe():
    indent_examples = _docs_script("griffe_keras_docstrings").indent_examples
    text = "Summary.\n\nExample:\n\n>>> 1 + 1\n2\n\nReturns:\n    x.\n"
    assert indent_examples(text) == (
        "Summary.\n\nExamples:\n\n    >>> 1 + 1\n    2\n\nReturns:\n    x."
    )


def _docs_script(name):
    sys.path.insert(0, str(DOCS / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_command_line_page_shows_the_current_help():
    cli_help = _docs_script("cli_help")
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    texts = cli_help.help_texts()
    assert set(texts) >= {"", "train", "evaluate", "tune"}
    for command, text in texts.items():
        assert f"<!-- help: {command} -->" in page, f"docs/cli.md has no block for {command!r}"
        assert text.strip() in page, (
            f"the help of `nin-layers {command}` in docs/cli.md is out of date: "
            "run python docs/scripts/cli_help.py"
        )


# ----------------------------------------------------- docstring contents
def _documented_objects():
    """Everything the API reference shows, plus `nin_layers.__all__`."""
    names = set()
    for page in (DOCS / "api").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        names |= set(re.findall(r"^::: ([\w.]+)\s*$", text, re.MULTILINE))
    names |= {f"nin_layers.{name}" for name in nin_layers.__all__ if not name.startswith("_")}
    # One entry per object, under the name of the module that defines it.
    canonical = set()
    for dotted in names:
        obj = _resolve(dotted)
        canonical.add(f"{obj.__module__}.{obj.__qualname__}")
    return sorted(canonical)


def _resolve(dotted):
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


@pytest.mark.parametrize("dotted", _documented_objects())
def test_public_docstring_has_args_and_runnable_example(dotted):
    import inspect

    obj = _resolve(dotted)
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{dotted} has no docstring"
    signature = inspect.signature(obj)
    parameters = [
        p
        for p in signature.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if parameters:
        assert "Args:" in doc or "Attributes:" in doc, f"{dotted}: no Args section"
    assert ">>>" in doc, f"{dotted}: no runnable example (>>> lines) in its docstring"
