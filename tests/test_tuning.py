"""Library tests of `nin_layers.tuning`: hypermodel, tuners, resume, results.

Searches run on a few dozen 8x8 images with one conv block of 4 filters and
one epoch, in `tmp_path`, so each trial takes a second or two.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import sys
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from nin_layers import AllConvNetHyperModel, tuning

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(input_shape=(8, 8, 1), num_classes=3, filters=(4,), min_width=2, max_width=16)


def tiny_data(count=48, seed=0):
    """8x8 images whose class (0-2) is where a bright band is, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, count).astype("int32")
    x = rng.random((count, 8, 8, 1), dtype=np.float32) * 0.3
    for i, label in enumerate(y):
        x[i, 2 * label : 2 * label + 3, :, 0] += 0.7
    return x, y


@pytest.fixture(scope="module")
def data():
    x, y = tiny_data(64)
    return x[:48], y[:48], x[48:], y[48:]


def run_search(data, directory, tuner, *, hypermodel=None, max_trials=3, **kwargs):
    x, y, x_val, y_val = data
    instance = tuning.make_tuner(
        hypermodel or AllConvNetHyperModel(**TINY),
        tuner,
        max_trials=max_trials,
        epochs=kwargs.pop("epochs", 1),
        directory=directory,
        overwrite=kwargs.pop("overwrite", False),
        show_progress=False,
        **kwargs,
    )
    instance.search(x, y, validation_data=(x_val, y_val), epochs=1, batch_size=16, verbose=0)
    return instance


def comparable(tuner):
    """Per trial: values and metrics that must not depend on interruptions."""
    out = {}
    for trial_id, trial in tuner.oracle.trials.items():
        out[trial_id] = {
            "status": trial.status,
            "values": {k: v for k, v in trial.hyperparameters.values.items()},
            "val_accuracy": trial.metrics.get_last_value("val_accuracy"),
            "val_loss": trial.metrics.get_last_value("val_loss"),
            "num_params": trial.metrics.get_last_value("num_params"),
        }
    return out


# ------------------------------------------------------------ hypermodel
def test_default_build_is_the_tutorial_reshape_model():
    hypermodel = AllConvNetHyperModel()
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert [p.name for p in hp.space] == ["bottleneck_width"]
    width = hp.space[0]
    assert (width.min_value, width.max_value, width.sampling, width.default) == (
        8,
        1024,
        "log",
        128,
    )
    assert model.head_mode == "reshape"
    assert model.head.bottleneck_width == 128
    assert model.count_params() == 65354
    assert model.compiled
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_build_uses_hyperparameter_values_and_passes_arguments_through():
    hypermodel = AllConvNetHyperModel(
        tune_learning_rate=True,
        tune_dropout=True,
        rescaling=1 / 255,
        activation=None,
        **TINY,
    )
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    assert {p.name for p in hp.space} == {"bottleneck_width", "learning_rate", "dropout_rate"}
    hp.values.update(bottleneck_width=4, learning_rate=5e-3, dropout_rate=0.2)
    model = hypermodel.build(hp)
    assert model.head.bottleneck_width == 4
    assert model.filters == (4,)
    assert model.dropout_rate == pytest.approx(0.2)
    assert model.rescaling == pytest.approx(1 / 255)
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-3)
    # activation=None gives logits, so the loss must take logits.
    assert model.loss.get_config()["from_logits"] is True
    assert model.output_shape == (None, 3)


