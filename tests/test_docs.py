"""The documentation never rots: its examples run and the site builds.

- The `>>>` examples in the docstrings of every `nin_layers` module run
  under `doctest`.
- The ```python blocks of every page in docs/ (and of README.md) run, page
  by page, in one namespace per page, in a temporary folder. A block whose
  first line holds `# skip-test` is not run (network or long training).
  A line `print(expr)  # text` checks that it prints exactly `text`; a
  comment starting with `~` is an approximate value and is not checked.
- `mkdocs build --strict` succeeds (skipped when mkdocs is not installed),
  every page is in the navigation, and the command line page names every
  option of every sub-command.
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
CHECKED_PRINT = re.compile(r"^(?P<indent>\s*)print\((?P<expr>.+)\)\s+#\s(?P<expected>[^~].*?)\s*$")


@pytest.fixture
def without_xla(monkeypatch):
    """Compiles models without XLA, as `jit_compile=False` would.

    Keras turns XLA on by default (`jit_compile="auto"`), also on CPUs, where
    compiling takes longer than these one-epoch runs themselves (a small
    Sequential model: 23 s with XLA, 5 s without). The code under test is
    unchanged; only Keras' default choice is patched, for this test only.
    """
    try:
        from keras.src.trainers import trainer
    except ImportError:  # another Keras layout: keep its default
        return
    if hasattr(trainer, "model_supports_jit"):
        monkeypatch.setattr(trainer, "model_supports_jit", lambda model: False)


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
    """Returns the ```python blocks of a Markdown text, minus `# skip-test` ones."""
    blocks = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        if "skip-test" in first:
            continue
        blocks.append((text.count("\n", 0, match.start()) + 1, code))
    return blocks


def with_print_checks(code):
    """Rewrites `print(x)  # expected` lines into checked prints."""
    lines = []
    for line in code.splitlines():
        match = CHECKED_PRINT.match(line)
        if match:
            line = (
                f"{match['indent']}__check_print__({match['expr']}, expected={match['expected']!r})"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _check_print(*values, expected):
    printed = " ".join(str(value) for value in values)
    print(printed)
    assert printed == expected, f"printed {printed!r}, the page says {expected!r}"


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


def test_skip_marker_and_block_extraction():
    text = "# t\n```python\nx = 1\n```\n\n```python\n# skip-test: network\ny = 2\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n")]


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_page_code_runs(page, tmp_path, monkeypatch, without_xla):
    import keras

    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}", "__check_print__": _check_print}
    text = page.read_text(encoding="utf-8")
    try:
        for line, code in python_blocks(text):
            try:
                exec(compile(with_print_checks(code), f"{page.name}:{line}", "exec"), namespace)
            except Exception as error:
                raise AssertionError(
                    f"the code block at {page.name} line {line} failed: {error!r}"
                ) from error
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
    sys.path.insert(0, str(DOCS / "scripts"))
    try:
        from griffe_keras_docstrings import indent_examples
    finally:
        sys.path.pop(0)
    text = "Summary.\n\nExample:\n\n>>> 1 + 1\n2\n\nReturns:\n    x.\n"
    assert indent_examples(text) == (
        "Summary.\n\nExamples:\n\n    >>> 1 + 1\n    2\n\nReturns:\n    x."
    )
