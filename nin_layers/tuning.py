"""Keras Tuner search of the width of the head's 1x1 bottleneck.

The pieces, from the smallest to the command line:

- `AllConvNetHyperModel`: a `keras_tuner.HyperModel` whose `build(hp)`
  declares `bottleneck_width` (an integer on a log scale) and returns a
  compiled `AllConvNet` in `"reshape"` mode. Learning rate and dropout can be
  tuned too.
- `make_tuner(hypermodel, "random" | "bayesian" | "hyperband" | "grid")`:
  the keras-tuner tuners, with three additions. Each trial seeds itself from
  its own hyperparameter values (so results do not depend on trial order and
  a resumed search ends like an uninterrupted one); every trial records its
  parameter count, the spread of the objective over executions, its epochs
  and its seconds; grid search and Bayesian optimization resume correctly
  (keras-tuner 1.4.8 loses the grid's position, its issue #1055).
- `search_bottleneck_width(x, y, validation_data=...)`: builds the
  hypermodel and the tuner, runs the search and returns a `SearchResult`.
- `results_rows`, `format_results_table`, `write_results`, `plot_results`:
  the results table and its CSV, JSON and PNG files.
- `add_tune_arguments` and `run_tune_command`: `nin-layers tune`.
- `memory_profile`: resident memory after each of many tiny trials.

Distributed search uses keras-tuner's own chief/worker mode: run the same
command in several processes with `KERASTUNER_TUNER_ID` (`"chief"` for one of
them), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set (or
`--tuner-id`, `--oracle-ip` and `--oracle-port`). The chief only serves the
search's state over gRPC; workers run trials. A worker killed mid-trial and
restarted with the same id re-runs the trial it had.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from datetime import datetime

import keras
import keras_tuner
import numpy as np
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.engine import oracle as oracle_module
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine import tuner_utils
from keras_tuner.src.tuners import bayesian as bayesian_module
from keras_tuner.src.tuners import gridsearch as gridsearch_module

from nin_layers.heads import check_positive_int, check_rate
from nin_layers.models import AllConvNet, _check_filters, _check_input_shape

TUNERS = ("random", "bayesian", "hyperband", "grid")
WIDTH = "bottleneck_width"
LEARNING_RATE = "learning_rate"
DROPOUT_RATE = "dropout_rate"
# Arguments of `AllConvNet` that the hypermodel sets itself.
_RESERVED_MODEL_ARGS = (
    "head_mode",
    "bottleneck_width",
    "dropout_rate",
    "num_classes",
    "input_shape",
)
_MODEL_ARGS = (
    "filters",
    "activation",
    "activation_order",
    "rescaling",
    "data_format",
    "name",
    "dtype",
)


def _invalid(argument, expected, received):
    return ValueError(
        f"Received an invalid value for argument `{argument}`, expected "
        f"{expected}. Received: {argument}={received!r}"
    )


def _check_range(name, value, low, high, *, log):
    """Checks a `(min, max)` pair; `log` ranges must be strictly positive."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise _invalid(name, "a pair (min, max) of numbers", value) from None
    if not lo < hi or lo < low or hi > high or (log and lo <= 0):
        bounds = f"{'0 < ' if log else f'{low} <= '}min < max <= {high}"
        raise _invalid(name, f"a pair (min, max) with {bounds}", value)
    return lo, hi


