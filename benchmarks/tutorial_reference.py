"""The tutorial's two MNIST models and its training recipe, re-stated.

The reference every benchmark compares against: two Functional models
written with plain Keras layers (no nin-layers code), trained the way the
tutorial does it: `model.fit` on NumPy arrays, batch 32, adam,
sparse categorical cross-entropy, 10 epochs, pixels divided by 255.

Run it alone to train both models once on full MNIST:

    python benchmarks/tutorial_reference.py --epochs 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import DEFAULT_DATA, Stopwatch, log, quiet_tensorflow

HEADS = ("gap", "reshape")
BATCH_SIZE = 32
EPOCHS = 10
OPTIMIZER = "adam"
LOSS = "sparse_categorical_crossentropy"


def load_mnist(path=DEFAULT_DATA, limit=None, test_limit=None):
    """Loads the keras-layout `.npz` the tutorial's way.

    Returns `(x_train, y_train), (x_test, y_test)` with images reshaped to
    `(N, 28, 28, 1)` and divided by 255 (float64 NumPy, as the tutorial
    gets from `x / 255`). `limit`/`test_limit` keep the first N images.
    """
    with np.load(path) as data:
        x_train, y_train = data["x_train"][:limit], data["y_train"][:limit]
        x_test, y_test = data["x_test"][:test_limit], data["y_test"][:test_limit]
    size = x_train.shape[1:3]
    x_train = x_train.reshape(-1, *size, 1) / 255
    x_test = x_test.reshape(-1, *size, 1) / 255
    return (x_train, y_train.astype("int64")), (x_test, y_test.astype("int64"))


def build_model(head="reshape", input_shape=(28, 28, 1)):
    """The tutorial's Functional model with the `"gap"` or `"reshape"` head."""
    from keras import Input, Model, layers

    if head not in HEADS:
        raise ValueError(
            f"Received an invalid value for `head`, expected one of {HEADS}. "
            f"Received: head={head!r}"
        )
    inputs = Input(shape=input_shape)
    x = inputs
    for width in (32, 64, 64):
        x = layers.Conv2D(width, (3, 3), strides=(1, 1), padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(strides=(2, 2))(x)
    if head == "gap":
        x = layers.Conv2D(10, (1, 1), activation="softmax")(x)
        x = layers.GlobalAveragePooling2D()(x)
    else:
        x = layers.Conv2D(128, (1, 1), padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Reshape((1, 1, 128))(x)
        x = layers.Conv2D(10, (1, 1), padding="same", activation="softmax")(x)
        x = layers.Reshape((10,))(x)
    return Model(inputs=inputs, outputs=x)


def compile_model(model, jit_compile="auto"):
    """Compiles `model` with the tutorial's optimizer, loss and metric."""
    model.compile(optimizer=OPTIMIZER, loss=LOSS, metrics=["acc"], jit_compile=jit_compile)
    return model


def fit(model, x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, callbacks=None, verbose=0):
    """The tutorial's `model.fit` call."""
    return model.fit(
        x, y, epochs=epochs, batch_size=batch_size, callbacks=callbacks, verbose=verbose
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--limit", type=int, default=None, help="first N training images")
    parser.add_argument("--head", choices=HEADS + ("both",), default="both")
    args = parser.parse_args(argv)
    quiet_tensorflow()
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data, limit=args.limit)
    for head in HEADS if args.head == "both" else (args.head,):
        model = compile_model(build_model(head))
        log(f"tutorial {head}: {model.count_params():,} parameters, {len(x_train):,} images")
        with Stopwatch() as clock:
            fit(model, x_train, y_train, epochs=args.epochs, verbose=2)
        _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        log(f"tutorial {head}: test accuracy {accuracy:.4f}, {clock.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
