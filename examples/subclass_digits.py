"""Subclass AllConvNet for 8x8 images (scikit-learn's digits), with a new argument.

`DigitsNet` adds an `__init__` argument, `convs_per_block`, that its
`build_backbone` reads, and extends `get_config` so that the saved model
can be loaded again. Attributes that `build_backbone` reads must be set
before `super().__init__()`, because AllConvNet builds its network there.

    python examples/subclass_digits.py            # 1,797 digits, about a minute of CPU
    python examples/subclass_digits.py --smoke    # 48 images, 1 epoch
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np
from keras import layers

from nin_layers import AllConvNet
from nin_layers.data import load_dataset


@keras.saving.register_keras_serializable(package="examples")
class DigitsNet(AllConvNet):
    """AllConvNet with `convs_per_block` 3x3 convolutions before each pooling."""

    def __init__(self, convs_per_block=2, **kwargs):
        self.convs_per_block = convs_per_block  # read by build_backbone
        super().__init__(**kwargs)

    def build_backbone(self, x):
        for width in self.filters:
            for _ in range(self.convs_per_block):
                x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        return x

    def get_config(self):
        return {**super().get_config(), "convs_per_block": self.convs_per_block}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="48 images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="digits_net.keras")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    data = load_dataset("digits", limit=48 if args.smoke else None)
    print(data.summary())  # 8x8 grey images, values in [0, 1]
    epochs = 1 if args.smoke else args.epochs

    # Two poolings: 8x8 -> 4x4 -> 2x2, then the head.
    model = DigitsNet(
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        filters=(32, 64),
        convs_per_block=2,
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"{model.count_params():,} parameters, test accuracy {accuracy:.4f}")

    model.save(args.out)
    reloaded = keras.models.load_model(args.out)
    print(f"reloaded: {type(reloaded).__name__}, convs_per_block={reloaded.convs_per_block}")
    x = data.x_test[:4]
    same = np.allclose(model.predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-6)
    print(f"same predictions after reload: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
