"""Tests of `nin_layers.PointwiseClassifierHead`."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from testing import (
    MIXED_ATOL,
    MIXED_POLICIES,
    dtype_name,
    numpy_head,
    run_layer_test,
    to_numpy,
)

import nin_layers
from nin_layers import PointwiseClassifierHead

BATCH, HEIGHT, WIDTH, CHANNELS, CLASSES = 3, 4, 5, 6, 7
ORDERS = ("pool_then_activate", "activate_then_pool")
MODES = ("gap", "reshape")


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(BATCH, HEIGHT, WIDTH, CHANNELS)).astype("float32")


def make_head(mode="gap", **kwargs):
    kwargs.setdefault("bottleneck_width", 8)
    # Random biases, so that the numerical checks also cover them.
    kwargs.setdefault("bias_initializer", "random_normal")
    return PointwiseClassifierHead(CLASSES, mode=mode, **kwargs)


# ------------------------------------------------------------ API surface
def test_exported_and_registered():
    assert nin_layers.PointwiseClassifierHead is PointwiseClassifierHead
    name = keras.saving.get_registered_name(PointwiseClassifierHead)
    assert name == "nin_layers>PointwiseClassifierHead"
    assert keras.saving.get_registered_object(name) is PointwiseClassifierHead


def test_defaults():
    head = PointwiseClassifierHead(10)
    config = head.get_config()
    assert config["mode"] == "gap"
    assert config["bottleneck_width"] == 128
    assert config["activation"] == "softmax"
    assert config["dropout_rate"] == 0.0
    assert config["activation_order"] == "pool_then_activate"
    assert config["data_format"] == keras.config.image_data_format()


# ------------------------------------------ standard layer checks per option
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ORDERS)
def test_layer_checks(mode, order, features, tmp_path):
    """Shapes, config, dynamic H/W, .keras, jit and mixed precision."""
    output = run_layer_test(
        PointwiseClassifierHead,
        {
            "num_classes": CLASSES,
            "mode": mode,
            "bottleneck_width": 8,
            "activation_order": order,
            "bias_initializer": "random_normal",
        },
        features,
        (BATCH, CLASSES),
        tmp_path=tmp_path,
        expected_num_trainable_weights=2 if mode == "gap" else 4,
    )
    # Softmax output: a probability distribution per example.
    np.testing.assert_allclose(output.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activation": None},
        {"activation": "sigmoid", "mode": "reshape", "bottleneck_activation": "tanh"},
        {"dropout_rate": 0.5, "use_bias": False},
        {"kernel_regularizer": "l2", "mode": "reshape"},
    ],
    ids=["logits", "sigmoid-tanh", "dropout-nobias", "regularizer"],
)
def test_layer_checks_options(kwargs, features, tmp_path):
    kwargs = {"num_classes": CLASSES, "bottleneck_width": 8, **kwargs}
    run_layer_test(
        PointwiseClassifierHead,
        kwargs,
        features,
        (BATCH, CLASSES),
        tmp_path=tmp_path,
        run_jit_check=False,
        run_mixed_precision_check=False,
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("gap", CHANNELS * CLASSES + CLASSES), ("reshape", CHANNELS * 8 + 8 + 8 * CLASSES + CLASSES)],
)
def test_parameter_count(mode, expected, features):
    head = make_head(mode)
    head(features)
    assert head.count_params() == expected


# ------------------------------------------------------------- numerics
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("activation", ["softmax", None, "sigmoid"])
def test_matches_numpy(mode, order, activation, features):
    head = make_head(mode, activation_order=order, activation=activation)
    output = to_numpy(head(features))
    expected, class_maps = numpy_head(head, features, activation=activation)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(head.class_activation_maps(features)), class_maps, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "gap", "use_bias": False},
        {"mode": "reshape", "use_bias": False, "activation_order": "activate_then_pool"},
        {"mode": "reshape", "bottleneck_activation": "tanh"},
        {"mode": "reshape", "dropout_rate": 0.5},
        {"mode": "gap", "dropout_rate": 0.5, "activation_order": "activate_then_pool"},
    ],
    ids=[
        "gap-nobias",
        "reshape-nobias-tutorial-order",
        "tanh-bottleneck",
        "reshape-dropout",
        "gap-dropout",
    ],
)
def test_matches_numpy_options(kwargs, features):
    """Options that change the computation; dropout is off at inference."""
    head = make_head(**kwargs)
    output = to_numpy(head(features))
    expected, _ = numpy_head(
        head, features, bottleneck_activation=kwargs.get("bottleneck_activation", "relu")
    )
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    if not kwargs.get("use_bias", True):
        assert all("bias" not in w.path for w in head.weights)


def test_activation_orders_differ(features):
    """The two orders are one argument apart and give different outputs."""
    paper = make_head("gap")
    tutorial = make_head("gap", activation_order="activate_then_pool")
    paper(features)
    tutorial(features)
    tutorial.set_weights(paper.get_weights())
    a, b = to_numpy(paper(features)), to_numpy(tutorial(features))
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(b.sum(-1), 1.0, atol=1e-5)
    assert np.abs(a - b).max() > 1e-3


def test_callable_activation(features):
    head = make_head("gap", activation=keras.activations.log_softmax)
    out = to_numpy(head(features))
    logits = to_numpy(make_head_logits_like(head, features))
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert head.get_config()["activation"] == "log_softmax"


def make_head_logits_like(head, features):
    """The head's pre-activation output: the spatial mean of its CAMs."""
    return ops.mean(head.class_activation_maps(features), axis=(1, 2))


