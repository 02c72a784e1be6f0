"""Subclass AllConvNet for colour 32x32 images (CIFAR-10).

`Cifar10Net` keeps AllConvNet's head and changes two things:
`preprocess` adds data augmentation (active only in training), and
`build_backbone` uses two convolutions with batch normalization per block.

    python examples/subclass_cifar10.py                    # downloads CIFAR-10 (170 MB)
    python examples/subclass_cifar10.py --dataset my.npz   # any colour .npz in keras layout
    python examples/subclass_cifar10.py --smoke            # 48 random images, 1 epoch, no download
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
class Cifar10Net(AllConvNet):
    """AllConvNet with augmentation and two conv + batch norm layers per block."""

    def preprocess(self, x):
        x = layers.RandomFlip("horizontal")(x)
        x = layers.RandomTranslation(0.1, 0.1)(x)
        return x

    def build_backbone(self, x):
        for width in self.filters:
            for _ in range(2):
                x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
            x = layers.MaxPooling2D(2)(x)
        return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="48 random images, 1 epoch")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="cifar10_net.keras")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    if args.smoke:
        rng = np.random.default_rng(0)
        x_train = rng.random((48, 32, 32, 3), dtype="float32")
        y_train = np.arange(48) % 10
        x_test, y_test = x_train[:16], y_train[:16]
        num_classes, epochs = 10, 1
    else:
        data = load_dataset(args.dataset)
        print(data.summary())
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
        num_classes, epochs = data.num_classes, args.epochs

    model = Cifar10Net(
        num_classes=num_classes,
        input_shape=x_train.shape[1:],
        filters=(8, 16, 32) if args.smoke else (64, 128, 256),
        head_mode="gap",
        dropout_rate=0.3,
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"{model.count_params():,} parameters, test accuracy {accuracy:.4f}")

    model.save(args.out)
    reloaded = keras.models.load_model(args.out)
    x = x_test[:4]
    same = np.allclose(model.predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-6)
    print(f"saved to {args.out}; reloaded as {type(reloaded).__name__}, same predictions: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
