"""Training and evaluation of `AllConvNet` models, from Python or the command line.

`train(dataset="mnist")` loads and checks the data, picks the numeric
precision, trains with a fast `tf.data` recipe, evaluates on the test split,
and (with `out_dir`) saves the model, its history and PNG reports. An
interrupted run resumes from its last completed epoch when it is started
again with the same settings and output folder.

The default recipe (measured on full MNIST, 2 CPU cores with AMX): batches of
256 (128 for small datasets, see `default_batch_size`) from a `tf.data`
pipeline held in memory, each training image moved by up to 2 pixels (on
28x28 images, see `default_random_shift`),
Adam with one epoch of linear warm-up to a peak learning rate of 8e-3 and
cosine decay to zero, mixed bfloat16 where the CPU supports it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np

from nin_layers import reports
from nin_layers.data import Dataset, load_dataset, make_tf_dataset

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
HEADS = ("reshape", "gap")
DEFAULT_BATCH_SIZE = 256
SMALL_DATA_BATCH_SIZE = 128
MIN_STEPS_PER_EPOCH = 100
DEFAULT_LEARNING_RATE = 8e-3
SHIFT_FRACTION = 14  # `default_random_shift`: one pixel per 14 of the image side
# Test hook: after this many completed (and backed-up) epochs the run prints
# a marker line and waits, so a test can kill it at a known point.
PAUSE_ENV = "NIN_LAYERS_PAUSE_AFTER_EPOCH"
PAUSE_MARKER = "nin-layers: paused after epoch"


# --------------------------------------------------------------- precision
def _cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags listed in `path` (empty where there is none)."""
    try:
        with open(path) as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision="auto"):
    """Returns the Keras dtype policy name to train with.

    `"auto"` picks `"mixed_float16"` when TensorFlow sees a GPU,
    `"mixed_bfloat16"` on a CPU with bfloat16 instructions (the
    `avx512_bf16` or `amx_bf16` flag in `/proc/cpuinfo`) and `"float32"`
    otherwise. Other values are returned as given.

    Args:
        precision: one of `"auto"`, `"float32"`, `"mixed_bfloat16"`,
            `"mixed_float16"`. Defaults to `"auto"`.

    Example:

    >>> from nin_layers.training import resolve_precision
    >>> resolve_precision("float32")
    'float32'
    >>> resolve_precision() in ("float32", "mixed_bfloat16", "mixed_float16")
    True
    """
    if precision not in PRECISIONS:
        raise ValueError(
            "Received an invalid value for argument `precision`, expected one of "
            f"{', '.join(repr(p) for p in PRECISIONS)}. Received: precision={precision!r}"
        )
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"


# --------------------------------------------------------------- callbacks
def _callbacks():
    import keras

    class EpochCounter(keras.callbacks.Callback):
        """Writes the current epoch into a `tf.Variable` read by the data pipeline."""

        def __init__(self, variable):
            super().__init__()
            self.variable = variable

        def on_epoch_begin(self, epoch, logs=None):
            self.variable.assign(epoch)

    class ResumableBackup(keras.callbacks.BackupAndRestore):
        """`BackupAndRestore` with atomic backups that also keep the history.

        At the end of each epoch the weights (and optimizer state) go to a
        new file, then `state.json` (the epoch, the history so far and the
        run settings) is replaced atomically, then older weight files are
        removed: a kill at any moment leaves a consistent backup. A backup
        made with other settings is discarded.
        """

        def __init__(self, backup_dir, settings, verbose=True):
            super().__init__(backup_dir, delete_checkpoint=False)
            self.settings = settings
            self.verbose = verbose
            self.history = {}
            self.resumed_from = 0
            self._state_path = os.path.join(backup_dir, "state.json")

        def _load_model(self):
            if not os.path.exists(self._state_path):
                return
            with open(self._state_path) as file:
                state = json.load(file)
            if state.get("settings") != self.settings:
                if self.verbose:
                    print(
                        f"Found an interrupted run in {self.backup_dir} with other "
                        "settings; starting over.",
                        flush=True,
                    )
                shutil.rmtree(self.backup_dir, ignore_errors=True)
                return
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
            self.model._initial_epoch = state["epoch"]
            self.history = {k: list(v) for k, v in state["history"].items()}
            self.resumed_from = state["epoch"]
            self._current_epoch = state["epoch"]
            if self.verbose:
                print(
                    f"Resuming from the backup in {self.backup_dir}: "
                    f"{state['epoch']} epoch(s) already done.",
                    flush=True,
                )

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            super().on_epoch_end(epoch, logs)

        def _save_model(self):
            os.makedirs(self.backup_dir, exist_ok=True)
            weights = f"epoch-{self._current_epoch:04d}.weights.h5"
            path = os.path.join(self.backup_dir, weights)
            with reports.atomic_output(path) as tmp:
                self.model.save_weights(tmp)
            state = {
                "epoch": self._current_epoch,
                "weights": weights,
                "history": self.history,
                "settings": self.settings,
            }
            reports.write_json(state, self._state_path)
            for name in os.listdir(self.backup_dir):
                if name.endswith(".weights.h5") and name != weights:
                    os.remove(os.path.join(self.backup_dir, name))

    class PauseAfterEpoch(keras.callbacks.Callback):
        """Test hook: prints a marker and sleeps after epoch `count`."""

        def __init__(self, count):
            super().__init__()
            self.count = count

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == self.count:
                print(f"{PAUSE_MARKER} {self.count}", flush=True)
                time.sleep(3600)

    return EpochCounter, ResumableBackup, PauseAfterEpoch