# --------------------------------------------------------------- hypermodel
class AllConvNetHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` of `AllConvNet` that tunes the bottleneck width.

    `build(hp)` declares one integer hyperparameter, `"bottleneck_width"`,
    sampled on a log scale between `min_width` and `max_width` (default
    `default_width`), and returns a compiled `AllConvNet` with
    `head_mode="reshape"`: the head is a 1x1 convolution of that width, global
    average pooling and a 1x1 convolution to the classes. With
    `tune_learning_rate=True` it also declares `"learning_rate"` (log scale in
    `learning_rate_range`), and with `tune_dropout=True` `"dropout_rate"` (in
    `dropout_range`, steps of 0.1). Both are off by default, when the fixed
    `learning_rate` and `dropout_rate` are used.

    The model is compiled with Adam, sparse categorical cross-entropy (from
    logits when `activation=None`) and the `"accuracy"` metric, so the
    objective of a search is `"val_accuracy"`.

    Use it with `make_tuner` (or `search_bottleneck_width`) rather than a
    bare keras-tuner tuner: those seed every trial from its hyperparameter
    values, so results do not depend on the order of trials.

    Args:
        num_classes: int >= 1. Number of classes. Defaults to `10`.
        input_shape: `(height, width, channels)` of the images. Defaults to
            `(28, 28, 1)`.
        min_width: int >= 1, smallest bottleneck width. Defaults to `8`.
        max_width: int >= `min_width`, largest bottleneck width. Defaults to
            `1024`.
        default_width: int >= 1, the width tried first (by grid search, and
            by Bayesian optimization's defaults). Clipped into
            `[min_width, max_width]` and, when `width_step` is set, moved to
            the nearest width of the grid. Defaults to `128`.
        width_step: `None` or int >= 2. With an int, widths are
            `min_width * width_step ** k` (powers of two times `min_width` by
            default), which keeps grid search and a small budget meaningful;
            with `None`, any integer in the range (still sampled on a log
            scale). Defaults to `2`.
        tune_learning_rate: bool, whether to tune the learning rate. Defaults
            to `False`.
        learning_rate: float > 0, Adam's learning rate when it is not tuned,
            and the default of the tuned one. Defaults to `1e-3`.
        learning_rate_range: `(min, max)` of the tuned learning rate.
            Defaults to `(1e-4, 1e-2)`.
        tune_dropout: bool, whether to tune the head's dropout rate. Defaults
            to `False`.
        dropout_rate: float in [0, 1), the head's dropout rate when it is not
            tuned, and the default of the tuned one. Defaults to `0.0`.
        dropout_range: `(min, max)` of the tuned dropout rate. Defaults to
            `(0.0, 0.5)`.
        name: optional name of the hypermodel.
        tunable: whether the hyperparameters may be tuned. Defaults to `True`.
        **model_kwargs: other `AllConvNet` arguments, passed through:
            `filters`, `activation`, `activation_order`, `rescaling`,
            `data_format`, `name`, `dtype`.

    Example:

    >>> import keras_tuner
    >>> from nin_layers import AllConvNetHyperModel
    >>> hypermodel = AllConvNetHyperModel(min_width=8, max_width=1024)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> model.head.bottleneck_width
    128
    >>> model.count_params()
    65354
    """

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        min_width=8,
        max_width=1024,
        default_width=128,
        width_step=2,
        tune_learning_rate=False,
        learning_rate=1e-3,
        learning_rate_range=(1e-4, 1e-2),
        tune_dropout=False,
        dropout_rate=0.0,
        dropout_range=(0.0, 0.5),
        name=None,
        tunable=True,
        **model_kwargs,
    ):
        super().__init__(name=name, tunable=tunable)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.input_shape = _check_input_shape(input_shape)
        self.min_width = check_positive_int("min_width", min_width)
        self.max_width = check_positive_int("max_width", max_width)
        if self.max_width < self.min_width:
            raise _invalid("max_width", f"an integer >= min_width={self.min_width}", max_width)
        if width_step is not None and (
            isinstance(width_step, bool) or not isinstance(width_step, int) or width_step < 2
        ):
            raise _invalid(
                "width_step", "None or an integer >= 2 (a factor between widths)", width_step
            )
        self.width_step = width_step
        check_positive_int("default_width", default_width)
        self.default_width = self._snap_width(default_width)

        for flag_name, flag in (
            ("tune_learning_rate", tune_learning_rate),
            ("tune_dropout", tune_dropout),
        ):
            if not isinstance(flag, bool):
                raise _invalid(flag_name, "True or False", flag)
        self.tune_learning_rate = tune_learning_rate
        self.tune_dropout = tune_dropout
        if (
            isinstance(learning_rate, bool)
            or not isinstance(learning_rate, (int, float))
            or not learning_rate > 0
        ):
            raise _invalid("learning_rate", "a float > 0", learning_rate)
        self.learning_rate = float(learning_rate)
        self.learning_rate_range = _check_range(
            "learning_rate_range", learning_rate_range, 0.0, math.inf, log=True
        )
        self.dropout_rate = check_rate("dropout_rate", dropout_rate)
        self.dropout_range = _check_range("dropout_range", dropout_range, 0.0, 0.99, log=False)
        if tune_learning_rate and not (
            self.learning_rate_range[0] <= self.learning_rate <= self.learning_rate_range[1]
        ):
            raise _invalid(
                "learning_rate",
                f"a value inside learning_rate_range={self.learning_rate_range} "
                "(it is the default of the tuned learning rate)",
                learning_rate,
            )
        if tune_dropout and not (
            self.dropout_range[0] <= self.dropout_rate <= self.dropout_range[1]
        ):
            raise _invalid(
                "dropout_rate",
                f"a value inside dropout_range={self.dropout_range} "
                "(it is the default of the tuned dropout rate)",
                dropout_rate,
            )

        for key in model_kwargs:
            if key in _RESERVED_MODEL_ARGS:
                raise ValueError(
                    f"Received the AllConvNet argument `{key}`, which "
                    "AllConvNetHyperModel sets itself (the head is in "
                    '"reshape" mode and its width is the tuned `bottleneck_width`; '
                    "use `default_width`, `min_width`, `max_width`, `dropout_rate`, "
                    "`num_classes` and `input_shape` instead). "
                    f"Received: {key}={model_kwargs[key]!r}"
                )
            if key not in _MODEL_ARGS:
                raise ValueError(
                    f"Received an unknown argument `{key}`, expected "
                    f"AllConvNet arguments among {', '.join(_MODEL_ARGS)}. "
                    f"Received: {key}={model_kwargs[key]!r}"
                )
        if "filters" in model_kwargs:
            model_kwargs["filters"] = _check_filters(model_kwargs["filters"])
        self._check_spatial_size(model_kwargs)
        self.model_kwargs = model_kwargs

    def _snap_width(self, width):
        width = min(max(width, self.min_width), self.max_width)
        if self.width_step is None:
            return width
        grid = self.width_values()
        return min(grid, key=lambda w: (abs(math.log(w / width)), w))

    def _check_spatial_size(self, model_kwargs):
        filters = model_kwargs.get("filters", (32, 64, 64))
        data_format = model_kwargs.get("data_format") or keras.config.image_data_format()
        spatial = self.input_shape[:2] if data_format == "channels_last" else self.input_shape[1:]
        needed = 2 ** len(filters)
        if any(size is not None and size < needed for size in spatial):
            raise ValueError(
                f"Received an input too small for {len(filters)} conv blocks: "
                f"each halves height and width, so the input needs at least "
                f"{needed} pixels per side. Received: input_shape="
                f"{self.input_shape}, filters={tuple(filters)}"
            )

    def width_values(self):
        """The widths the search can take, smallest first.

        With `width_step`, the grid `min_width * width_step ** k`; without,
        every integer from `min_width` to `max_width`.
        """
        if self.width_step is None:
            return list(range(self.min_width, self.max_width + 1))
        values, width = [], self.min_width
        while width <= self.max_width:
            values.append(width)
            width *= self.width_step
        return values

    def declare_hyperparameters(self, hp):
        """Declares this hypermodel's hyperparameters on `hp`, returns their values."""
        values = {
            WIDTH: hp.Int(
                WIDTH,
                min_value=self.min_width,
                max_value=self.max_width,
                step=self.width_step,
                sampling="log",
                default=self.default_width,
            )
        }
        if self.tune_learning_rate:
            low, high = self.learning_rate_range
            values[LEARNING_RATE] = hp.Float(
                LEARNING_RATE, low, high, sampling="log", default=self.learning_rate
            )
        if self.tune_dropout:
            low, high = self.dropout_range
            values[DROPOUT_RATE] = hp.Float(
                DROPOUT_RATE, low, high, step=0.1, default=self.dropout_rate
            )
        return values

    def build(self, hp):
        """Returns a compiled `AllConvNet` with the widths and rates of `hp`."""
        values = self.declare_hyperparameters(hp)
        model = AllConvNet(
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            head_mode="reshape",
            bottleneck_width=int(values[WIDTH]),
            dropout_rate=float(values.get(DROPOUT_RATE, self.dropout_rate)),
            **self.model_kwargs,
        )
        from_logits = "activation" in self.model_kwargs and self.model_kwargs["activation"] is None
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=float(values.get(LEARNING_RATE, self.learning_rate))
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            metrics=["accuracy"],
        )
        return model


# ---------------------------------------------------------------- seeding
def trial_seed(values, execution=0, base_seed=0):
    """A seed derived from a trial's hyperparameter values.

    Two trials with the same values (and the same `execution` index and
    `base_seed`) get the same seed whatever the order they run in, in any
    process. Used by the tuners of `make_tuner` before each model is built.

    Args:
        values: dict of hyperparameter names to values (`hp.values`).
        execution: int, which execution of the trial (0 for the first).
        base_seed: int, the search's seed.

    Returns:
        An int in `[0, 2**31)`.
    """
    text = json.dumps(
        {"values": {k: values[k] for k in sorted(values)}, "e": execution, "s": base_seed},
        sort_keys=True,
        default=str,
    )
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % (2**31)


# ---------------------------------------------------------------- oracles
class _ResumableGridSearchOracle(gridsearch_module.GridSearchOracle):
    """keras-tuner's grid oracle with its position saved (keras-tuner #1055).

    keras-tuner 1.4.8 keeps the grid's order (`_ordered_ids`) and the queue
    of trials whose next combination is still to be made (`_populate_next`)
    only in memory, so a resumed grid search crashes with a `KeyError`, or
    stops early. This subclass saves both in `oracle.json`, and queues a
    finished trial before the state is saved rather than after.
    """

    def get_state(self):
        state = super().get_state()
        ordered, index = [], self._ordered_ids._next_index[None]
        while index is not None:
            ordered.append(self._ordered_ids._memory[index])
            index = self._ordered_ids._next_index[index]
        state["ordered_ids"] = ordered
        state["populate_next"] = list(self._populate_next)
        return state

    def set_state(self, state):
        super().set_state(state)
        self._ordered_ids = gridsearch_module.LinkedList()
        for trial_id in state.get("ordered_ids", []):
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(state.get("populate_next", []))

    @oracle_module.synchronized
    def end_trial(self, trial):
        # Queued before `Oracle.end_trial` saves the state, so that a search
        # killed between two trials still knows where the grid goes next.
        self._populate_next.append(trial.trial_id)
        oracle_module.Oracle.end_trial(self, trial)


class _ResumableBayesianOptimizationOracle(bayesian_module.BayesianOptimizationOracle):
    """keras-tuner's Bayesian oracle, reproducible across resumes.

    The stock oracle draws the starting points of its acquisition search from
    a random state that is not saved, so a resumed search proposes different
    values than an uninterrupted one. This one reseeds it from the seed and
    the number of trials before each proposal.
    """

    def populate_space(self, trial_id):
        self._random_state = np.random.RandomState(self.seed + len(self.trials))
        return super().populate_space(trial_id)


# ------------------------------------------------------------------ tuners
def _trial_number(trial_id):
    try:
        return int(trial_id) + 1
    except (TypeError, ValueError):
        return trial_id


def describe_values(values):
    """`"bottleneck_width=64, learning_rate=0.001"` for a trial's values."""
    parts = []
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{name}={value}")
    text = ", ".join(parts) or "default values"
    if "tuner/trial_id" in values:
        text += (
            f" (continues trial {_trial_number(values['tuner/trial_id'])}, "
            f"epochs {values.get('tuner/initial_epoch')}->{values.get('tuner/epochs')})"
        )
    return text


class _ProgressDisplay(oracle_module.Display):
    """Prints one line when a trial starts and one when it ends.

    Replaces keras-tuner's display on the oracle (so on the chief in
    distributed mode). Its on/off switch is `show`, not `verbose`, because
    `Tuner.search(verbose=0)` turns the oracle's display off to silence
    `fit`.
    """

    def __init__(self, oracle, total=None, show=True):
        super().__init__(oracle=oracle, verbose=1)
        self.total = total
        self.show = show

    def _label(self, trial):
        number = _trial_number(trial.trial_id)
        return f"Trial {number} of {self.total}" if self.total else f"Trial {number}"

    def on_trial_begin(self, trial):
        now = datetime.now()
        self.trial_start[trial.trial_id] = now
        if self.search_start is None:
            self.search_start = now
        self.trial_number[trial.trial_id] = _trial_number(trial.trial_id)
        if self.show:
            print(
                f"{self._label(trial)}: {describe_values(trial.hyperparameters.values)}", flush=True
            )

    def on_trial_end(self, trial):
        if not self.show:
            return
        name = self.oracle.objective.name
        if trial.status == trial_module.TrialStatus.COMPLETED and trial.score is not None:
            mean = trial.score
            std = _last_metric(trial, f"{name}_std")
            seconds = _last_metric(trial, "seconds")
            result = f"{name} {mean:.4f}"
            if std is not None:
                result += f" +- {std:.4f}"
            if seconds is not None:
                result += f" in {seconds:.1f} s"
        else:
            message = (trial.message or "").strip().splitlines()
            result = f"{trial.status.lower()}" + (f": {message[-1]}" if message else "")
        best = best_trial(self.oracle)
        best_text = "none yet"
        if best is not None:
            best_text = f"{best.score:.4f} ({describe_values(best.hyperparameters.values)})"
        print(f"{self._label(trial)} done: {result}; best so far {best_text}", flush=True)


def _last_metric(trial, name):
    if trial.metrics.exists(name):
        value = trial.metrics.get_last_value(name)
        return None if value is None else float(value)
    return None


def _custom_gradient_registry():
    """TensorFlow's registry of graph-mode custom gradients, or `None`."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.framework import ops as tf_ops

        return tf_ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return None


def _release_custom_gradients(known):
    """Drops the custom gradients TensorFlow registered since `known`.

    Tracing a Keras train step registers `tf.custom_gradient` functions (from
    `all_reduce`) in a global registry, under new names each time; they hold
    the traced graph, so every trial would keep its train-step graph alive
    (about 8 MiB per trial for a small model). Once the trial's model is
    gone, nothing needs them.
    """
    registry = _custom_gradient_registry()
    if registry is None or known is None:
        return
    for name in [n for n in registry if n.startswith("CustomGradient-") and n not in known]:
        registry.pop(name, None)


class _TrialRecorderMixin:
    """Seeds each execution from its trial's values and records extra metrics.

    Mixed in before a keras-tuner `Tuner` subclass. Every execution of a
    trial calls `keras.utils.set_random_seed(trial_seed(values, execution,
    base_seed))` right before the model is built (after keras-tuner's
    `clear_session()`), so weights and shuffling do not depend on the trials
    run before. `run_trial` returns the objective's mean over executions
    plus `<objective>_std`, `num_params`, `epochs` and `seconds`, which the
    oracle saves in each `trial.json` (and receives over gRPC from workers).
    After each trial it drops the custom gradients TensorFlow registered
    while tracing it (see `_release_custom_gradients`), so that memory stays
    flat over many trials.
    """

    base_seed = 0
    show_progress = True

    def _mixin_state(self):
        if not hasattr(self, "_recorder"):
            self._recorder = {"execution": 0, "seed": None, "num_params": None, "ran": []}
            self.trial_rss_mib = []
        return self._recorder

    def run_trial(self, trial, *args, **kwargs):
        state = self._mixin_state()
        state["execution"], state["num_params"] = 0, None
        registry = _custom_gradient_registry()
        known = None if registry is None else set(registry)
        start = time.perf_counter()
        try:
            results = super().run_trial(trial, *args, **kwargs)
        finally:
            _release_custom_gradients(known)
        seconds = time.perf_counter() - start
        if not isinstance(results, list):
            results = [results]
        objective = self.oracle.objective
        tuner_utils.validate_trial_results(results, objective, "Tuner.run_trial()")
        per_execution = [tuner_utils.convert_to_metrics_dict(r, objective) for r in results]
        metrics = {
            key: float(value)
            for key, value in tuner_utils.average_metrics_dicts(per_execution).items()
        }
        if isinstance(objective, keras_tuner.Objective) and all(
            objective.name in m for m in per_execution
        ):
            scores = [float(m[objective.name]) for m in per_execution]
            metrics[f"{objective.name}_std"] = float(np.std(scores))
        if state["num_params"] is not None:
            metrics["num_params"] = float(state["num_params"])
        metrics["epochs"] = float(_epochs_trained(results, trial, kwargs))
        metrics["seconds"] = float(seconds)
        return metrics

    def _build_and_fit_model(self, trial, *args, **kwargs):
        state = self._mixin_state()
        state["seed"] = trial_seed(trial.hyperparameters.values, state["execution"], self.base_seed)
        state["execution"] += 1
        try:
            return super()._build_and_fit_model(trial, *args, **kwargs)
        finally:
            state["seed"] = None

    def _build_hypermodel(self, hp):
        state = self._mixin_state()
        if state["seed"] is not None:
            keras.utils.set_random_seed(state["seed"])
        model = super()._build_hypermodel(hp)
        if getattr(model, "built", False):
            state["num_params"] = int(model.count_params())
        return model

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # keras-tuner imports tensorboard for every trial; only do it when a
        # TensorBoard callback is there (tensorboard is an optional package).
        if any(c.__class__.__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)

    def search(self, *fit_args, **fit_kwargs):
        if dist_utils.is_chief_oracle():
            # keras-tuner's chief polls for the end every 20 s; this one
            # polls every 0.2 s and stops its server cleanly.
            self.save()
            _serve_oracle(self.oracle)
            return
        return super().search(*fit_args, **fit_kwargs)

    def on_search_begin(self):
        super().on_search_begin()
        # Saved now so that a search killed during its first trial resumes.
        self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self._is_worker() and self.show_progress:
            print(
                f"[{self.tuner_id}] trial {_trial_number(trial.trial_id)} started: "
                f"{describe_values(trial.hyperparameters.values)}",
                flush=True,
            )

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        state = self._mixin_state()
        state["ran"].append(trial.trial_id)
        self.trial_rss_mib.append(rss_mib())
        if self._is_worker() and self.show_progress:
            print(
                f"[{self.tuner_id}] trial {_trial_number(trial.trial_id)} finished: {trial.status}",
                flush=True,
            )

    @property
    def trials_run_here(self):
        """Ids of the trials this process ran, in order."""
        return list(self._mixin_state()["ran"])


def _epochs_trained(results, trial, fit_kwargs):
    if "tuner/epochs" in trial.hyperparameters.values:
        return trial.hyperparameters.values["tuner/epochs"]
    epochs = [
        max(r.epoch) + 1 for r in results if isinstance(r, keras.callbacks.History) and r.epoch
    ]
    if epochs:
        return max(epochs)
    return fit_kwargs.get("epochs", 1)


def _serve_oracle(oracle, poll_seconds=0.2):
    """Serves `oracle` to workers over gRPC until the search is over."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ValueError(
            f"The chief could not listen on {address}: is the port already in use? "
            "Choose another KERASTUNER_ORACLE_PORT (--oracle-port)."
        )
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll_seconds)
    finally:
        # The grace period lets the last "stop" answers reach the workers.
        server.stop(grace=2).wait()


class SeededRandomSearch(_TrialRecorderMixin, keras_tuner.RandomSearch):
    """`keras_tuner.RandomSearch` with seeded, recorded trials (see `make_tuner`)."""


class SeededHyperband(_TrialRecorderMixin, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` with seeded, recorded trials (see `make_tuner`)."""


class SeededBayesianOptimization(_TrialRecorderMixin, keras_tuner.Tuner):
    """Bayesian optimization with seeded trials that resumes reproducibly."""

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        max_trials=10,
        num_initial_points=None,
        alpha=1e-4,
        beta=2.6,
        seed=None,
        hyperparameters=None,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        oracle = _ResumableBayesianOptimizationOracle(
            objective=objective,
            max_trials=max_trials,
            num_initial_points=num_initial_points,
            alpha=alpha,
            beta=beta,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)


class SeededGridSearch(_TrialRecorderMixin, keras_tuner.Tuner):
    """Grid search with seeded trials that can be resumed (keras-tuner #1055)."""

    def __init__(
        self,
        hypermodel=None,
        objective=None,
        max_trials=None,
        seed=None,
        hyperparameters=None,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **kwargs,
    ):
        oracle = _ResumableGridSearchOracle(
            objective=objective,
            max_trials=max_trials,
            seed=seed,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)


_TUNER_CLASSES = {
    "random": SeededRandomSearch,
    "bayesian": SeededBayesianOptimization,
    "hyperband": SeededHyperband,
    "grid": SeededGridSearch,
}


def _count_grid(space):
    total = 1
    for hp in space:
        try:
            total *= len(list(hp.values))
        except (AttributeError, TypeError):
            return None
    return total


def expected_trials(tuner):
    """How many trials the search will run at most (`None` if unknown)."""
    oracle = tuner.oracle
    limit = getattr(oracle, "max_trials", None)
    total = None
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle):
        per_iteration = sum(
            oracle._get_size(bracket, round_num)
            for bracket in range(oracle._get_num_brackets())
            for round_num in range(oracle._get_num_rounds(bracket))
        )
        total = per_iteration * oracle.hyperband_iterations
    elif isinstance(oracle, gridsearch_module.GridSearchOracle):
        total = _count_grid(oracle.get_space().space)
    if total is None or (limit and limit < total):
        total = limit
    return total