@pytest.mark.parametrize("mode", MODES)
def test_dropout_only_in_training(mode, features):
    head = make_head(mode, dropout_rate=0.5)
    inference = to_numpy(head(features))
    np.testing.assert_array_equal(to_numpy(head(features, training=False)), inference)
    trained = to_numpy(head(features, training=True))
    assert np.abs(trained - inference).max() > 1e-4


def test_regularizer_adds_losses(features):
    head = make_head("reshape", kernel_regularizer=keras.regularizers.L2(0.1))
    head(features)
    assert len(head.losses) == 2
    kernels = [head.bottleneck.kernel, head.classifier.kernel]
    expected = sum(0.1 * float(np.sum(to_numpy(k) ** 2)) for k in kernels)
    np.testing.assert_allclose(sum(float(to_numpy(x)) for x in head.losses), expected, rtol=1e-5)


# ------------------------------------------------- class activation maps
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ORDERS)
def test_class_activation_map_identity(mode, order, features):
    """The spatial mean of the CAMs is the head's pre-activation output."""
    head = make_head(mode, activation_order=order)
    logits_head = make_head(mode, activation_order=order, activation=None)
    head(features)
    logits_head(features)
    logits_head.set_weights(head.get_weights())

    maps = head.class_activation_maps(features)
    assert tuple(maps.shape) == (BATCH, HEIGHT, WIDTH, CLASSES)
    assert dtype_name(maps) == "float32"
    mean_maps = to_numpy(ops.mean(maps, axis=(1, 2)))
    if order == "pool_then_activate":
        np.testing.assert_allclose(mean_maps, to_numpy(logits_head(features)), atol=1e-5)
        np.testing.assert_allclose(
            to_numpy(ops.softmax(mean_maps)), to_numpy(head(features)), atol=1e-6
        )
    else:
        # Activation at every position, then the mean.
        probs = to_numpy(ops.mean(ops.softmax(maps, axis=-1), axis=(1, 2)))
        np.testing.assert_allclose(probs, to_numpy(head(features)), atol=1e-6)
    np.testing.assert_allclose(mean_maps, to_numpy(logits_head(features)), atol=1e-5)


def test_class_activation_maps_before_call_builds(features):
    head = make_head("reshape")
    maps = head.class_activation_maps(features)
    assert head.built
    assert tuple(maps.shape) == (BATCH, HEIGHT, WIDTH, CLASSES)
    assert all(w.path.startswith(head.name + "/") for w in head.weights)
    np.testing.assert_allclose(
        to_numpy(ops.softmax(ops.mean(maps, axis=(1, 2)))), to_numpy(head(features)), atol=1e-6
    )


