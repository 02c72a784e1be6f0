"""Tests of nin_layers.training on tiny synthetic data (a few seconds each)."""

import json
import os

import keras
import numpy as np
import pytest

from nin_layers import training
from nin_layers.data import Dataset
from nin_layers.training import evaluate, resolve_precision, train


def quadrant_data(train_count=96, test_count=40, seed=0):
    """16x16 images; class c (0..3) has a bright 8x8 square in quadrant c."""
    rng = np.random.default_rng(seed)

    def make(count):
        y = np.arange(count) % 4
        x = rng.uniform(0, 0.3, (count, 16, 16, 1)).astype("float32")
        for index, label in enumerate(y):
            row, col = divmod(int(label), 2)
            x[index, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8, 0] += 0.7
        return x, y.astype("int32")

    x_train, y_train = make(train_count)
    x_test, y_test = make(test_count)
    return Dataset(x_train, y_train, x_test, y_test, 4, (16, 16, 1), "quadrants")


FAST = dict(batch_size=16, learning_rate=1e-2, precision="float32", verbose=0)


# ---------------------------------------------------------------- precision
def test_resolve_precision_explicit_and_invalid():
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        assert resolve_precision(name) == name
    with pytest.raises(ValueError, match="argument `precision`.*Received: precision='half'"):
        resolve_precision("half")


def test_resolve_precision_auto_reads_gpu_and_cpu_flags(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert resolve_precision("auto") == "float32"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    assert resolve_precision("auto") == "mixed_float16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_bf16\n\n")
    assert training._cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512_bf16", "amx_bf16"}
    assert training._cpu_flags(str(tmp_path / "missing")) == set()


# -------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def reference():
    """An uninterrupted 3-epoch float32 run with seed 2 (no output folder)."""
    return train(quadrant_data(), epochs=3, seed=2, **FAST)


def test_training_learns(reference):
    assert reference.metrics["test_accuracy"] >= 0.9
    assert reference.metrics["precision"] == "float32"
    assert reference.metrics["images_per_second"] > 0
    assert len(reference.history["loss"]) == 3
    assert reference.history["loss"][-1] < reference.history["loss"][0]
    line = reference.summary_line()
    assert line.startswith("test accuracy ") and "images/s" in line and "float32" in line


def test_same_seed_gives_same_metrics_in_float32(reference):
    again = train(quadrant_data(), epochs=3, seed=2, **FAST)
    assert again.history == reference.history
    assert again.metrics["test_loss"] == reference.metrics["test_loss"]
    assert again.metrics["test_accuracy"] == reference.metrics["test_accuracy"]


def test_interrupted_run_resumes_exactly_and_writes_every_output(tmp_path, reference):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    data = quadrant_data()
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(data, epochs=3, out_dir=str(out), seed=2, callbacks=[Interrupt()], **FAST)
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]["loss"]) == 2
    assert not (out / "model.keras").exists()

    resumed = train(data, epochs=3, out_dir=str(out), seed=2, **FAST)
    assert resumed.metrics["resumed_from_epoch"] == 2
    assert resumed.history == reference.history
    assert resumed.metrics["test_loss"] == reference.metrics["test_loss"]
    assert resumed.metrics["test_accuracy"] == reference.metrics["test_accuracy"]

    names = set(os.listdir(out))
    expected = {
        "model.keras", "history.csv", "history.json", "metrics.json", "config.json",
        "training_curves.png", "confusion_matrix.png", "class_activation_maps.png",
    }  # fmt: skip
    assert expected <= names
    assert "backup" not in names  # removed once the run is complete
    for name in expected:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 4  # nothing lost
    history = json.loads((out / "history.json").read_text())
    assert history["loss"] == pytest.approx(reference.history["loss"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(reference.metrics["test_accuracy"])
    assert np.asarray(metrics["confusion_matrix"]).sum() == 40

    loaded = keras.saving.load_model(str(out / "model.keras"))
    x = data.x_test[:8]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), resumed.model.predict(x, verbose=0), atol=1e-6
    )


def test_backup_with_other_settings_is_discarded(tmp_path, capsys):
    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    state = {"epoch": 1, "weights": "epoch-0001.weights.h5", "history": {"loss": [9.0]},
             "settings": {"head": "gap"}}  # fmt: skip
    (backup / "state.json").write_text(json.dumps(state))
    result = train(
        quadrant_data(), epochs=1, out_dir=str(tmp_path / "run"), reports_images=0,
        **{**FAST, "verbose": 2},
    )  # fmt: skip
    assert result.metrics["resumed_from_epoch"] == 0
    assert len(result.history["loss"]) == 1 and result.history["loss"][0] != 9.0
    assert "with other settings; starting over" in capsys.readouterr().out