def _is_worker_process():
    return dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()


def make_tuner(
    hypermodel,
    tuner="random",
    *,
    objective="val_accuracy",
    max_trials=10,
    epochs=None,
    hyperband_factor=3,
    executions_per_trial=1,
    seed=0,
    directory="nin_tuning",
    project_name="bottleneck_width",
    overwrite=False,
    distribution_strategy=None,
    show_progress=True,
    **tuner_kwargs,
):
    """Builds a keras-tuner tuner by name, with seeded trials and resume fixes.

    The tuners are keras-tuner's (`RandomSearch`, `BayesianOptimization`,
    `Hyperband`, `GridSearch`) with these changes:

    - each execution of a trial seeds Python, NumPy, TensorFlow and Keras
      from the trial's hyperparameter values (`trial_seed`) after
      keras-tuner's `clear_session()`, so results do not depend on the trials
      before it, and a search resumed after a crash ends with the same
      results as an uninterrupted one;
    - each trial records `<objective>_std` (spread over executions),
      `num_params`, `epochs` and `seconds` next to the objective;
    - grid search saves its position (keras-tuner 1.4.8 cannot resume it,
      keras-tuner issue #1055) and Bayesian optimization proposes the same
      values after a resume;
    - progress is one line per trial start and end ("Trial k of n ... best so
      far ...");
    - memory stays flat over many trials: besides keras-tuner's
      `clear_session()` before each trial, the train-step graphs that
      TensorFlow keeps in its registry of custom gradients are released
      after each trial (see `memory_profile`);
    - in distributed mode the chief notices the end of the search within a
      fraction of a second, and a worker never deletes the shared project
      (`overwrite` is ignored on workers).

    With `overwrite=False` (the default) an existing project in
    `directory/project_name` is resumed: finished trials are kept and the
    trial that was running is run again.

    `distribution_strategy` (for instance `tf.distribute.MirroredStrategy()`
    on a machine with several GPUs) is passed to keras-tuner, which builds
    and trains every model of the search in its scope.

    Args:
        hypermodel: a `keras_tuner.HyperModel` (e.g. `AllConvNetHyperModel`)
            or a function `hp -> compiled model`.
        tuner: `"random"`, `"bayesian"`, `"hyperband"` or `"grid"`. Defaults
            to `"random"`.
        objective: the metric to maximize or minimize. Defaults to
            `"val_accuracy"`.
        max_trials: int >= 1 or `None`, the most trials to run (for
            Hyperband, a cap on its own schedule; for grid, on the grid's
            size). Defaults to `10`.
        epochs: int >= 1, Hyperband's `max_epochs` (required for
            `"hyperband"`, ignored by the others: pass `epochs` to
            `search()`).
        hyperband_factor: int >= 2, Hyperband's reduction factor. Defaults to
            `3`.
        executions_per_trial: int >= 1, models trained per trial (the
            objective is their mean). Defaults to `1`.
        seed: int >= 0, the search's seed. Defaults to `0`.
        directory: where projects are kept. Defaults to `"nin_tuning"`.
        project_name: the project's folder name. Defaults to
            `"bottleneck_width"`.
        overwrite: bool, start afresh instead of resuming. Defaults to
            `False`.
        distribution_strategy: optional `tf.distribute.Strategy`.
        show_progress: bool, print one line per trial. Defaults to `True`.
        **tuner_kwargs: other arguments of the keras-tuner tuner (e.g.
            `num_initial_points` for `"bayesian"`, `max_model_size`).

    Returns:
        A `keras_tuner.Tuner`.

    Example:

    >>> tuner = make_tuner(AllConvNetHyperModel(), "random", max_trials=5,
    ...                    directory="/tmp/nin_tuning", overwrite=True)  # doctest: +SKIP
    >>> tuner.search(x_train, y_train, validation_data=(x_val, y_val),
    ...              epochs=3, verbose=0)  # doctest: +SKIP
    """
    if not isinstance(tuner, str) or tuner.lower() not in TUNERS:
        raise _invalid("tuner", "one of " + ", ".join(f'"{t}"' for t in TUNERS), tuner)
    tuner = tuner.lower()
    if max_trials is not None:
        check_positive_int("max_trials", max_trials)
    check_positive_int("executions_per_trial", executions_per_trial)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _invalid("seed", "an integer >= 0", seed)
    if tuner == "hyperband":
        if epochs is None:
            raise ValueError(
                'The "hyperband" tuner needs `epochs` (its `max_epochs`, the most '
                "epochs a model is trained for). Received: epochs=None"
            )
        check_positive_int("epochs", epochs)
        if (
            isinstance(hyperband_factor, bool)
            or not isinstance(hyperband_factor, int)
            or (hyperband_factor < 2)
        ):
            raise _invalid("hyperband_factor", "an integer >= 2", hyperband_factor)
    if not isinstance(overwrite, bool):
        raise _invalid("overwrite", "True or False", overwrite)
    if _is_worker_process():
        overwrite = False

    common = dict(
        hypermodel=hypermodel,
        objective=objective,
        # keras-tuner replaces a seed of 0 by a random one.
        seed=seed + 1,
        executions_per_trial=executions_per_trial,
        directory=str(directory),
        project_name=project_name,
        overwrite=overwrite,
        distribution_strategy=distribution_strategy,
        **tuner_kwargs,
    )
    if tuner == "hyperband":
        instance = SeededHyperband(max_epochs=epochs, factor=hyperband_factor, **common)
        instance.oracle.max_trials = max_trials
    else:
        instance = _TUNER_CLASSES[tuner](max_trials=max_trials, **common)
    instance.base_seed = seed
    instance.show_progress = show_progress
    if not _is_worker_process():
        oracle = instance.oracle
        display = _ProgressDisplay(oracle, total=expected_trials(instance), show=show_progress)
        display.set_state(oracle._display.get_state())
        oracle._display = display
        if show_progress:
            _print_resume_state(instance)
    return instance