def test_default_width_is_clipped_and_snapped_to_the_grid():
    assert AllConvNetHyperModel(**TINY).default_width == 16
    assert AllConvNetHyperModel(min_width=8, max_width=1024, default_width=100).default_width == 128
    hypermodel = AllConvNetHyperModel(min_width=3, max_width=50, width_step=None)
    assert hypermodel.default_width == 50
    assert hypermodel.width_values() == list(range(3, 51))
    assert AllConvNetHyperModel(min_width=8, max_width=1000).width_values() == [
        8,
        16,
        32,
        64,
        128,
        256,
        512,
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_width": 0}, "min_width"),
        ({"min_width": 64, "max_width": 8}, "max_width"),
        ({"width_step": 1}, "width_step"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"input_shape": (4, 4, 1)}, "too small"),
        ({"filters": ()}, "filters"),
        ({"head_mode": "gap"}, "sets itself"),
        ({"bottleneck_width": 64}, "sets itself"),
        ({"kernel_size": 5}, "unknown argument `kernel_size`"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"tune_learning_rate": True, "learning_rate": 0.5}, "inside learning_rate_range"),
        ({"learning_rate_range": (1e-2, 1e-4)}, "learning_rate_range"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"dropout_range": (0.5, 0.2)}, "dropout_range"),
        ({"tune_dropout": "yes"}, "tune_dropout"),
    ],
)
def test_hypermodel_checks_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        AllConvNetHyperModel(**kwargs)
    assert "Received" in str(info.value)


def test_trial_seed_depends_only_on_the_values():
    a = tuning.trial_seed({"bottleneck_width": 8, "learning_rate": 0.01})
    assert a == tuning.trial_seed({"learning_rate": 0.01, "bottleneck_width": 8})
    assert a != tuning.trial_seed({"bottleneck_width": 16, "learning_rate": 0.01})
    assert a != tuning.trial_seed({"bottleneck_width": 8, "learning_rate": 0.01}, execution=1)
    assert a != tuning.trial_seed({"bottleneck_width": 8, "learning_rate": 0.01}, base_seed=1)
    assert 0 <= a < 2**31


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tuner": "evolution"}, "tuner"),
        ({"tuner": "hyperband"}, "needs `epochs`"),
        ({"tuner": "hyperband", "epochs": 3, "hyperband_factor": 1}, "hyperband_factor"),
        ({"max_trials": 0}, "max_trials"),
        ({"executions_per_trial": 0}, "executions_per_trial"),
        ({"seed": -1}, "seed"),
    ],
)
def test_make_tuner_checks_its_arguments(tmp_path, kwargs, message):
    kwargs = {"tuner": "random", **kwargs}
    with pytest.raises(ValueError, match=message):
        tuning.make_tuner(AllConvNetHyperModel(**TINY), directory=tmp_path, **kwargs)


# ------------------------------------------------------- search and resume
class Interrupted(BaseException):
    """Stands for a kill: not an `Exception`, so keras-tuner does not catch it."""


class InterruptingHyperModel(AllConvNetHyperModel):
    """Raises `Interrupted` when the `stop_at`-th model starts training."""

    def __init__(self, stop_at, **kwargs):
        super().__init__(**kwargs)
        self.stop_at = stop_at
        self.fits = 0

    def fit(self, hp, model, *args, **kwargs):
        self.fits += 1
        if self.fits == self.stop_at:
            raise Interrupted
        return super().fit(hp, model, *args, **kwargs)


@pytest.fixture(scope="module")
def grid_baseline(data, tmp_path_factory):
    registry = tuning._custom_gradient_registry()
    before = set(registry)
    tuner = run_search(data, tmp_path_factory.mktemp("grid_baseline"), "grid")
    # Custom gradients registered while tracing the trials' train steps (each
    # holds a whole graph) were released after each trial.
    tuner.leftover_custom_gradients = set(registry) - before
    return tuner


def test_interrupted_search_resumes_to_the_same_results(data, tmp_path, grid_baseline):
    interrupted = InterruptingHyperModel(stop_at=2, **TINY)
    with pytest.raises(Interrupted):
        run_search(data, tmp_path, "grid", hypermodel=interrupted)
    statuses = sorted(t.status for t in interrupted_trials(tmp_path))
    assert statuses == ["COMPLETED", "RUNNING"]

    # The same search again (a new tuner reloads the project).
    resumed = run_search(data, tmp_path, "grid")
    first_id = sorted(resumed.oracle.trials)[0]
    # The finished trial is kept, not re-run; the interrupted one is re-run,
    # after a different history in this process, yet with the same results:
    # each trial seeds itself from its values.
    assert first_id not in resumed.trials_run_here
    assert len(resumed.trials_run_here) == 2
    assert comparable(resumed) == comparable(grid_baseline)


# Oracle-level resume checks: no training, fake scores.
def score_of(width):
    return 1.0 - abs(np.log2(width) - 3.0) / 10.0


