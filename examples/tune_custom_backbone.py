"""Tuning the head's bottleneck width on top of your own backbone.

`AllConvNetHyperModel` tunes the width of `AllConvNet`'s head. For any other
model, write a `keras_tuner.HyperModel` whose `build(hp)` declares the width
with `hp.Int(...)` and passes it to a `PointwiseClassifierHead`: the rest of
the model is yours. `nin_layers.tuning.make_tuner` then gives the tuner
(random, bayesian, hyperband or grid) with seeded, resumable trials, and
`results_rows` / `format_results_table` / `write_results` the results.

Here the backbone is a small stack of separable convolutions with batch
normalization, trained on scikit-learn's 1,797 8x8 digits (shipped with
scikit-learn, no download). A search of 6 trials takes about a minute:

    python examples/tune_custom_backbone.py --directory /tmp/custom_tuning
    python examples/tune_custom_backbone.py --tiny   # 64 images, 2 trials of 1 epoch

Run it again with the same arguments and it resumes (finished trials are
kept); add `--overwrite` to start afresh.
"""

from __future__ import annotations

import argparse
import os

import keras
import keras_tuner
import numpy as np
from keras import layers

from nin_layers import PointwiseClassifierHead, tuning


class SeparableConvHyperModel(keras_tuner.HyperModel):
    """A separable-convolution backbone with a tuned `PointwiseClassifierHead`.

    Args:
        input_shape: `(height, width, channels)` of the images.
        num_classes: number of classes.
        min_width: smallest bottleneck width. Defaults to `4`.
        max_width: largest bottleneck width. Defaults to `256`.
    """

    def __init__(self, input_shape, num_classes, min_width=4, max_width=256, **kwargs):
        super().__init__(**kwargs)
        # Check the non-hyperparameter arguments here, as keras-tuner's own
        # hypermodels do, so mistakes fail before the search starts.
        if num_classes < 2:
            raise ValueError(f"Expected num_classes >= 2. Received: num_classes={num_classes}")
        if not 1 <= min_width <= max_width:
            raise ValueError(
                "Expected 1 <= min_width <= max_width. "
                f"Received: min_width={min_width}, max_width={max_width}"
            )
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.min_width = min_width
        self.max_width = max_width

    def build(self, hp):
        # Every hyperparameter is declared with a default. The name
        # "bottleneck_width" is what `results_rows` and the plot look for.
        width = hp.Int(
            "bottleneck_width",
            min_value=self.min_width,
            max_value=self.max_width,
            step=2,  # widths min_width * 2**k
            sampling="log",
            default=min(max(32, self.min_width), self.max_width),
        )
        inputs = keras.Input(self.input_shape)
        x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.SeparableConv2D(32, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        # The head: 1x1 bottleneck of the tuned width, global average
        # pooling, 1x1 convolution to the classes. No Dense layer.
        outputs = PointwiseClassifierHead(
            self.num_classes, mode="reshape", bottleneck_width=width, name="head"
        )(x)
        model = keras.Model(inputs, outputs, name="separable_nin")
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model


def load_data(tiny):
    """Returns ((x_train, y_train), (x_val, y_val)) of the 8x8 digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    if tiny:
        return (x[:64], y[:64]), (x[64:96], y[64:96])
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="64 images, 2 trials of 1 epoch")
    parser.add_argument("--tuner", choices=tuning.TUNERS, default="random")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--directory", default="custom_tuning")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    max_trials, epochs = (2, 1) if args.tiny else (args.max_trials, args.epochs)

    (x_train, y_train), (x_val, y_val) = load_data(args.tiny)
    hypermodel = SeparableConvHyperModel(x_train.shape[1:], num_classes=10)
    tuner = tuning.make_tuner(
        hypermodel,
        args.tuner,
        max_trials=max_trials,
        epochs=epochs,  # used by hyperband only
        directory=args.directory,
        project_name="separable_backbone",
        overwrite=args.overwrite,
    )
    tuner.search(
        x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0
    )

    rows = tuning.results_rows(tuner)
    best = tuning.best_row(tuner, rows)
    print(tuning.format_results_table(rows, "val_accuracy", best))
    paths = tuning.write_results(rows, tuner.project_dir, "val_accuracy", best)
    model = tuning.best_model(tuner)
    model_path = os.path.join(tuner.project_dir, "best_model.keras")
    model.save(model_path)
    print(f"Results: {paths['csv']}, {paths['png']}; best model: {model_path}")
    print(f"Best bottleneck width: {best['bottleneck_width']}")
    return best


if __name__ == "__main__":
    main()