def _print_resume_state(tuner):
    oracle = tuner.oracle
    if not oracle.trials:
        return
    done = [t for t in oracle.trials.values() if t.status != trial_module.TrialStatus.RUNNING]
    retry = sorted(set(oracle._retry_queue))
    text = f"Resuming the search in {tuner.project_dir}: {len(done)} finished trial(s) kept"
    if retry:
        text += ", re-running interrupted trial(s) " + ", ".join(
            str(_trial_number(t)) for t in retry
        )
    print(text + ".", flush=True)


# ----------------------------------------------------------------- results
def results_rows(tuner):
    """One dict per trial of a finished search, sorted by bottleneck width.

    Keys: `trial` (its number), the tuned hyperparameters, `parameters`,
    `<objective>` (mean over executions), `<objective>_std`, `epochs`,
    `seconds` and `status`. Values are `None` where a trial did not record
    them (a failed trial, a custom `run_trial`).

    Args:
        tuner: a tuner from `make_tuner` (not a worker's: a worker does not
            hold the trials).

    Returns:
        A list of dicts, one per trial.

    Example:

    >>> import tempfile
    >>> hypermodel = AllConvNetHyperModel(input_shape=(8, 8, 1), filters=(4,))
    >>> tuner = make_tuner(hypermodel, "random", directory=tempfile.mkdtemp(),
    ...                    show_progress=False)
    >>> results_rows(tuner)  # no trial has run yet
    []
    """
    oracle = tuner.oracle
    if not hasattr(oracle, "trials"):
        raise ValueError(
            "Received a worker's tuner, which does not hold the trials; read the "
            "results on the chief."
        )
    name = oracle.objective.name
    # keras-tuner's grid gives log-stepped Int values as floats (4.0).
    integers = {hp.name for hp in oracle.get_space().space if type(hp).__name__ == "Int"}
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        row = {"trial": _trial_number(trial_id)}
        for key, value in trial.hyperparameters.values.items():
            if not key.startswith("tuner/"):
                row[key] = int(value) if key in integers and value is not None else value
        params = _last_metric(trial, "num_params")
        row["parameters"] = None if params is None else int(params)
        completed = trial.status == trial_module.TrialStatus.COMPLETED
        row[name] = float(trial.score) if completed and trial.score is not None else None
        row[f"{name}_std"] = _last_metric(trial, f"{name}_std")
        epochs = _last_metric(trial, "epochs")
        row["epochs"] = None if epochs is None else int(epochs)
        seconds = _last_metric(trial, "seconds")
        row["seconds"] = None if seconds is None else round(seconds, 2)
        row["status"] = trial.status
        rows.append(row)
    rows.sort(key=lambda r: (r.get(WIDTH) is None, r.get(WIDTH) or 0, r["trial"]))
    return rows