# -------------------------------------------------- pre_logits and reset
@pytest.mark.parametrize(("mode", "width"), [("gap", CHANNELS), ("reshape", 8)])
def test_pre_logits(mode, width, features):
    head = make_head(mode, activation=None)
    embedding = to_numpy(head.pre_logits(features))
    assert embedding.shape == (BATCH, width)
    if mode == "gap":
        np.testing.assert_allclose(embedding, features.mean(axis=(1, 2)), atol=1e-6)
    else:
        bottleneck = np.maximum(
            features @ to_numpy(head.bottleneck.kernel)[0, 0] + to_numpy(head.bottleneck.bias), 0
        )
        np.testing.assert_allclose(embedding, bottleneck.mean(axis=(1, 2)), atol=1e-5)
    # The last 1x1 convolution on the embedding gives the logits.
    kernel = to_numpy(head.classifier.kernel)[0, 0]
    logits = embedding @ kernel + to_numpy(head.classifier.bias)
    np.testing.assert_allclose(logits, to_numpy(head(features)), atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_reset_after_build(mode, features, tmp_path):
    head = make_head(mode)
    head(features)
    bottleneck_before = [to_numpy(w) for w in head.weights[:-2]]
    old_kernel = head.classifier.kernel
    head.reset(3)

    assert head.num_classes == 3
    assert tuple(head(features).shape) == (BATCH, 3)
    assert head.compute_output_shape(features.shape) == (BATCH, 3)
    assert head.get_config()["num_classes"] == 3
    assert all(w is not old_kernel for w in head.weights)
    assert len(head.weights) == (2 if mode == "gap" else 4)
    expected_params = (CHANNELS if mode == "gap" else 8) * 3 + 3
    if mode == "reshape":
        expected_params += CHANNELS * 8 + 8
    assert head.count_params() == expected_params
    # The bottleneck keeps its trained weights.
    for before, after in zip(bottleneck_before, head.weights[:-2], strict=True):
        np.testing.assert_array_equal(before, to_numpy(after))
    assert all(w.path.startswith(head.name + "/") for w in head.weights)
    if mode == "gap":
        return

    # It trains and saves with the new classifier.
    inputs = keras.Input((None, None, CHANNELS))
    model = keras.Model(inputs, head(inputs))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(features, np.array([0, 1, 2]), epochs=1, verbose=0)
    path = tmp_path / "reset.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        reloaded.predict(features, verbose=0), model.predict(features, verbose=0)
    )


def test_reset_before_build_and_errors(features):
    head = make_head("gap")
    head.reset(2)
    assert tuple(head(features).shape) == (BATCH, 2)
    with pytest.raises(ValueError, match=r"num_classes.*>= 1.*Received: num_classes=0"):
        head.reset(0)
    with pytest.raises(ValueError, match=r"softmax.*always 1.0"):
        head.reset(1)
    assert head.num_classes == 2
    assert tuple(head(features).shape) == (BATCH, 2)


@pytest.mark.parametrize("mode", MODES)
def test_single_output_binary_head(mode, features):
    head = PointwiseClassifierHead(1, mode=mode, bottleneck_width=4, activation="sigmoid")
    output = to_numpy(head(features))
    assert output.shape == (BATCH, 1)
    assert ((output > 0) & (output < 1)).all()
    assert np.ptp(output) > 0


# --------------------------------------------- models of every kind, shapes
@pytest.mark.parametrize("mode", MODES)
def test_in_sequential_model(mode, features):
    model = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu"),
            make_head(mode),
        ]
    )
    assert model.output_shape == (None, CLASSES)
    images = features[..., :1]
    assert model.predict(images, verbose=0).shape == (BATCH, CLASSES)
    assert model.predict(np.tile(images, (1, 3, 2, 1)), verbose=0).shape == (BATCH, CLASSES)


