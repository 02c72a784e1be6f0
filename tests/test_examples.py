"""Every script in examples/ runs, on tiny data (`--smoke`, a few dozen images, 1 epoch).

The scripts run in this process (TensorFlow is imported once), each in its
own temporary folder, through their `main(argv)` function.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# tune_custom_backbone.py is run (and checked more closely) by tests/test_tuning.py.
EXAMPLES = sorted(
    path for path in (ROOT / "examples").glob("*.py") if path.name != "tune_custom_backbone.py"
)


def _smoke_flag(source):
    # tune_custom_backbone.py calls its tiny mode --tiny.
    return "--smoke" if '"--smoke"' in source else "--tiny"


def test_there_are_examples():
    names = {path.name for path in EXAMPLES}
    assert {
        "head_in_your_model.py",
        "subclass_cifar10.py",
        "subclass_digits.py",
        "subclass_image_folder.py",
        "class_activation_maps.py",
        "tune_bottleneck_width.py",
    } <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_on_tiny_data(script, tmp_path, monkeypatch, capsys):
    import keras

    source = script.read_text(encoding="utf-8")
    assert "def main(argv=None)" in source, f"{script.name} needs a main(argv=None)"
    assert '"--smoke"' in source or '"--tiny"' in source, f"{script.name} needs --smoke"
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script), run_name=f"example_{script.stem}")
    try:
        outcome = namespace["main"]([_smoke_flag(source)])
    finally:
        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()
    assert outcome in (0, None) or isinstance(outcome, dict), outcome
    printed = capsys.readouterr().out
    assert printed.strip(), f"{script.name} printed nothing"
    # The scripts report what they did; a few facts are checked per script.
    checks = {
        "class_activation_maps.py": ["class activation maps: shape (8, 7, 7, 10)", "wrote"],
        "head_in_your_model.py": [
            "mobilenet_with_nin_head",
            "sequential_with_nin_head",
            "subclassed_with_nin_head",
        ],
        "subclass_cifar10.py": ["reloaded as Cifar10Net, same predictions: True"],
        "subclass_digits.py": [
            "reloaded: DigitsNet, convs_per_block=2",
            "same predictions after reload: True",
        ],
        "subclass_image_folder.py": ["classes: ['one', 'two', 'zero']", "predicted"],
        "tune_bottleneck_width.py": ["best bottleneck width:"],
        "tune_custom_backbone.py": ["Best bottleneck width:"],
    }
    for expected in checks.get(script.name, []):
        assert expected in printed, f"{script.name} did not print {expected!r}:\n{printed}"
    written = {path.name for path in tmp_path.rglob("*") if path.is_file()}
    if script.name == "class_activation_maps.py":
        assert "class_activation_maps.png" in written
    if script.name.startswith("subclass_"):
        assert any(name.endswith(".keras") for name in written)