def best_trial(oracle):
    """The best completed trial of `oracle`, or `None`.

    Unlike `oracle.get_best_trials()`, ties (common with small validation
    sets) are broken the same way whatever the order trials were loaded in:
    fewer parameters first, then the earlier trial.
    """
    sign = -1.0 if oracle.objective.direction == "max" else 1.0
    done = [
        t
        for t in oracle.trials.values()
        if t.status == trial_module.TrialStatus.COMPLETED
        and t.score is not None
        and not math.isnan(t.score)
    ]
    if not done:
        return None
    return min(
        done,
        key=lambda t: (
            sign * float(t.score),
            _last_metric(t, "num_params") or math.inf,
            str(t.trial_id),
        ),
    )


def best_row(tuner, rows=None):
    """The row (see `results_rows`) of the best completed trial, or `None`."""
    rows = results_rows(tuner) if rows is None else rows
    best = best_trial(tuner.oracle)
    if best is None:
        return None
    number = _trial_number(best.trial_id)
    return next(r for r in rows if r["trial"] == number)


def best_model(tuner):
    """The best trial's trained model, reloaded from its checkpoint.

    The trial is `best_trial(tuner.oracle)`. The model's optimizer is built,
    so that a saved copy reloads without warnings.
    """
    import warnings

    trial = best_trial(tuner.oracle)
    if trial is None:
        raise ValueError("Received a search with no completed trial; there is no best model.")
    with warnings.catch_warnings():
        # The checkpoint holds the optimizer's state, which a fresh model
        # (not yet trained) has no variables for.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = tuner.load_model(trial)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return model


def _columns(rows):
    keys = []
    for row in rows:
        for key in row:
            if key not in keys:
                keys.append(key)
    return keys