def test_mixed_bfloat16_trains_and_leaves_the_global_policy_alone():
    result = train(quadrant_data(32, 8), epochs=1, **{**FAST, "precision": "mixed_bfloat16"})
    assert result.model.dtype_policy.name == "mixed_bfloat16"
    assert result.model.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    assert np.isfinite(result.metrics["test_loss"])


def test_gap_head_and_validation_split(tmp_path):
    path = tmp_path / "q.npz"
    data = quadrant_data()
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test)  # fmt: skip
    result = train(str(path), head="gap", epochs=1, validation_split=0.25, **FAST)
    assert result.model.head.mode == "gap"
    assert len(result.dataset.x_val) == 24
    assert len(result.history["val_accuracy"]) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head": "dense"}, "argument `head`.*Received: head='dense'"),
        ({"epochs": 0}, "argument `epochs`, expected an integer >= 1"),
        ({"batch_size": 2.5}, "argument `batch_size`"),
        ({"learning_rate": -1.0}, "argument `learning_rate`"),
        ({"precision": "float16"}, "argument `precision`"),
        ({"random_shift": -1}, "argument `random_shift`, expected an integer >= 0 or 'auto'"),
    ],
)
def test_train_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(quadrant_data(8, 4), **{**FAST, **kwargs})


def test_garbage_data_is_never_trained(tmp_path):
    path = tmp_path / "bad.npz"
    data = quadrant_data(8, 4)
    x = data.x_train.copy()
    x[0, 0, 0, 0] = np.nan
    np.savez(path, x_train=x, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="bad.npz: x_train contains 1 NaN"):
        train(str(path), out_dir=str(out), **FAST)
    assert not out.exists()


# ----------------------------------------------------------------- evaluate
def test_evaluate_matches_a_direct_computation():
    data = quadrant_data(8, 40)
    model = training.build_model(data, "reshape", 8)
    result = evaluate(model, data.x_test, data.y_test, batch_size=16)
    probabilities = model.predict(data.x_test, verbose=0)
    predicted = probabilities.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(np.mean(predicted == data.y_test))
    expected_loss = keras.losses.sparse_categorical_crossentropy(data.y_test, probabilities)
    assert result["loss"] == pytest.approx(float(np.mean(expected_loss)), rel=1e-5)
    for label in range(4):
        members = data.y_test == label
        assert result["per_class_accuracy"][label] == pytest.approx(
            np.mean(predicted[members] == label)
        )
    assert np.asarray(result["confusion_matrix"]).sum() == 40


def test_cam_figure_shows_every_class_and_some_mistakes():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    predicted = np.array([0, 1, 1, 0, 2, 2, 0, 1])  # indices 2 and 4 are wrong
    chosen = training._spread_indices(labels, predicted, 6)
    assert len(chosen) == len(set(chosen.tolist())) == 6
    assert {2, 4} <= set(chosen.tolist())
    assert set(labels[chosen].tolist()) == {0, 1, 2}
    assert len(training._spread_indices(labels, labels, 20)) == 8


def test_auto_batch_size_keeps_at_least_100_steps_per_epoch():
    assert training.default_batch_size(60_000) == 256
    assert training.default_batch_size(25_600) == 256  # exactly 100 steps
    assert training.default_batch_size(25_599) == 128
    result = train(quadrant_data(24, 8), **{**FAST, "batch_size": "auto"})
    assert result.metrics["batch_size"] == 128
    with pytest.raises(ValueError, match=r"expected an integer >= 1 or 'auto'.*batch_size='big'"):
        train(quadrant_data(8, 4), **{**FAST, "batch_size": "big"})


def test_auto_random_shift_follows_the_image_size(capsys):
    assert training.default_random_shift((28, 28, 1)) == 2
    assert training.default_random_shift((32, 32, 3)) == 2
    assert training.default_random_shift((8, 8, 1)) == 0
    assert training.default_random_shift((13, 100)) == 0
    # The 16x16 quadrant images get one pixel, and the run says so.
    train(quadrant_data(24, 8), **{**FAST, "verbose": 2})
    assert "random shifts of up to 1 px (auto)" in capsys.readouterr().out