# ------------------------------------------------------------------ result
@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained `keras.Model`.
        history: dict of per-epoch lists (`loss`, `accuracy`, `val_*`), the
            whole run even when it was resumed.
        metrics: dict with `test_accuracy`, `test_loss`, `per_class_accuracy`,
            `wall_time_s`, `train_time_s`, `images_per_second`, `precision`,
            `epochs`, `batch_size` and `dataset`.
        dataset: the `Dataset` trained on.
        out_dir: the output folder, or `None`.

    Example:

    >>> from nin_layers import train
    >>> result = train("digits", epochs=1, limit=64, verbose=0)
    >>> result.summary_line().startswith("test accuracy")
    True
    """

    model: object
    history: dict
    metrics: dict
    dataset: Dataset
    out_dir: str | None = None

    def summary_line(self):
        """One line: test accuracy, test loss, wall time, images/s, precision."""
        m = self.metrics
        return (
            f"test accuracy {m['test_accuracy']:.4f} | test loss {m['test_loss']:.4f} | "
            f"wall time {m['wall_time_s']:.1f} s | {m['images_per_second']:,.0f} images/s | "
            f"precision {m['precision']}"
        )


def default_batch_size(train_images):
    """The batch size `batch_size="auto"` picks for a training split.

    256 when that still gives at least 100 steps per epoch, else 128. Measured
    on 2 CPU cores (bfloat16, AMX): batches of 256 train full MNIST about 20%
    faster per image than 128 at the same test accuracy, while on the
    4,000-image `mnist_sample` they cost a point of accuracy (96.8% against
    97.8% after 10 epochs), having half as many steps.

    Args:
        train_images: int, the number of training images.

    Returns:
        An int, 256 or 128.

    Example:

    >>> from nin_layers.training import default_batch_size
    >>> default_batch_size(60_000), default_batch_size(4_000)
    (256, 128)
    """
    if train_images >= DEFAULT_BATCH_SIZE * MIN_STEPS_PER_EPOCH:
        return DEFAULT_BATCH_SIZE
    return SMALL_DATA_BATCH_SIZE


def default_random_shift(image_shape):
    """The largest random shift in pixels that `random_shift="auto"` picks.

    One pixel per 14 of the shorter image side, rounded down: 2 on 28x28
    MNIST, 2 on 32x32 CIFAR-10, none on the 8x8 `digits`. Measured (10
    epochs, reshape head, 2 seeds): on full MNIST 2 pixels lift the test
    accuracy from 99.08% to 99.33% (without them the head overfits); on the
    8x8 digits any shift hurts (97.5-97.8% with none, 96.1-96.4% with 1,
    92.2-94.2% with 2).

    Args:
        image_shape: `(height, width)` or `(height, width, channels)`.

    Returns:
        An int >= 0.

    Example:

    >>> from nin_layers.training import default_random_shift
    >>> default_random_shift((28, 28, 1)), default_random_shift((8, 8, 1))
    (2, 0)
    """
    return min(image_shape[0], image_shape[1]) // SHIFT_FRACTION


# -------------------------------------------------------------- evaluation
def evaluate(model, x, y, batch_size=DEFAULT_BATCH_SIZE, num_classes=None):
    """Test accuracy, loss, per-class accuracy and confusion matrix of a model.

    Args:
        model: a `keras.Model` that outputs class probabilities (logits are
            turned into probabilities with a softmax).
        x: images `(N, H, W, C)`.
        y: int labels `(N,)`.
        batch_size: int. Defaults to `256`.
        num_classes: int; defaults to the model's output width.

    Returns:
        A dict with `accuracy`, `loss` (sparse categorical cross-entropy),
        `per_class_accuracy` (list, `None` for classes absent from `y`),
        `confusion_matrix` (nested list) and `probabilities` (array).

    Example:

    >>> import numpy as np
    >>> from nin_layers import AllConvNet
    >>> from nin_layers.training import evaluate
    >>> model = AllConvNet(input_shape=(8, 8, 1))
    >>> result = evaluate(model, np.zeros((4, 8, 8, 1)), np.array([0, 1, 2, 3]))
    >>> 0.0 <= result["accuracy"] <= 1.0
    True
    """
    probabilities = np.asarray(
        model.predict(make_tf_dataset(x, y, batch_size), verbose=0), dtype="float64"
    )
    if probabilities.ndim != 2:
        raise ValueError(
            f"evaluate() needs a model with output (batch, num_classes). "
            f"Received output shape {probabilities.shape}"
        )
    num_classes = num_classes or probabilities.shape[1]
    sums = probabilities.sum(axis=1)
    if (probabilities < 0).any() or not np.allclose(sums, 1.0, atol=1e-3):
        shifted = np.exp(probabilities - probabilities.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    y = np.asarray(y).astype("int64")
    epsilon = 1e-7
    picked = np.clip(probabilities[np.arange(len(y)), y], epsilon, 1 - epsilon)
    predicted = probabilities.argmax(axis=1)
    matrix = reports.confusion_matrix(y, predicted, num_classes)
    totals = matrix.sum(axis=1)
    per_class = [float(matrix[c, c] / totals[c]) if totals[c] else None for c in range(num_classes)]
    return {
        "accuracy": float((predicted == y).mean()),
        "loss": float(-np.log(picked).mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "probabilities": probabilities,
    }


# ------------------------------------------------------------------- train
def _learning_rate_schedule(peak, steps_per_epoch, epochs):
    import keras

    total = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, max(total // 10, 1)) if epochs > 1 else 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10 if warmup else peak,
        decay_steps=max(total - warmup, 1),
        alpha=0.0,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def compile_model(model, steps_per_epoch, epochs, learning_rate=DEFAULT_LEARNING_RATE):
    """Compiles `model` with the default recipe's optimizer, loss and metric.

    Adam with a linear warm-up over the first epoch (from a tenth of
    `learning_rate`) then cosine decay to zero at the end of `epochs`;
    sparse categorical cross-entropy; accuracy.

    Args:
        model: a `keras.Model` that outputs class probabilities.
        steps_per_epoch: int, batches per epoch.
        epochs: int, the planned number of epochs.
        learning_rate: float, the peak learning rate. Defaults to `8e-3`.

    Returns:
        `model`, compiled.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(
            _learning_rate_schedule(float(learning_rate), steps_per_epoch, epochs)
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_model(dataset, head="reshape", bottleneck_width=128, precision="float32"):
    """Builds the `AllConvNet` for a `Dataset` under a dtype policy."""
    import keras

    from nin_layers.models import AllConvNet

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return AllConvNet(
            num_classes=dataset.num_classes,
            input_shape=dataset.input_shape,
            head_mode=head,
            bottleneck_width=bottleneck_width,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def _check_int(name, value, minimum=1, expected=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = expected or f"an integer >= {minimum}"
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected {expected}. "
            f"Received: {name}={value!r}"
        )
    return value


@contextlib.contextmanager
def _deterministic_ops(enabled):
    """Turns on TensorFlow's op determinism while the block runs (if `enabled`).

    Same seed, same metrics in float32 (measured: no slowdown on CPU). The
    previous setting is restored afterwards, since op determinism changes the
    ops of every other model in the process.
    """
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_config.disable_op_determinism()


def train(
    dataset="mnist",
    head="reshape",
    bottleneck_width=128,
    epochs=10,
    batch_size="auto",
    learning_rate=DEFAULT_LEARNING_RATE,
    random_shift="auto",
    precision="auto",
    out_dir=None,
    seed=0,
    limit=None,
    validation_split=0.0,
    tensorboard=False,
    reports_images=12,
    callbacks=None,
    verbose="auto",
):
    """Trains an `AllConvNet` on a dataset and evaluates it on the test split.

    The recipe: images held in memory as a `tf.data` pipeline (each epoch's
    order drawn from `seed` and the epoch number, batches prefetched), Adam
    with a linear warm-up (the first epoch) to `learning_rate` then cosine
    decay to zero, and the precision from `resolve_precision(precision)`.
    With `out_dir`, the run is backed up after every epoch and resumes from
    the last completed epoch when called again with the same settings, and
    the folder receives `model.keras`, `history.csv`, `history.json`,
    `metrics.json`, `training_curves.png`, `confusion_matrix.png`,
    `class_activation_maps.png` (and `tensorboard/` with `tensorboard=True`).

    Args:
        dataset: a name or path for `load_dataset`, or a `Dataset`.
            Defaults to `"mnist"`.
        head: `"reshape"` or `"gap"`, the classifier head. Defaults to
            `"reshape"`.
        bottleneck_width: int, the reshape head's 1x1 bottleneck width.
            Defaults to `128`.
        epochs: int >= 1. Defaults to `10`.
        batch_size: int >= 1, or `"auto"` for `default_batch_size` of the
            training split (256 on full MNIST). Defaults to `"auto"`.
        learning_rate: float > 0, the peak learning rate. Defaults to `8e-3`.
        random_shift: int >= 0, training images are moved by up to this many
            pixels each way, anew every epoch (see `make_tf_dataset`); `0`
            turns it off; `"auto"` for `default_random_shift` of the image
            size (2 on MNIST, 0 on 8x8 images). Defaults to `"auto"`.
        precision: `"auto"`, `"float32"`, `"mixed_bfloat16"` or
            `"mixed_float16"`. Defaults to `"auto"`.
        out_dir: `None` (save nothing) or a folder for the model and reports.
        seed: int, seeds weights, shuffling and splits. In float32 the same
            seed gives the same metrics (`train` then turns on TensorFlow's
            op determinism while it trains). Defaults to `0`.
        limit: `None` or int, use only this many training images.
        validation_split: float in [0, 1), fraction of the training images
            held out for validation. Defaults to `0.0`.
        tensorboard: bool, write TensorBoard logs to `out_dir/tensorboard`.
        reports_images: int, test images in the class activation map figure.
            Defaults to `12`.
        callbacks: `None` or a list of extra `keras.callbacks.Callback`.
        verbose: `"auto"` (a progress bar on a terminal, one line per epoch
            otherwise), `0`, `1` or `2`.

    Returns:
        A `TrainResult`.

    Example:

    >>> from nin_layers.training import train
    >>> result = train("digits", epochs=1, limit=64, verbose=0)
    >>> sorted(result.history)
    ['accuracy', 'loss']
    >>> 0.0 <= result.metrics["test_accuracy"] <= 1.0
    True
    """
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    callbacks_extra = list(callbacks or [])
    if head not in HEADS:
        raise ValueError(
            "Received an invalid value for argument `head`, expected one of "
            f"'reshape', 'gap'. Received: head={head!r}"
        )
    _check_int("bottleneck_width", bottleneck_width)
    _check_int("epochs", epochs)
    if batch_size != "auto":
        _check_int("batch_size", batch_size, expected="an integer >= 1 or 'auto'")
    _check_int("seed", seed, minimum=0)
    if random_shift != "auto":
        _check_int("random_shift", random_shift, minimum=0, expected="an integer >= 0 or 'auto'")
    _check_int("reports_images", reports_images, minimum=0)
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not (learning_rate > 0)
    ):
        raise ValueError(
            "Received an invalid value for argument `learning_rate`, expected a "
            f"float > 0. Received: learning_rate={learning_rate!r}"
        )
    policy = resolve_precision(precision)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2

    if isinstance(dataset, Dataset):
        data = dataset
    else:
        data = load_dataset(dataset, validation_split=validation_split, seed=seed, limit=limit)
    auto_batch, auto_shift = batch_size == "auto", random_shift == "auto"
    if auto_batch:
        batch_size = default_batch_size(len(data.x_train))
    if auto_shift:
        random_shift = default_random_shift(data.input_shape)
    if verbose:
        print(f"Data: {data.summary()}", flush=True)
        print(f"Precision: {policy} ({_precision_reason(precision, policy)})", flush=True)
        print(
            f"Recipe: batch size {batch_size}{' (auto)' if auto_batch else ''}, Adam to "
            f"learning rate {learning_rate:g} then cosine decay, random shifts of up "
            f"to {random_shift} px{' (auto)' if auto_shift else ''}",
            flush=True,
        )

    keras.utils.set_random_seed(seed)
    with _deterministic_ops(policy == "float32"):
        model = build_model(data, head, bottleneck_width, policy)
        steps_per_epoch = -(-len(data.x_train) // batch_size)
        compile_model(model, steps_per_epoch, epochs, learning_rate)

        EpochCounter, ResumableBackup, PauseAfterEpoch = _callbacks()
        epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False)
        train_data = make_tf_dataset(
            data.x_train,
            data.y_train,
            batch_size,
            shuffle=True,
            seed=seed,
            epoch=epoch_variable,
            random_shift=random_shift,
        )
        validation = None
        if data.x_val is not None:
            validation = make_tf_dataset(data.x_val, data.y_val, batch_size)
        callbacks = [EpochCounter(epoch_variable)]
        backup = None
        settings = {
            "dataset": data.source,
            "dataset_name": data.name,
            "train_images": len(data.x_train),
            "head": head,
            "bottleneck_width": bottleneck_width,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": float(learning_rate),
            "random_shift": random_shift,
            "precision": policy,
            "seed": seed,
            "limit": limit,
            "validation_split": float(validation_split),
        }
        if out_dir is not None:
            out_dir = os.fspath(out_dir)
            os.makedirs(out_dir, exist_ok=True)
            reports.write_json(settings, os.path.join(out_dir, "config.json"))
            backup = ResumableBackup(
                os.path.join(out_dir, "backup"), settings, verbose=bool(verbose)
            )
            callbacks.append(backup)
            if tensorboard:
                callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard")))
            pause = os.environ.get(PAUSE_ENV)
            if pause:
                callbacks.append(PauseAfterEpoch(int(pause)))

        callbacks.extend(callbacks_extra or [])
        fit_start = time.perf_counter()
        keras_history = model.fit(
            train_data,
            epochs=epochs,
            validation_data=validation,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded per epoch
            verbose=verbose,
        )
        train_time = time.perf_counter() - fit_start
        epochs_run = epochs - (backup.resumed_from if backup else 0)
        history = backup.history if backup else {}
        if not history:
            history = {k: [float(v) for v in vals] for k, vals in keras_history.history.items()}

        result = evaluate(model, data.x_test, data.y_test, batch_size, data.num_classes)
        metrics = {
            "test_accuracy": result["accuracy"],
            "test_loss": result["loss"],
            "per_class_accuracy": result["per_class_accuracy"],
            "train_time_s": train_time,
            "images_per_second": len(data.x_train) * epochs_run / max(train_time, 1e-9),
            "precision": policy,
            "epochs": epochs,
            "resumed_from_epoch": backup.resumed_from if backup else 0,
            "batch_size": batch_size,
            "dataset": data.name,
        }
        if out_dir is not None:
            _write_outputs(model, data, history, metrics, result, out_dir, reports_images)
            shutil.rmtree(os.path.join(out_dir, "backup"), ignore_errors=True)
        metrics["wall_time_s"] = time.perf_counter() - start
        if out_dir is not None:
            reports.write_json(
                _public_metrics(metrics, result), os.path.join(out_dir, "metrics.json")
            )
        outcome = TrainResult(model, history, metrics, data, out_dir)
        if verbose:
            print(outcome.summary_line(), flush=True)
        return outcome


def _precision_reason(requested, policy):
    if requested != "auto":
        return "as requested"
    if policy == "mixed_float16":
        return "auto: GPU found"
    if policy == "mixed_bfloat16":
        return "auto: the CPU has bfloat16 instructions"
    return "auto: no GPU and no CPU bfloat16 instructions"


def _public_metrics(metrics, result):
    public = dict(metrics)
    public["confusion_matrix"] = result["confusion_matrix"]
    return public


def _write_outputs(model, data, history, metrics, result, out_dir, image_count):
    with reports.atomic_output(os.path.join(out_dir, "model.keras")) as tmp:
        model.save(tmp)
    reports.write_history(history, out_dir)
    title = f"{model.name} on {data.name}"
    reports.plot_training_curves(history, os.path.join(out_dir, "training_curves.png"), title)
    reports.plot_confusion_matrix(
        np.asarray(result["confusion_matrix"]),
        data.class_names,
        os.path.join(out_dir, "confusion_matrix.png"),
    )
    if image_count and hasattr(model, "class_activation_maps"):
        predicted = result["probabilities"].argmax(axis=1)
        index = _spread_indices(data.y_test, predicted, image_count)
        maps = np.asarray(model.class_activation_maps(data.x_test[index]))
        reports.plot_class_activation_maps(
            maps,
            data.x_test[index],
            data.y_test[index],
            result["probabilities"][index],
            data.class_names,
            os.path.join(out_dir, "class_activation_maps.png"),
        )


def _spread_indices(labels, predicted, count):
    """Indices of `count` test images: classes in turn, then some mistakes.

    Up to a third of the images are misclassified ones (when there are any),
    the rest cover the classes in turn.
    """
    wrong = np.flatnonzero(labels != predicted)[: count // 3]
    order = []
    rest = np.ones(len(labels), dtype=bool)
    rest[wrong] = False
    by_class = [list(np.flatnonzero((labels == c) & rest)) for c in np.unique(labels)]
    position = 0
    wanted = min(count - len(wrong), int(rest.sum()))
    while len(order) < wanted:
        for members in by_class:
            if position < len(members) and len(order) < wanted:
                order.append(members[position])
        position += 1
    return np.asarray(order + list(wrong), dtype="int64")


# -------------------------------------------------------------- CLI: train
def add_train_arguments(parser):
    """Adds the `nin-layers train` options to an `argparse` parser."""
    parser.add_argument(
        "--dataset",
        default="mnist",
        help="mnist, fashion_mnist, cifar10, mnist_sample, digits, a .npz file "
        "(x_train, y_train, x_test, y_test) or a folder of class sub-folders "
        "(default: mnist; without network it falls back to mnist_sample)",
    )
    parser.add_argument("--head", choices=HEADS, default="reshape", help="default: reshape")
    parser.add_argument(
        "--bottleneck-width", type=int, default=128, help="reshape head width (default: 128)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="default: 10")
    parser.add_argument(
        "--batch-size",
        type=_int_or_auto,
        default="auto",
        help=f"an integer, or auto: {DEFAULT_BATCH_SIZE} when that gives at least "
        f"{MIN_STEPS_PER_EPOCH} steps per epoch, else {SMALL_DATA_BATCH_SIZE} "
        "(default: auto)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=DEFAULT_LEARNING_RATE,
        help="peak Adam learning rate after a one-epoch warm-up, then cosine "
        f"decay (default: {DEFAULT_LEARNING_RATE:g})",
    )
    parser.add_argument(
        "--random-shift",
        type=_int_or_auto,
        default="auto",
        help="move each training image by up to N pixels each way, drawn anew "
        f"every epoch; 0 turns it off; auto: one pixel per {SHIFT_FRACTION} of the "
        "image side, 2 on MNIST (default: auto)",
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="default: auto")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/DATASET-HEAD); rerunning the same "
        "command resumes an interrupted run",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument(
        "--limit", type=int, default=None, help="use only N training images (quick runs)"
    )
    parser.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction of training images held out for validation (default: 0)",
    )
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs")
    return parser


def _int_or_auto(text):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer or 'auto'. Received: {text!r}"
        ) from None