def format_results_table(rows, objective="val_accuracy", best=None):
    """Formats `results_rows` as a fixed-width text table.

    The best trial is marked with `*`. Columns: trial, the hyperparameters,
    parameters, the objective's mean and spread over executions, epochs and
    seconds.

    Args:
        rows: `results_rows(tuner)`.
        objective: the objective's name. Defaults to `"val_accuracy"`.
        best: optional best row (`best_row(tuner)`), marked with `*`.

    Returns:
        A string.

    Example:

    >>> rows = [
    ...     {"trial": 1, "bottleneck_width": 8, "parameters": 57_354,
    ...      "val_accuracy": 0.91, "val_accuracy_std": 0.01, "epochs": 3,
    ...      "seconds": 12.5, "status": "COMPLETED"},
    ...     {"trial": 2, "bottleneck_width": 128, "parameters": 65_354,
    ...      "val_accuracy": 0.95, "val_accuracy_std": 0.005, "epochs": 3,
    ...      "seconds": 14.0, "status": "COMPLETED"},
    ... ]
    >>> print(format_results_table(rows, best=rows[1]))
       trial  width  parameters  val_accuracy (mean +- std)  epochs  seconds
    -  -----  -----  ----------  --------------------------  ------  -------
           1      8      57,354            0.9100 +- 0.0100       3     12.5
    *      2    128      65,354            0.9500 +- 0.0050       3     14.0
    """
    if not rows:
        return "(no trials)"
    std_key = f"{objective}_std"
    hp_keys = [
        k
        for k in _columns(rows)
        if k not in ("trial", "parameters", objective, std_key, "epochs", "seconds", "status")
    ]
    headers = ["", "trial", *[("width" if k == WIDTH else k) for k in hp_keys]]
    headers += ["parameters", f"{objective} (mean +- std)", "epochs", "seconds"]
    best_number = best["trial"] if best else None

    def fmt(value, digits=4):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.{digits}g}"
        return str(value)

    lines = []
    for row in rows:
        if row[objective] is None:
            score = str(row["status"]).lower()
        else:
            std = row.get(std_key)
            score = f"{row[objective]:.4f}" + (f" +- {std:.4f}" if std is not None else "")
        lines.append(
            [
                "*" if row["trial"] == best_number else "",
                str(row["trial"]),
                *[fmt(row.get(k)) for k in hp_keys],
                f"{row['parameters']:,}" if row["parameters"] is not None else "-",
                score,
                fmt(row["epochs"]),
                f"{row['seconds']:.1f}" if row["seconds"] is not None else "-",
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def plot_results(rows, path, objective="val_accuracy", best=None):
    """Plots the objective against the bottleneck width, with parameter counts.

    Left axis: the objective's mean with its spread over executions as error
    bars, one point per completed trial, on a log-2 width axis. Right axis:
    the parameter count at each width. Written with matplotlib's Agg canvas
    (no display needed).

    Args:
        rows: `results_rows(tuner)`.
        path: the PNG file to write.
        objective: the objective's name. Defaults to `"val_accuracy"`.
        best: optional best row, marked with a star.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> rows = [
    ...     {"trial": 1, "bottleneck_width": 8, "parameters": 57_354,
    ...      "val_accuracy": 0.91, "val_accuracy_std": 0.01, "epochs": 3},
    ...     {"trial": 2, "bottleneck_width": 128, "parameters": 65_354,
    ...      "val_accuracy": 0.95, "val_accuracy_std": 0.005, "epochs": 3},
    ... ]
    >>> path = plot_results(rows, os.path.join(tempfile.mkdtemp(), "widths.png"),
    ...                     best=rows[1])
    >>> open(path, "rb").read(4)
    b'\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    done = [r for r in rows if r.get(objective) is not None and r.get(WIDTH) is not None]
    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    if done:
        by_epochs = sorted({r["epochs"] for r in done}, key=lambda e: (e is None, e or 0))
        for epochs in by_epochs:
            group = [r for r in done if r["epochs"] == epochs]
            axis.errorbar(
                [r[WIDTH] for r in group],
                [r[objective] for r in group],
                yerr=[r.get(f"{objective}_std") or 0.0 for r in group],
                fmt="o",
                capsize=3,
                label=(
                    f"{objective} ({epochs} epoch{'s' if epochs != 1 else ''})"
                    if epochs
                    else objective
                ),
            )
        if best is not None and best.get(WIDTH) is not None:
            axis.plot(
                [best[WIDTH]],
                [best[objective]],
                marker="*",
                markersize=16,
                color="gold",
                markeredgecolor="black",
                linestyle="none",
                label=f"best: width {best[WIDTH]}",
            )
        params = {}
        for r in done:
            if r.get("parameters") is not None:
                params[r[WIDTH]] = r["parameters"]
        widths = sorted({r[WIDTH] for r in done})
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_locator(FixedLocator(widths))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticks(widths, [str(w) for w in widths])
        handles, labels = axis.get_legend_handles_labels()
        if params:
            twin = axis.twinx()
            xs = sorted(params)
            (line,) = twin.plot(
                xs, [params[x] for x in xs], "s--", color="gray", alpha=0.7, label="parameters"
            )
            twin.set_ylabel("parameters")
            twin.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
            handles.append(line)
            labels.append("parameters")
        axis.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=min(len(handles), 4),
            fontsize="small",
            frameon=False,
        )
    else:
        axis.text(0.5, 0.5, "no completed trial", ha="center", va="center")
    axis.set_xlabel("bottleneck width (log scale)")
    axis.set_ylabel(f"{objective} (mean +- std over executions)")
    axis.set_title("Bottleneck width search")
    axis.grid(True, alpha=0.3)
    figure.savefig(path, bbox_inches="tight")
    return path


def write_results(rows, output_dir, objective="val_accuracy", best=None, settings=None):
    """Writes `results.csv`, `results.json` and `results.png` in `output_dir`.

    Args:
        rows: `results_rows(tuner)`.
        output_dir: the folder to write to (created if needed).
        objective: the objective's name. Defaults to `"val_accuracy"`.
        best: optional best row, also saved in the JSON file.
        settings: optional dict saved in the JSON file (e.g. the command
            line's settings).

    Returns:
        A dict `{"csv": path, "json": path, "png": path}`.

    Example:

    >>> import tempfile
    >>> rows = [{"trial": 1, "bottleneck_width": 8, "parameters": 57_354,
    ...          "val_accuracy": 0.91, "val_accuracy_std": 0.0, "epochs": 3,
    ...          "seconds": 12.5, "status": "COMPLETED"}]
    >>> paths = write_results(rows, tempfile.mkdtemp(), best=rows[0])
    >>> print(open(paths["csv"]).read().splitlines()[0])
    trial,bottleneck_width,parameters,val_accuracy,val_accuracy_std,epochs,seconds,status
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "csv": os.path.join(output_dir, "results.csv"),
        "json": os.path.join(output_dir, "results.json"),
        "png": os.path.join(output_dir, "results.png"),
    }
    columns = _columns(rows)
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    payload = {"objective": objective, "best": best, "trials": rows, "settings": settings or {}}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, default=str)
        handle.write("\n")
    plot_results(rows, paths["png"], objective=objective, best=best)
    return paths


# ---------------------------------------------------------- one-call API
@dataclasses.dataclass
class SearchResult:
    """What `search_bottleneck_width` returns.

    Attributes:
        tuner: the keras-tuner tuner (resumable with the same arguments).
        rows: `results_rows(tuner)`, one dict per trial (empty on a worker).
        best: the best row, or `None` (none completed, or on a worker).
        trials_run_here: ids of the trials this process ran.

    Example:

    >>> result = SearchResult(tuner=None, rows=[], best={"bottleneck_width": 64},
    ...                       trials_run_here=[])
    >>> result.best_width
    64
    """

    tuner: object
    rows: list
    best: dict | None
    trials_run_here: list

    @property
    def best_width(self):
        """The best trial's bottleneck width, or `None`."""
        return None if self.best is None else self.best.get(WIDTH)

    def best_model(self):
        """The best trial's trained model (see `best_model`)."""
        return best_model(self.tuner)


def search_bottleneck_width(
    x,
    y,
    validation_data,
    *,
    hypermodel=None,
    tuner="random",
    epochs=3,
    batch_size=32,
    max_trials=10,
    executions_per_trial=1,
    seed=0,
    directory="nin_tuning",
    project_name="bottleneck_width",
    overwrite=False,
    distribution_strategy=None,
    callbacks=None,
    show_progress=True,
    tuner_kwargs=None,
    **hypermodel_kwargs,
):
    """Searches the head's bottleneck width on in-memory arrays.

    Builds an `AllConvNetHyperModel` (unless `hypermodel` is given) and a
    tuner with `make_tuner`, runs `tuner.search` and collects the results.
    Called again with the same arguments it resumes (finished trials are
    kept); with `overwrite=True` it starts afresh.

    Args:
        x: training images, `(N, H, W, C)` floats.
        y: integer training labels, `(N,)`.
        validation_data: `(x_val, y_val)`, what trials are scored on.
        hypermodel: optional `keras_tuner.HyperModel`; by default an
            `AllConvNetHyperModel` with `input_shape=x.shape[1:]`,
            `num_classes` inferred from the labels and `**hypermodel_kwargs`
            (for instance `min_width`, `max_width`, `filters`).
        tuner: `"random"`, `"bayesian"`, `"hyperband"` or `"grid"`. Defaults
            to `"random"`.
        epochs: int >= 1, epochs per trial (Hyperband's `max_epochs`).
            Defaults to `3`.
        batch_size: int >= 1. Defaults to `32`.
        max_trials: int >= 1 or `None`. Defaults to `10`.
        executions_per_trial: int >= 1. Defaults to `1`.
        seed: int >= 0. Defaults to `0`.
        directory: where projects are kept. Defaults to `"nin_tuning"`.
        project_name: the project's folder. Defaults to `"bottleneck_width"`.
        overwrite: bool, start afresh. Defaults to `False`.
        distribution_strategy: optional `tf.distribute.Strategy`, e.g.
            `tf.distribute.MirroredStrategy()` on a machine with several
            GPUs.
        callbacks: optional list of Keras callbacks for every fit.
        show_progress: bool. Defaults to `True`.
        tuner_kwargs: optional dict of extra `make_tuner` arguments.
        **hypermodel_kwargs: `AllConvNetHyperModel` arguments.

    Returns:
        A `SearchResult`.

    Example:

    >>> import numpy as np
    >>> x = np.random.rand(64, 8, 8, 1).astype("float32")
    >>> y = np.arange(64) % 2
    >>> result = search_bottleneck_width(
    ...     x, y, (x, y), max_trials=2, epochs=1, min_width=2, max_width=8,
    ...     filters=(4,), directory="/tmp/nin_doc_tuning", overwrite=True,
    ...     show_progress=False)  # doctest: +SKIP
    >>> result.best_width in (2, 4, 8)  # doctest: +SKIP
    True
    """
    x = np.asarray(x)
    y = np.asarray(y)
    try:
        x_val, y_val = validation_data
    except (TypeError, ValueError):
        raise _invalid("validation_data", "a pair (x_val, y_val)", type(validation_data)) from None
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            "Received invalid training data, expected images of shape (N, H, W, C) "
            f"and N labels. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if hypermodel is None:
        hypermodel_kwargs.setdefault("input_shape", tuple(int(d) for d in x.shape[1:]))
        hypermodel_kwargs.setdefault(
            "num_classes", int(max(np.max(y), np.max(np.asarray(y_val)))) + 1
        )
        hypermodel = AllConvNetHyperModel(**hypermodel_kwargs)
    elif hypermodel_kwargs:
        raise ValueError(
            "Received both a `hypermodel` and hypermodel arguments "
            f"{sorted(hypermodel_kwargs)}; pass the arguments to the hypermodel instead."
        )
    instance = make_tuner(
        hypermodel,
        tuner,
        max_trials=max_trials,
        epochs=epochs,
        executions_per_trial=executions_per_trial,
        seed=seed,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        distribution_strategy=distribution_strategy,
        show_progress=show_progress,
        **(tuner_kwargs or {}),
    )
    instance.search(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks or []),
        verbose=0,
    )
    if _is_worker_process():
        return SearchResult(instance, [], None, instance.trials_run_here)
    rows = results_rows(instance)
    return SearchResult(instance, rows, best_row(instance, rows), instance.trials_run_here)