def new_oracle(kind, directory, max_trials):
    hypermodel = AllConvNetHyperModel(**TINY, width_step=None)
    if kind == "grid":
        oracle = tuning._ResumableGridSearchOracle(
            objective="val_accuracy", max_trials=max_trials, seed=1
        )
    elif kind == "stock_grid":
        oracle = keras_tuner.oracles.GridSearchOracle(
            objective="val_accuracy", max_trials=max_trials, seed=1
        )
    elif kind == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            objective="val_accuracy", max_epochs=9, factor=3, seed=1
        )
    elif kind == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(
            objective="val_accuracy", max_trials=max_trials, seed=1
        )
    else:
        oracle = tuning._ResumableBayesianOptimizationOracle(
            objective="val_accuracy", max_trials=max_trials, num_initial_points=2, seed=1
        )
    oracle._set_project_dir(str(directory), "project")
    oracle._display.verbose = 0
    hp = oracle.get_space()
    hypermodel.declare_hyperparameters(hp)
    oracle.update_space(hp)
    return oracle


def reload_oracle(kind, directory, max_trials):
    oracle = new_oracle(kind, directory, max_trials)
    oracle.reload()
    return oracle


def drive(oracle, trials, leave_last_running=False):
    """Runs `trials` fake trials; optionally "dies" during the last one."""
    for index in range(trials):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            return
        if leave_last_running and index == trials - 1:
            return
        width = trial.hyperparameters.values["bottleneck_width"]
        oracle.update_trial(trial.trial_id, {"val_accuracy": score_of(width)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


def widths(oracle):
    return [
        int(oracle.trials[t].hyperparameters.values["bottleneck_width"])
        for t in sorted(oracle.trials)
    ]


@pytest.mark.parametrize(
    "kind, die_mid_trial",
    [("grid", False), ("grid", True), ("bayesian", True), ("hyperband", True), ("random", True)],
)
def test_oracle_resume_proposes_what_an_uninterrupted_search_does(kind, die_mid_trial, tmp_path):
    total = {"bayesian": 4, "hyperband": 20}.get(kind, 6)
    baseline = new_oracle(kind, tmp_path / "baseline", total)
    drive(baseline, total)
    assert len(baseline.trials) == (16 if kind == "hyperband" else total)

    directory = tmp_path / "resumed"
    drive(new_oracle(kind, directory, total), 3, leave_last_running=die_mid_trial)
    resumed = reload_oracle(kind, directory, total)
    drive(resumed, total)
    assert len(baseline.trials) > 3
    assert widths(resumed) == widths(baseline)
    assert [resumed.trials[t].hyperparameters.values for t in sorted(resumed.trials)] == [
        baseline.trials[t].hyperparameters.values for t in sorted(baseline.trials)
    ]
    assert all(t.status == "COMPLETED" for t in resumed.trials.values())


def test_stock_grid_oracle_cannot_resume(tmp_path):
    """keras-tuner issue #1055, which `_ResumableGridSearchOracle` fixes."""
    drive(new_oracle("stock_grid", tmp_path, 6), 3, leave_last_running=True)
    resumed = reload_oracle("stock_grid", tmp_path, 6)
    with pytest.raises(KeyError):
        drive(resumed, 6)


def interrupted_trials(directory):
    found = []
    for path in Path(directory).glob("*/trial_*/trial.json"):
        found.append(keras_tuner.engine.trial.Trial.load(str(path)))
    return found


def test_grid_search_walks_the_width_grid_default_first(grid_baseline):
    widths = [
        int(grid_baseline.oracle.trials[t].hyperparameters.values["bottleneck_width"])
        for t in sorted(grid_baseline.oracle.trials)
    ]
    assert widths == [16, 2, 4]


def test_results_table_files_and_plot(grid_baseline, tmp_path):
    rows = tuning.results_rows(grid_baseline)
    best = tuning.best_row(grid_baseline, rows)
    assert [r["bottleneck_width"] for r in rows] == [2, 4, 16]
    assert all(isinstance(r["bottleneck_width"], int) for r in rows)
    expected_params = {
        w: AllConvNetHyperModel(**TINY, default_width=w)
        .build(keras_tuner.HyperParameters())
        .count_params()
        for w in (2, 4, 16)
    }
    for row in rows:
        assert row["status"] == "COMPLETED"
        assert row["parameters"] == expected_params[row["bottleneck_width"]]
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert row["val_accuracy_std"] == 0.0  # one execution
        assert row["epochs"] == 1
        assert row["seconds"] > 0
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in rows)

    table = tuning.format_results_table(rows, "val_accuracy", best)
    lines = table.splitlines()
    assert "width" in lines[0] and "parameters" in lines[0] and "mean +- std" in lines[0]
    assert len(lines) == 2 + len(rows)
    starred = [line for line in lines[2:] if line.startswith("*")]
    assert len(starred) == 1 and f"{best['parameters']:,}" in starred[0]

    paths = tuning.write_results(rows, tmp_path, "val_accuracy", best, settings={"a": 1})
    with open(paths["csv"], newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [int(r["bottleneck_width"]) for r in records] == [2, 4, 16]
    assert {"parameters", "val_accuracy", "val_accuracy_std", "epochs", "seconds"} <= set(
        records[0]
    )
    payload = json.loads(Path(paths["json"]).read_text())
    assert payload["best"]["trial"] == best["trial"] and payload["settings"] == {"a": 1}
    assert len(payload["trials"]) == 3
    png = Path(paths["png"]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    # The search recorded memory after each trial (used by memory_profile).
    assert len(grid_baseline.trial_rss_mib) == 3 and min(grid_baseline.trial_rss_mib) > 0


def test_trials_release_their_traced_graphs(grid_baseline):
    assert grid_baseline.leftover_custom_gradients == set()


def test_executions_are_seeded_apart_and_their_spread_recorded(data, tmp_path):
    tuner = run_search(
        data, tmp_path, "random", max_trials=1, executions_per_trial=2, objective="val_loss"
    )
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED"
    # Two executions seeded differently: their losses differ.
    assert trial.metrics.get_last_value("val_loss_std") > 0
    assert trial.metrics.get_last_value("epochs") == 1


def test_distribution_strategy_passes_through(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    tuner = tuning.make_tuner(
        AllConvNetHyperModel(**TINY),
        "random",
        directory=tmp_path,
        distribution_strategy=strategy,
        show_progress=False,
    )
    assert tuner.distribution_strategy is strategy
    model = tuner._try_build(keras_tuner.HyperParameters())
    assert model.distribute_strategy is strategy


def test_memory_profile_reports_each_trial():
    report = tuning.memory_profile(num_trials=1, image_size=8, num_images=32)
    assert report["trials"] == 1
    assert len(report["rss_mib"]) == 1 and min(report["rss_mib"]) > 50
    assert report["peak_mib"] >= max(report["rss_mib"]) - 1


def test_search_bottleneck_width_checks_data(data):
    x, y, x_val, y_val = data
    with pytest.raises(ValueError, match="validation_data"):
        tuning.search_bottleneck_width(x, y, None)
    with pytest.raises(ValueError, match="training data"):
        tuning.search_bottleneck_width(x[:, :, :, 0], y, (x_val, y_val))


def test_custom_backbone_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys,
        "argv",
        ["tune_custom_backbone.py", "--tiny", "--directory", str(tmp_path), "--overwrite"],
    )
    namespace = runpy.run_path(str(ROOT / "examples" / "tune_custom_backbone.py"))
    best = namespace["main"]()
    output = capsys.readouterr().out
    assert best["bottleneck_width"] in {4, 8, 16, 32, 64, 128, 256}
    assert output.strip().splitlines()[-1] == f"Best bottleneck width: {best['bottleneck_width']}"
    project = tmp_path / "separable_backbone"
    assert (project / "results.csv").exists() and (project / "best_model.keras").exists()
    model = keras.saving.load_model(project / "best_model.keras")
    assert model.get_layer("head").bottleneck_width == best["bottleneck_width"]
    assert not any(isinstance(layer, keras.layers.Dense) for layer in model.layers)
    assert os.path.isdir(project)