class SubclassedClassifier(keras.Model):
    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu")
        self.head = make_head(mode, dropout_rate=0.1)

    def call(self, inputs, training=None):
        return self.head(self.conv(inputs), training=training)


@pytest.mark.parametrize("mode", MODES)
def test_in_subclassed_model(mode, features):
    model = SubclassedClassifier(mode)
    images = features[..., :1]
    assert model(images).shape == (BATCH, CLASSES)
    assert model(np.tile(images, (1, 2, 2, 1))).shape == (BATCH, CLASSES)
    if mode == "reshape":
        model.compile("adam", "sparse_categorical_crossentropy")
        history = model.fit(images, np.array([0, 1, 2]), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("height_width", [(1, 1), (2, 9), (None, None)])
def test_compute_output_shape_exact(height_width):
    head = make_head("reshape")
    shape = (None, *height_width, CHANNELS)
    assert head.compute_output_shape(shape) == (None, CLASSES)
    symbolic = head(keras.Input(shape[1:], batch_size=4))
    assert tuple(symbolic.shape) == (4, CLASSES)
    assert dtype_name(symbolic) == "float32"


# -------------------------------------------------------- mixed precision
@pytest.mark.parametrize("policy", MIXED_POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_mixed_precision_float32_head(policy, mode, features, dtype_policy):
    reference = make_head(mode)
    expected = to_numpy(reference(features))
    dtype_policy(policy)
    head = make_head(mode)
    head(features)
    head.set_weights(reference.get_weights())
    assert head.compute_dtype == policy.split("_")[1]
    if mode == "reshape":
        assert head.bottleneck.compute_dtype == policy.split("_")[1]
    # The class scores are computed in float32.
    assert head.classifier.compute_dtype == "float32"
    assert all(dtype_name(w) == "float32" for w in head.weights)
    output = head(features)
    assert dtype_name(output) == "float32"
    assert dtype_name(head.class_activation_maps(features)) == "float32"
    np.testing.assert_allclose(to_numpy(output), expected, atol=MIXED_ATOL[policy])

    inputs = keras.Input((None, None, CHANNELS))
    symbolic = head(inputs)
    assert dtype_name(symbolic) == "float32"
    model = keras.Model(inputs, symbolic)
    # `predict` runs a compiled graph, the call above runs eagerly: with
    # bfloat16 on AMX the two pick different oneDNN kernels (seen: 2.7e-4 apart).
    np.testing.assert_allclose(
        model.predict(features, verbose=0), to_numpy(output), atol=MIXED_ATOL[policy]
    )


def test_explicit_float64_dtype(features):
    head = make_head("reshape", dtype="float64")
    output = head(features.astype("float64"))
    assert dtype_name(output) == "float64"
    expected, _ = numpy_head(head, features)
    np.testing.assert_allclose(to_numpy(output), expected, atol=1e-10)


# ---------------------------------------------------------- channels_first
# TensorFlow's Conv2D has no NCHW kernel on CPU in eager mode ("The Conv2D
# op currently only supports the NHWC tensor format on the CPU"), while XLA
# compiles it; so the channels_first path runs under jit_compile=True here
# (on a GPU it also runs eagerly).
def _channels_first_model(head):
    inputs = keras.Input((CHANNELS, None, None))
    model = keras.Model(inputs, head(inputs))
    model.compile(jit_compile=True)
    return model


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ORDERS)
def test_channels_first_matches_channels_last(mode, order, features):
    last = make_head(mode, activation_order=order)
    expected = to_numpy(last(features))
    first = make_head(mode, activation_order=order, data_format="channels_first")
    transposed = np.transpose(features, (0, 3, 1, 2))
    assert first.compute_output_shape(transposed.shape) == (BATCH, CLASSES)
    model = _channels_first_model(first)
    first.set_weights(last.get_weights())  # 1x1 kernels have the same layout
    np.testing.assert_allclose(model.predict(transposed, verbose=0), expected, atol=1e-5)

    maps_fn = tf.function(first.class_activation_maps, jit_compile=True)
    maps = to_numpy(maps_fn(transposed))
    assert maps.shape == (BATCH, CLASSES, HEIGHT, WIDTH)
    np.testing.assert_allclose(
        np.transpose(maps, (0, 2, 3, 1)), to_numpy(last.class_activation_maps(features)), atol=1e-5
    )


def test_channels_first_from_global_setting(features):
    keras.config.set_image_data_format("channels_first")
    head = make_head("reshape")
    assert head.data_format == "channels_first"
    assert head.get_config()["data_format"] == "channels_first"
    model = _channels_first_model(head)
    transposed = np.transpose(features, (0, 3, 1, 2))
    assert model.predict(transposed, verbose=0).shape == (BATCH, CLASSES)
    with pytest.raises(ValueError, match="channels"):
        head.compute_output_shape((None, None, 3, 3))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"mode": "dense"},
            r"`mode`, expected one of \"gap\", \"reshape\". Received: mode='dense'",
        ),
        ({"mode": None}, r"`mode`.*Received: mode=None"),
        ({"num_classes": 0}, r"`num_classes`, expected an integer >= 1. Received: num_classes=0"),
        ({"num_classes": 2.5}, r"`num_classes`.*Received: num_classes=2.5"),
        ({"num_classes": True}, r"`num_classes`.*Received: num_classes=True"),
        ({"bottleneck_width": 0}, r"`bottleneck_width`.*>= 1.*Received: bottleneck_width=0"),
        ({"bottleneck_width": -3}, r"`bottleneck_width`.*Received: bottleneck_width=-3"),
        ({"dropout_rate": 1.0}, r"`dropout_rate`, expected a float in \[0, 1\).*=1.0"),
        ({"dropout_rate": -0.1}, r"`dropout_rate`.*Received: dropout_rate=-0.1"),
        ({"dropout_rate": "0.5"}, r"`dropout_rate`.*Received: dropout_rate='0.5'"),
        ({"activation_order": "random"}, r"`activation_order`.*pool_then_activate.*'random'"),
        ({"data_format": "NHWC"}, r"`data_format`.*channels_last.*Received: data_format='NHWC'"),
        ({"activation": "nonexistent"}, r"`activation`.*Received: activation='nonexistent'"),
        ({"bottleneck_activation": 3}, r"`bottleneck_activation`.*bottleneck_activation=3"),
        ({"num_classes": 1}, r"num_classes=1 with activation=\"softmax\".*always 1.0"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        PointwiseClassifierHead(**kwargs)


@pytest.mark.parametrize("shape", [(2, 8), (2, 4, 8), (2, 1, 4, 4, 8)])
def test_wrong_rank_eager(shape):
    head = PointwiseClassifierHead(3)
    with pytest.raises(ValueError, match=r"rank-4 feature map") as info:
        head(np.zeros(shape, "float32"))
    assert f"Received: input_shape={shape} (rank {len(shape)})" in str(info.value)


def test_wrong_rank_in_models():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, 8\) \(rank 2\)"):
        keras.Sequential([keras.Input((8,)), PointwiseClassifierHead(3)])
    inputs = keras.Input((5, 5, 8))
    flat = keras.layers.GlobalAveragePooling2D()(inputs)
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, 8\)"):
        PointwiseClassifierHead(3)(flat)
    with pytest.raises(ValueError, match=r"rank-4.*\(3, 8\)"):
        PointwiseClassifierHead(3).class_activation_maps(np.zeros((3, 8), "float32"))


def test_unknown_channels_and_channel_mismatch(features):
    with pytest.raises(ValueError, match=r"known number of channels.*None, None, None"):
        PointwiseClassifierHead(3).build((None, None, None, None))
    head = make_head("gap")
    head(features)
    with pytest.raises(ValueError, match=rf"axis -1 .* value {CHANNELS}"):
        head(np.zeros((1, 3, 3, CHANNELS + 1), "float32"))
