"""Timed training recipes: the tutorial's, AllConvNet variants, the package default.

`make_runner(config, x, y)` returns a `Runner` whose `train(n)` and
`infer(n)` time one pass over the first `n` images (after `warm_up()` has
traced and compiled everything). A config is a dict:

- `recipe`: `"tutorial"` (the Functional model of `tutorial_reference`),
  `"allconvnet"` (`AllConvNet.tutorial(head)`) or `"default"` (the model,
  optimizer, batch size, precision and `tf.data` pipeline of
  `nin_layers.training`'s default recipe).
- `head`: `"gap"` or `"reshape"`.
- for `"allconvnet"`, one change at a time from the tutorial's recipe:
  `batch_size` (32), `precision` (`"float32"`), `jit_compile` (`"auto"`,
  which is off on CPU), `pipeline` (`"numpy"` or `"tf.data"`).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import tutorial_reference as tutorial

FULL_MNIST = 60000  # training images of the accuracy runs the default recipe is sized for


class RecipeUnavailable(RuntimeError):
    """The package lacks what a recipe needs (e.g. `nin_layers.training`)."""


class Runner:
    """Times training and inference passes of one compiled model."""

    def __init__(self, model, batch_size, pipeline, x, y, info, random_shift=0):
        self.model = model
        self.random_shift = int(random_shift)
        self.batch_size = int(batch_size)
        self.pipeline = pipeline
        self.x = x if pipeline == "numpy" else np.asarray(x, dtype="float32")
        self.y = y
        self.info = dict(info, batch_size=self.batch_size, pipeline=pipeline)
        self._datasets = {}

    def describe(self):
        return dict(self.info)

    def _dataset(self, n, shuffle):
        key = (n, shuffle)
        if key not in self._datasets:
            import tensorflow as tf

            from nin_layers.data import make_tf_dataset

            # An epoch variable, as `train()` passes: its pipeline then maps
            # batches in parallel (a stateful generator would need one thread).
            self._datasets[key] = make_tf_dataset(
                self.x[:n],
                self.y[:n],
                self.batch_size,
                shuffle=shuffle,
                seed=0,
                epoch=tf.Variable(0, dtype=tf.int64, trainable=False) if shuffle else None,
                random_shift=self.random_shift if shuffle else 0,
            )
        return self._datasets[key]

    def train(self, n):
        """Seconds of one `fit` epoch over the first `n` images."""
        start = time.perf_counter()
        if self.pipeline == "numpy":
            self.model.fit(self.x[:n], self.y[:n], batch_size=self.batch_size, epochs=1, verbose=0)
        else:
            self.model.fit(self._dataset(n, True), epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start

    def infer(self, n):
        """Seconds of one `predict` over the first `n` images."""
        start = time.perf_counter()
        if self.pipeline == "numpy":
            self.model.predict(self.x[:n], batch_size=self.batch_size, verbose=0)
        else:
            self.model.predict(self._dataset(n, False), verbose=0)
        return time.perf_counter() - start

    def warm_up(self):
        """Traces (and XLA-compiles) the train and predict functions."""
        n = 2 * self.batch_size
        self.train(n)
        self.infer(n)


def _default_runner(head, x, y):
    """The package's default recipe, from `nin_layers.training`'s own functions."""
    try:
        from nin_layers import training
        from nin_layers.data import Dataset
    except ImportError as error:  # pragma: no cover - depends on the package state
        raise RecipeUnavailable(f"nin_layers.training is missing: {error}") from error
    needed = (
        "build_model",
        "resolve_precision",
        "default_batch_size",
        "default_random_shift",
        "DEFAULT_LEARNING_RATE",
    )
    missing = [name for name in needed if not hasattr(training, name)]
    if missing:
        raise RecipeUnavailable(f"nin_layers.training lacks {', '.join(missing)}")
    import keras

    precision = training.resolve_precision("auto")
    batch_size = training.default_batch_size(FULL_MNIST)  # as in the accuracy runs
    x32 = np.asarray(x, dtype="float32")
    data = Dataset(
        x_train=x32,
        y_train=y,
        x_test=x32[:1],
        y_test=y[:1],
        x_val=None,
        y_val=None,
        num_classes=10,
        input_shape=tuple(x32.shape[1:]),
        name="bench",
    )
    model = training.build_model(data, head=head, precision=precision)
    steps_per_epoch = -(-FULL_MNIST // batch_size)
    epochs = 10
    if hasattr(training, "compile_model"):
        training.compile_model(model, steps_per_epoch=steps_per_epoch, epochs=epochs)
        how = "training.compile_model"
    else:
        # No public compile step yet: the optimizer, loss and metric that
        # `training.train` uses, from its own schedule function.
        schedule = training._learning_rate_schedule(
            float(training.DEFAULT_LEARNING_RATE), steps_per_epoch, epochs
        )
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        how = "as in training.train (no public compile function)"
    info = {
        "recipe": "default",
        "head": head,
        "precision": precision,
        "jit_compile": str(model.jit_compile),
        "model": type(model).__name__,
        "compiled": how,
        "optimizer": "Adam, warm-up then cosine decay, peak learning rate "
        f"{training.DEFAULT_LEARNING_RATE:g}",
    }
    random_shift = training.default_random_shift(x32.shape[1:])
    info["random_shift"] = random_shift
    return Runner(model, batch_size, "tf.data", x32, y, info, random_shift=random_shift)


def make_runner(config, x, y):
    """Builds, compiles and wraps the model of one configuration."""
    recipe = config.get("recipe", "tutorial")
    head = config.get("head", "reshape")
    if recipe == "default":
        return _default_runner(head, x, y)
    batch_size = config.get("batch_size", tutorial.BATCH_SIZE)
    precision = config.get("precision", "float32")
    jit_compile = config.get("jit_compile", "auto")
    pipeline = config.get("pipeline", "numpy")
    if recipe == "tutorial":
        model = tutorial.build_model(head)
    elif recipe == "allconvnet":
        from nin_layers import AllConvNet

        model = AllConvNet.tutorial(head, dtype=precision)
    else:
        raise ValueError(
            f"Received an invalid value for `recipe`, expected 'tutorial', "
            f"'allconvnet' or 'default'. Received: recipe={recipe!r}"
        )
    tutorial.compile_model(model, jit_compile=jit_compile)
    info = {
        "recipe": recipe,
        "head": head,
        "precision": precision,
        "jit_compile": str(model.jit_compile),
        "model": type(model).__name__,
    }
    return Runner(model, batch_size, pipeline, x, y, info)
