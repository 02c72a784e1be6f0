"""Tests of `nin_layers.AllConvNet`."""

import io
import json
import textwrap
from contextlib import redirect_stdout

import keras
import numpy as np
import pytest
from keras import layers, ops
from testing import (
    MIXED_ATOL,
    MIXED_POLICIES,
    assert_same_predictions_in_fresh_process,
    dtype_name,
    numpy_all_conv_net,
    to_numpy,
)

import nin_layers
from nin_layers import AllConvNet, PointwiseClassifierHead

TUTORIAL_PARAMS = {"reshape": 65_354, "gap": 56_394}


@pytest.fixture
def digits():
    """Four random 28x28 grey images in [0, 1]."""
    return np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")


def tutorial_model(mode):
    """The tutorial's Functional model, re-stated from its description."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for width in (32, 64, 64):
        x = layers.Conv2D(width, (3, 3), strides=(1, 1), padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(strides=(2, 2))(x)
    if mode == "gap":
        x = layers.Conv2D(10, (1, 1), activation="softmax")(x)
        x = layers.GlobalAveragePooling2D()(x)
    else:
        x = layers.Conv2D(128, (1, 1), padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Reshape((1, 1, 128))(x)
        x = layers.Conv2D(10, (1, 1), padding="same", activation="softmax")(x)
        x = layers.Reshape((10,))(x)
    return keras.Model(inputs, x)


# ---------------------------------------------------------------- presets
def test_exported_and_registered():
    assert nin_layers.AllConvNet is AllConvNet
    assert issubclass(AllConvNet, keras.Model)
    assert keras.saving.get_registered_name(AllConvNet) == "nin_layers>AllConvNet"


def test_parameter_counts_of_tutorial_presets():
    assert AllConvNet().count_params() == TUTORIAL_PARAMS["reshape"]
    assert AllConvNet(head_mode="gap").count_params() == TUTORIAL_PARAMS["gap"]
    for mode, expected in TUTORIAL_PARAMS.items():
        assert AllConvNet.tutorial(mode).count_params() == expected
        assert tutorial_model(mode).count_params() == expected
    assert AllConvNet.tutorial("gap").head.activation_order == "activate_then_pool"
    assert AllConvNet.tutorial("reshape").head.activation_order == "pool_then_activate"


def test_block_output_shapes_match_tutorial():
    model = AllConvNet()
    expected = [
        ("block1_conv", (None, 28, 28, 32)),
        ("block1_pool", (None, 14, 14, 32)),
        ("block2_conv", (None, 14, 14, 64)),
        ("block2_pool", (None, 7, 7, 64)),
        ("block3_conv", (None, 7, 7, 64)),
        ("block3_pool", (None, 3, 3, 64)),
    ]
    for name, shape in expected:
        assert tuple(model.get_layer(name).output.shape) == shape, name
    assert model.output_shape == (None, 10)
    reference = tutorial_model("reshape")
    reference_convs = [layer for layer in reference.layers if isinstance(layer, layers.Conv2D)]
    assert [tuple(layer.output.shape) for layer in reference_convs[:3]] == [
        shape for name, shape in expected if name.endswith("conv")
    ]


@pytest.mark.parametrize("mode", ["reshape", "gap"])
def test_tutorial_preset_equals_tutorial_model(mode, digits):
    """Same weights, same predictions as the tutorial's own layers."""
    model = AllConvNet.tutorial(mode)
    reference = tutorial_model(mode)
    reference.set_weights(model.get_weights())  # same order and shapes
    np.testing.assert_allclose(
        model.predict(digits, verbose=0), reference.predict(digits, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "activation"),
    [
        ({}, "softmax"),
        ({"head_mode": "gap"}, "softmax"),
        ({"head_mode": "gap", "activation_order": "activate_then_pool"}, "softmax"),
        ({"activation": None, "rescaling": 0.5, "filters": (8, 16)}, None),
    ],
    ids=["reshape", "gap", "gap-tutorial-order", "logits-rescaled"],
)
def test_matches_numpy(kwargs, activation, digits):
    model = AllConvNet(**kwargs)
    expected, maps = numpy_all_conv_net(model, digits, activation=activation)
    np.testing.assert_allclose(model.predict(digits, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(model.class_activation_maps(digits)), maps, atol=1e-4)


# -------------------------------------------------- built at construction
def test_built_at_construction(tmp_path, digits):
    model = AllConvNet()
    assert model.built
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    summary = "\n".join(lines)
    assert "head" in summary and "65,354" in summary
    path = tmp_path / "untrained.weights.h5"
    model.save_weights(path)
    other = AllConvNet()  # different random weights
    assert not np.allclose(other.predict(digits, verbose=0), model.predict(digits, verbose=0))
    other.load_weights(path)
    np.testing.assert_array_equal(
        other.predict(digits, verbose=0), model.predict(digits, verbose=0)
    )


def test_feature_extractor_and_head(digits):
    model = AllConvNet(head_mode="gap")
    assert isinstance(model.head, PointwiseClassifierHead)
    features = model.feature_extractor()(digits)
    assert tuple(features.shape) == (4, 3, 3, 64)
    np.testing.assert_allclose(
        to_numpy(model.head(features)), model.predict(digits, verbose=0), atol=1e-6
    )


def test_class_activation_maps(digits):
    model = AllConvNet()
    maps = model.class_activation_maps(digits)
    assert tuple(maps.shape) == (4, 3, 3, 10)
    np.testing.assert_allclose(
        to_numpy(ops.softmax(ops.mean(maps, axis=(1, 2)))),
        model.predict(digits, verbose=0),
        atol=1e-6,
    )
    tutorial = AllConvNet.tutorial("gap")
    maps = tutorial.class_activation_maps(digits)
    np.testing.assert_allclose(
        to_numpy(ops.mean(ops.softmax(maps, axis=-1), axis=(1, 2))),
        tutorial.predict(digits, verbose=0),
        atol=1e-6,
    )


# ---------------------------------------------------------------- configs
def test_config_round_trip(digits):
    model = AllConvNet(
        num_classes=5,
        input_shape=(16, 16, 3),
        filters=(8, 16),
        head_mode="gap",
        activation=None,
        activation_order="activate_then_pool",
        dropout_rate=0.25,
        rescaling=1 / 255,
        name="custom",
    )
    config = model.get_config()
    json.dumps(config)
    revived = AllConvNet.from_config(config)
    assert revived.get_config() == config
    assert revived.name == "custom"
    assert revived.count_params() == model.count_params()
    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    revived.set_weights(model.get_weights())
    np.testing.assert_allclose(
        revived.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


USER_MODULE = textwrap.dedent(
    '''
    """A user's own package: an AllConvNet for 32x32 colour images."""
    import keras
    from nin_layers import AllConvNet


    @keras.saving.register_keras_serializable(package="my_project")
    class ColourNet(AllConvNet):
        """Conv, batch norm, relu, 2x2 max pooling per block; uint8 input."""

        def __init__(self, use_batchnorm=True, **kwargs):
            # build_backbone() runs inside AllConvNet.__init__, so set what it
            # reads first.
            self.use_batchnorm = use_batchnorm
            kwargs.setdefault("input_shape", (32, 32, 3))
            kwargs.setdefault("rescaling", 1 / 255)
            super().__init__(**kwargs)

        def build_backbone(self, x):
            for index, width in enumerate(self.filters, start=1):
                x = keras.layers.Conv2D(
                    width, 3, padding="same", use_bias=not self.use_batchnorm,
                    name=f"conv{index}",
                )(x)
                if self.use_batchnorm:
                    x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
                x = keras.layers.ReLU(name=f"relu{index}")(x)
                x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
            return x

        def get_config(self):
            return {**super().get_config(), "use_batchnorm": self.use_batchnorm}
    '''
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Imports `my_project_models`, a user module with an AllConvNet subclass."""
    package_dir = tmp_path / "user_code"
    package_dir.mkdir()
    (package_dir / "my_project_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(package_dir))
    import importlib

    module = importlib.import_module("my_project_models")
    module = importlib.reload(module)
    yield package_dir, module


def test_save_and_load_in_fresh_process(tmp_path, digits, user_module):
    """`.keras` files reload with identical predictions, in and out of process."""
    package_dir, module = user_module
    colour = module.ColourNet(num_classes=3, filters=(8, 16), head_mode="gap")
    assert keras.saving.get_registered_name(type(colour)) == "my_project>ColourNet"
    pixels = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3)).astype("uint8")
    colour(pixels, training=True)  # moves the batch-norm statistics
    assert not np.allclose(to_numpy(colour.get_layer("bn1").moving_mean), 0.0)

    models = {
        "reshape": (AllConvNet(), digits),
        "gap_tutorial": (AllConvNet.tutorial("gap", dropout_rate=0.2), digits),
        "colour_subclass": (colour, pixels),
    }
    cases = {}
    for name, (model, inputs) in models.items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        expected = to_numpy(model(inputs, training=False))
        reloaded = keras.models.load_model(path)
        assert type(reloaded) is type(model)
        assert reloaded.get_config() == model.get_config()
        np.testing.assert_array_equal(to_numpy(reloaded(inputs, training=False)), expected)
        cases[name] = (path, inputs, expected)

    report = assert_same_predictions_in_fresh_process(
        cases,
        tmp_path,
        imports=("nin_layers", "my_project_models"),
        sys_path=[package_dir],
        method="call",
    )
    assert report["colour_subclass"]["class"] == "my_project_models.ColourNet"
    assert report["reshape"]["class"] == "nin_layers.models.AllConvNet"


def test_user_subclass_config(user_module, digits):
    _, module = user_module
    model = module.ColourNet(use_batchnorm=False, filters=(8,), num_classes=4)
    assert "bn1" not in [layer.name for layer in model.layers]
    config = model.get_config()
    assert config["use_batchnorm"] is False
    assert config["input_shape"] == (32, 32, 3)
    revived = module.ColourNet.from_config(config)
    assert revived.get_config() == config
    assert (
        revived.count_params()
        == model.count_params()
        == (3 * 3 * 3 * 8 + 8) + (8 * 128 + 128) + (128 * 4 + 4)
    )
    assert revived.output_shape == (None, 4)


def test_reset_then_save(tmp_path, digits):
    model = AllConvNet()
    model.head.reset(4)
    assert model.get_config()["num_classes"] == 4
    assert model.predict(digits, verbose=0).shape == (4, 4)
    path = tmp_path / "reset.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.output_shape == (None, 4)
    np.testing.assert_array_equal(
        reloaded.predict(digits, verbose=0), model.predict(digits, verbose=0)
    )


# ------------------------------------------------------ inputs and datasets
@pytest.mark.parametrize(
    ("kwargs", "batch_shape", "feature_shape"),
    [
        ({"input_shape": (32, 32, 3)}, (2, 32, 32, 3), (4, 4, 64)),
        ({"input_shape": (8, 8, 1), "filters": (16, 32)}, (2, 8, 8, 1), (2, 2, 32)),
        ({"input_shape": (8, 8, 1)}, (2, 8, 8, 1), (1, 1, 64)),
        ({"input_shape": (None, None, 3), "head_mode": "gap"}, (2, 40, 24, 3), (5, 3, 64)),
    ],
    ids=["cifar-32x32x3", "digits-8x8-two-blocks", "digits-8x8-three-blocks", "unknown-size"],
)
def test_other_inputs(kwargs, batch_shape, feature_shape):
    model = AllConvNet(num_classes=3, **kwargs)
    images = np.random.default_rng(3).random(batch_shape).astype("float32")
    assert model.predict(images, verbose=0).shape == (2, 3)
    features = model.feature_extractor()(images)
    assert tuple(features.shape[1:]) == feature_shape
    if kwargs["input_shape"][0] is None:
        assert model.output_shape == (None, 3)
        other = np.random.default_rng(4).random((1, 17, 64, 3)).astype("float32")
        assert model.predict(other, verbose=0).shape == (1, 3)


def test_rescaling_of_uint8_pixels():
    pixels = np.random.default_rng(5).integers(0, 256, (3, 28, 28, 1)).astype("uint8")
    rescaled = AllConvNet(rescaling=1 / 255)
    assert rescaled.get_layer("rescaling") is not None
    plain = AllConvNet()
    plain.set_weights(rescaled.get_weights())
    np.testing.assert_allclose(
        rescaled.predict(pixels, verbose=0),
        plain.predict(pixels.astype("float32") / 255, verbose=0),
        atol=1e-6,
    )
    assert rescaled.count_params() == plain.count_params()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"filters": ()}, r"`filters`, expected a non-empty sequence.*Received: filters=\(\)"),
        ({"filters": []}, r"`filters`.*Received: filters=\(\)"),
        ({"filters": None}, r"`filters`.*Received: filters=None"),
        ({"filters": (32, 0)}, r"`filters`.*integers >= 1.*Received: filters=\(32, 0\)"),
        ({"filters": (32, -64)}, r"`filters`.*Received: filters=\(32, -64\)"),
        ({"filters": (32.0,)}, r"`filters`.*Received: filters=\(32.0,\)"),
        ({"head_mode": "dense"}, r"`head_mode`, expected one of \"gap\", \"reshape\".*'dense'"),
        ({"num_classes": 0}, r"`num_classes`.*Received: num_classes=0"),
        ({"bottleneck_width": 0}, r"`bottleneck_width`.*Received: bottleneck_width=0"),
        ({"dropout_rate": 1.5}, r"`dropout_rate`.*Received: dropout_rate=1.5"),
        ({"input_shape": (28, 28)}, r"`input_shape`.*Received: input_shape=\(28, 28\)"),
        ({"input_shape": (28, 0, 1)}, r"`input_shape`.*Received: input_shape=\(28, 0, 1\)"),
        ({"rescaling": "1/255"}, r"`rescaling`.*Received: rescaling='1/255'"),
        ({"data_format": "NCHW"}, r"`data_format`.*Received: data_format='NCHW'"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AllConvNet(**kwargs)


@pytest.mark.parametrize(
    ("input_shape", "filters", "stages", "pixels"),
    [((8, 8, 1), (8, 8, 8, 8), 4, 16), ((28, 3, 1), (32, 64), 2, 4)],
)
def test_input_too_small(input_shape, filters, stages, pixels):
    with pytest.raises(ValueError) as info:
        AllConvNet(input_shape=input_shape, filters=filters)
    message = str(info.value)
    assert f"too small for {stages} pooling stages" in message
    assert f"at least {pixels} pixels per side" in message
    assert f"Received: input_shape={input_shape}" in message


def test_backbone_that_is_not_rank_4():
    class Flat(AllConvNet):
        def build_backbone(self, x):
            return layers.Flatten()(x)

    with pytest.raises(ValueError, match=r"build_backbone\(\)` must return a rank-4"):
        Flat()


# ------------------------------------------------ training, precision, XLA
def blob_data(count, size=8, classes=3, seed=0):
    """Images with a bright square whose position gives the class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.random((count, size, size, 1)).astype("float32") * 0.2
    for index, label in enumerate(labels):
        top = 0 if label == 0 else size // 2
        left = 0 if label != 2 else size // 2
        images[index, top : top + size // 2, left : left + size // 2, 0] += 0.8
    return images, labels


def crossentropy_and_accuracy(model, images, labels):
    probabilities = to_numpy(model(images, training=False)).astype("float64")
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12))
    return loss, np.mean(probabilities.argmax(-1) == labels)


@pytest.mark.parametrize("head_mode", ["reshape", "gap"])
def test_short_fit_lowers_loss(head_mode):
    images, labels = blob_data(48)
    model = AllConvNet(num_classes=3, input_shape=(8, 8, 1), filters=(8, 16), head_mode=head_mode)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    loss_before, accuracy_before = crossentropy_and_accuracy(model, images, labels)
    history = model.fit(images, labels, epochs=8, batch_size=16, verbose=0)
    loss_after, accuracy_after = crossentropy_and_accuracy(model, images, labels)
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)
    assert accuracy_after > accuracy_before
    assert accuracy_after > 0.8
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("policy", MIXED_POLICIES)
def test_mixed_precision(policy, digits, dtype_policy):
    reference = AllConvNet()
    expected = reference.predict(digits, verbose=0)
    dtype_policy(policy)
    model = AllConvNet()
    compute = policy.split("_")[1]
    assert model.get_layer("block1_conv").compute_dtype == compute
    assert model.head.classifier.compute_dtype == "float32"
    assert dtype_name(model.output) == "float32"
    model.set_weights(reference.get_weights())
    predicted = model.predict(digits, verbose=0)
    assert predicted.dtype == np.float32
    np.testing.assert_allclose(predicted, expected, atol=MIXED_ATOL[policy])
    if policy == "mixed_float16":  # trains with loss scaling
        model.compile("adam", "sparse_categorical_crossentropy")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(digits, np.arange(4), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()


def test_explicit_dtype_argument(digits):
    model = AllConvNet(dtype="mixed_bfloat16")
    assert model.get_layer("block2_conv").compute_dtype == "bfloat16"
    assert dtype_name(model.output) == "float32"
    revived = AllConvNet.from_config(model.get_config())
    assert revived.get_layer("block2_conv").dtype_policy.name == "mixed_bfloat16"
    assert revived.head.dtype_policy.name == "mixed_bfloat16"


def test_jit_compile_predict(digits):
    """The reshape head runs under XLA in `test_channels_first`."""
    model = AllConvNet.tutorial("gap")
    expected = model.predict(digits, verbose=0)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(digits, verbose=0), expected, atol=1e-5)


def test_channels_first(digits):
    """channels_first equals channels_last on transposed input.

    TensorFlow has no NCHW Conv2D kernel on CPU outside XLA, so the model
    runs with `jit_compile=True` (a GPU runs it eagerly too).
    """
    last = AllConvNet(head_mode="reshape")
    first = AllConvNet(input_shape=(1, 28, 28), data_format="channels_first")
    assert first.count_params() == last.count_params()
    assert tuple(first.feature_extractor().output.shape) == (None, 64, 3, 3)
    first.set_weights(last.get_weights())  # kernels have the same layout
    first.compile(jit_compile=True)
    transposed = np.transpose(digits, (0, 3, 1, 2))
    np.testing.assert_allclose(
        first.predict(transposed, verbose=0), last.predict(digits, verbose=0), atol=1e-5
    )
    with pytest.raises(ValueError, match="too small for 3 pooling stages"):
        # (28, 28, 1) read as channels_first: 28 channels of 28x1 pixels.
        AllConvNet(data_format="channels_first")


def test_summary_runs_without_fit():
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        AllConvNet.tutorial("gap").summary()
    assert "56,394" in buffer.getvalue()