def _default_out_dir(dataset, head):
    base = os.path.basename(os.path.normpath(dataset))
    stem = os.path.splitext(base)[0] or "data"
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return os.path.join("runs", f"{slug}-{head}")


def run_train_command(args):
    """Runs `nin-layers train` with parsed arguments; returns the exit code."""
    out_dir = args.out or _default_out_dir(args.dataset, args.head)
    result = train(
        dataset=args.dataset,
        head=args.head,
        bottleneck_width=args.bottleneck_width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        random_shift=args.random_shift,
        precision=args.precision,
        out_dir=out_dir,
        seed=args.seed,
        limit=args.limit,
        validation_split=args.validation_split,
        tensorboard=args.tensorboard,
    )
    print(f"Saved the model and reports to {result.out_dir}/", flush=True)
    return 0


# ----------------------------------------------------------- CLI: evaluate
def add_evaluate_arguments(parser):
    """Adds the `nin-layers evaluate` options to an `argparse` parser."""
    parser.add_argument("model", help="a saved .keras model")
    parser.add_argument(
        "--dataset",
        default=None,
        help="dataset name or path (default: the one in the run's config.json "
        "next to the model, else mnist)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    return parser


def _dataset_for(model_path):
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    try:
        with open(config) as file:
            settings = json.load(file)
        name = settings.get("dataset_name")
        source = settings.get("dataset")
        return source if source and os.path.exists(source) else name or "mnist"
    except (OSError, ValueError):
        return "mnist"


def load_model(path):
    """Loads a `.keras` model, with a clear error for a missing or bad file.

    Args:
        path: path to a `.keras` file saved by `model.save()`.

    Returns:
        The `keras.Model`, with nin-layers' classes registered.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is not a `.keras` file or cannot be read.

    Example:

    >>> import os, tempfile
    >>> from nin_layers import AllConvNet
    >>> from nin_layers.training import load_model
    >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
    >>> AllConvNet(input_shape=(8, 8, 1)).save(path)
    >>> load_model(path).name
    'all_conv_net'
    """
    import keras

    import nin_layers.models  # noqa: F401 - registers the custom classes

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file: {path!r}")
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras model file")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - any deserialisation failure
        raise ValueError(f"{path}: cannot load the model ({error})") from None


def run_evaluate_command(args):
    """Runs `nin-layers evaluate`; prints accuracy, loss and per-class accuracy."""
    model = load_model(args.model)
    name = args.dataset or _dataset_for(args.model)
    data = load_dataset(name)
    expected = tuple(model.input_shape[1:])
    if any(e is not None and e != d for e, d in zip(expected, data.input_shape, strict=False)) or (
        len(expected) != len(data.input_shape)
    ):
        raise ValueError(
            f"{args.model} expects images of shape {expected} but {data.name} has "
            f"{data.input_shape}; pass the dataset it was trained on with --dataset"
        )
    if model.output_shape[-1] < data.num_classes:
        raise ValueError(
            f"{args.model} predicts {model.output_shape[-1]} classes but {data.name} "
            f"has {data.num_classes}"
        )
    result = evaluate(model, data.x_test, data.y_test, args.batch_size, model.output_shape[-1])
    print(
        f"{data.name} test set ({len(data.y_test)} images): accuracy "
        f"{result['accuracy']:.4f}, loss {result['loss']:.4f}"
    )
    print("per-class accuracy:")
    names = data.class_names
    for index, value in enumerate(result["per_class_accuracy"]):
        label = names[index] if index < len(names) else str(index)
        count = int(np.sum(data.y_test == index))
        text = "   n/a" if value is None else f"{value:.4f}"
        print(f"  {label:>12}: {text}  ({count} images)")
    return 0