# ----------------------------------------------------------------- memory
def rss_mib():
    """This process's resident memory in MiB (current, from /proc on Linux).

    Falls back to the peak (`resource.getrusage`) where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib():
    """This process's peak resident memory in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def memory_profile(num_trials=20, *, tuner="random", image_size=16, num_images=64, seed=0):
    """Runs a search of many tiny trials and returns memory after each one.

    For checking that memory stays flat over a long search: keras-tuner
    clears the Keras session before each trial, so resident memory should
    stop growing after the first few trials.

    Args:
        num_trials: int >= 1. Defaults to `20`.
        tuner: the tuner's name. Defaults to `"random"`.
        image_size: side of the random images. Defaults to `16`.
        num_images: how many random images. Defaults to `64`.
        seed: int >= 0. Defaults to `0`.

    Returns:
        A dict: `rss_mib` (list, resident MiB after each trial), `start_mib`,
        `peak_mib` (the process's peak), `growth_mib` (median RSS of the last
        few trials minus that of the first few after two warm-up trials),
        `trials` and `seconds`.

    Example:

    >>> report = memory_profile(20)  # doctest: +SKIP
    >>> report["growth_mib"] < 20  # doctest: +SKIP
    True
    """
    import tempfile

    check_positive_int("num_trials", num_trials)
    rng = np.random.default_rng(seed)
    x = rng.random((num_images, image_size, image_size, 1), dtype=np.float32)
    y = rng.integers(0, 10, num_images)
    start_mib = rss_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        hypermodel = AllConvNetHyperModel(
            num_classes=10,
            input_shape=(image_size, image_size, 1),
            min_width=2,
            max_width=4096,
            width_step=None,
            filters=(4, 8),
        )
        instance = make_tuner(
            hypermodel,
            tuner,
            max_trials=num_trials,
            # Hyperband takes `epochs` as its max_epochs: with 1 it would
            # schedule a single trial, so give it room for many brackets.
            epochs=9 if tuner == "hyperband" else 1,
            seed=seed,
            directory=directory,
            overwrite=True,
            show_progress=False,
        )
        instance.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
        rss = list(instance.trial_rss_mib)
    # Medians of a few trials, after the first two (warm-up), and at the end.
    window = max(1, min(5, len(rss) // 4))
    early = rss[2 : 2 + window] if len(rss) >= 2 + 2 * window else rss[:window]
    return {
        "trials": len(rss),
        "rss_mib": rss,
        "start_mib": start_mib,
        "peak_mib": peak_rss_mib(),
        "growth_mib": float(np.median(rss[-window:]) - np.median(early)),
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------ command line
def _positive_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _fraction(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _int_list(text):
    import argparse

    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 32,64,64, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1 such as 32,64,64, got {text!r}")
    return values


def add_tune_arguments(parser):
    """Adds the `nin-layers tune` arguments to an `argparse` parser."""
    parser.description = (
        "Search the width of the head's 1x1 bottleneck with Keras Tuner. The search "
        "resumes by default: run the same command again after an interruption. "
        "For a distributed search, run it in several processes with --tuner-id "
        "(chief, worker0, ...), --oracle-ip and --oracle-port, or the environment "
        "variables KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT."
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="mnist_sample",
        help="dataset name (mnist, fashion_mnist, cifar10, mnist_sample, digits), a "
        ".npz in keras layout or a folder of class folders (default: mnist_sample)",
    )
    data.add_argument(
        "--validation-split",
        type=_fraction,
        default=0.2,
        help="fraction of the training images used to score trials (default: 0.2)",
    )
    data.add_argument(
        "--limit", type=_positive_int, default=None, help="use at most this many training images"
    )
    search = parser.add_argument_group("search")
    search.add_argument(
        "--tuner", choices=TUNERS, default="hyperband", help="search algorithm (default: hyperband)"
    )
    search.add_argument(
        "--min-width", type=_positive_int, default=8, help="smallest width (default: 8)"
    )
    search.add_argument(
        "--max-width", type=_positive_int, default=1024, help="largest width (default: 1024)"
    )
    search.add_argument(
        "--width-step",
        type=_non_negative_int,
        default=2,
        help="factor between candidate widths (default: 2, powers of two times "
        "--min-width); 0 for any integer on a log scale",
    )
    search.add_argument(
        "--max-trials",
        type=_positive_int,
        default=10,
        help="most trials to run (for hyperband, a cap on its schedule) (default: 10)",
    )
    search.add_argument(
        "--epochs",
        type=_positive_int,
        default=3,
        help="epochs per trial (hyperband: the most epochs of a model) (default: 3)",
    )
    search.add_argument(
        "--executions-per-trial",
        type=_positive_int,
        default=1,
        help="models trained per trial; the table shows their mean and spread (default: 1)",
    )
    search.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    search.add_argument(
        "--hyperband-factor", type=_positive_int, default=3, help="hyperband's factor (default: 3)"
    )
    search.add_argument(
        "--tune-learning-rate", action="store_true", help="also tune Adam's learning rate"
    )
    search.add_argument(
        "--tune-dropout", action="store_true", help="also tune the head's dropout rate"
    )
    search.add_argument(
        "--filters",
        type=_int_list,
        default=(32, 64, 64),
        help="widths of the conv blocks, comma-separated (default: 32,64,64)",
    )
    search.add_argument("--seed", type=_non_negative_int, default=0, help="(default: 0)")
    files = parser.add_argument_group("files")
    files.add_argument(
        "--directory",
        default="nin_tuning",
        help="where the search is kept, to resume it (default: nin_tuning)",
    )
    files.add_argument(
        "--project-name", default="bottleneck_width", help="(default: bottleneck_width)"
    )
    files.add_argument(
        "--output-dir",
        default=None,
        help="where results.csv/.json/.png and best_model.keras go (default: the "
        "project folder, DIRECTORY/PROJECT_NAME)",
    )
    files.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    distributed = parser.add_argument_group("distributed (keras-tuner chief/worker)")
    distributed.add_argument(
        "--tuner-id",
        default=None,
        help='this process\'s id, "chief" for the chief (sets KERASTUNER_TUNER_ID)',
    )
    distributed.add_argument(
        "--oracle-ip", default=None, help="the chief's address (sets KERASTUNER_ORACLE_IP)"
    )
    distributed.add_argument(
        "--oracle-port",
        type=_positive_int,
        default=None,
        help="the chief's port (sets KERASTUNER_ORACLE_PORT)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the table and result")
    return parser


_DISTRIBUTED_ENV = {
    "tuner_id": "KERASTUNER_TUNER_ID",
    "oracle_ip": "KERASTUNER_ORACLE_IP",
    "oracle_port": "KERASTUNER_ORACLE_PORT",
}


def _apply_distributed_flags(args):
    for attribute, variable in _DISTRIBUTED_ENV.items():
        value = getattr(args, attribute, None)
        if value is not None:
            os.environ[variable] = str(value)
    present = [v for v in _DISTRIBUTED_ENV.values() if os.environ.get(v)]
    if ("KERASTUNER_ORACLE_IP" in present or "KERASTUNER_ORACLE_PORT" in present) and len(
        present
    ) < 3:
        missing = [v for v in _DISTRIBUTED_ENV.values() if v not in present]
        raise ValueError(
            "a distributed search needs a tuner id, the chief's address and its port; "
            f"missing {', '.join(missing)} (flags --tuner-id, --oracle-ip, --oracle-port)"
        )


def _settings(args):
    return {
        "dataset": str(args.dataset),
        "validation_split": args.validation_split,
        "limit": args.limit,
        "tuner": args.tuner,
        "min_width": args.min_width,
        "max_width": args.max_width,
        "width_step": args.width_step,
        "max_trials": args.max_trials,
        "epochs": args.epochs,
        "executions_per_trial": args.executions_per_trial,
        "batch_size": args.batch_size,
        "hyperband_factor": args.hyperband_factor,
        "tune_learning_rate": args.tune_learning_rate,
        "tune_dropout": args.tune_dropout,
        "filters": list(args.filters),
        "seed": args.seed,
    }


_SETTINGS_FILE = "nin_layers_tune.json"


def _check_settings(project_dir, settings, overwrite):
    """Refuses to resume a project that was started with other settings."""
    path = os.path.join(project_dir, _SETTINGS_FILE)
    if overwrite or not os.path.exists(path):
        return path
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(
            f"the search in {project_dir} was started with other settings ({details}). "
            "Run it with the same settings to resume it, or pass --overwrite to start "
            "afresh, or choose another --directory or --project-name."
        )
    return path


def _write_settings(path, settings):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2)
    os.replace(temporary, path)


class _RetracingFilter:
    """Drops TensorFlow's "triggered tf.function retracing" warnings.

    Every trial builds a new model after `clear_session()`, so every trial
    traces its functions anew; the warning says nothing useful here.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_retracing_warnings():
    import logging

    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingFilter) for f in logger.filters):
        logger.addFilter(_RetracingFilter())


def run_tune_command(args):
    """Runs `nin-layers tune` from parsed arguments; returns the exit code."""
    saved = {v: os.environ.get(v) for v in _DISTRIBUTED_ENV.values()}
    try:
        return _run_tune_command(args)
    finally:
        # The distributed flags set environment variables (which keras-tuner
        # reads); put them back for callers that run the command in-process.
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def _run_tune_command(args):
    _apply_distributed_flags(args)
    worker = _is_worker_process()
    show = not args.quiet
    width_step = args.width_step or None
    # Checked before the data is loaded, so that mistakes fail fast.
    hypermodel_args = dict(
        min_width=args.min_width,
        max_width=args.max_width,
        width_step=width_step,
        tune_learning_rate=args.tune_learning_rate,
        tune_dropout=args.tune_dropout,
        filters=args.filters,
    )
    AllConvNetHyperModel(**hypermodel_args)
    settings = _settings(args)
    project_dir = os.path.join(str(args.directory), args.project_name)
    settings_path = _check_settings(project_dir, settings, args.overwrite and not worker)

    from nin_layers.data import load_dataset

    dataset = load_dataset(
        args.dataset, validation_split=args.validation_split, seed=args.seed, limit=args.limit
    )
    if dataset.x_val is None or len(dataset.x_val) == 0:
        raise ValueError(
            f"the dataset {dataset.name!r} has no validation images; use --validation-split"
        )
    if show:
        print(
            f"Searching the bottleneck width of AllConvNet on {dataset.name}: "
            f"{len(dataset.x_train)} training and {len(dataset.x_val)} validation images "
            f"{tuple(dataset.input_shape)}, {dataset.num_classes} classes; "
            f"tuner {args.tuner}, widths {args.min_width} to {args.max_width}.",
            flush=True,
        )
    hypermodel = AllConvNetHyperModel(
        num_classes=dataset.num_classes, input_shape=tuple(dataset.input_shape), **hypermodel_args
    )
    if not worker:
        _write_settings(settings_path, settings)
    _quiet_retracing_warnings()
    try:
        result = search_bottleneck_width(
            dataset.x_train,
            dataset.y_train,
            (dataset.x_val, dataset.y_val),
            hypermodel=hypermodel,
            tuner=args.tuner,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_trials=args.max_trials,
            executions_per_trial=args.executions_per_trial,
            seed=args.seed,
            directory=args.directory,
            project_name=args.project_name,
            overwrite=args.overwrite and not worker,
            show_progress=show,
            tuner_kwargs={"hyperband_factor": args.hyperband_factor},
        )
    except RuntimeError as error:
        if "consecutive failures" in str(error):
            # keras-tuner stops after 3 failed trials in a row.
            last = str(error).strip().splitlines()
            raise ValueError(
                "the search stopped after 3 failed trials in a row; last error: "
                + (last[-1] if last else "unknown")
            ) from None
        raise
    if worker:
        ran = ", ".join(str(_trial_number(t)) for t in result.trials_run_here) or "none"
        print(
            f"Worker {os.environ['KERASTUNER_TUNER_ID']} finished; it ran trial(s) {ran}. "
            "The chief prints the results.",
            flush=True,
        )
        return 0
    if result.best is None:
        print(format_results_table(result.rows), flush=True)
        raise ValueError(
            "no trial completed; see the messages above (out of memory? a width too large?)"
        )
    output_dir = args.output_dir or project_dir
    print()
    print(format_results_table(result.rows, "val_accuracy", result.best))
    paths = write_results(result.rows, output_dir, "val_accuracy", result.best, settings=settings)
    model_path = os.path.join(output_dir, "best_model.keras")
    try:
        result.best_model().save(model_path)
    except (OSError, FileNotFoundError, ValueError) as error:
        model_path = None
        print(f"Could not save the best model ({error}).", file=sys.stderr)
    print()
    print(f"Results: {paths['csv']}, {paths['json']}, {paths['png']}")
    if model_path:
        print(f"Best model: {model_path}")
    best = result.best
    print(
        f"Best val_accuracy {best['val_accuracy']:.4f} with {best['parameters']:,} parameters."
        if best["parameters"] is not None
        else f"Best val_accuracy {best['val_accuracy']:.4f}."
    )
    print(f"Best bottleneck width: {best[WIDTH]}", flush=True)
    return 0
