"""`AllConvNet`: a small convolutional classifier with no Dense layer."""

from __future__ import annotations

import keras
from keras import layers

from nin_layers.heads import (
    MODES,
    PointwiseClassifierHead,
    check_choice,
    check_positive_int,
    check_rate,
)


def _check_filters(filters):
    try:
        filters = tuple(filters)
    except TypeError:
        filters = None
    if not filters or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters):
        raise ValueError(
            "Received an invalid value for argument `filters`, expected a "
            "non-empty sequence of integers >= 1, one per conv block. "
            f"Received: filters={filters!r}"
        )
    return filters


def _check_input_shape(input_shape):
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        input_shape = None
    if (
        input_shape is None
        or len(input_shape) != 3
        or any(
            d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1)
            for d in input_shape
        )
    ):
        raise ValueError(
            "Received an invalid value for argument `input_shape`, expected "
            "a tuple (height, width, channels) of positive integers or None "
            "(for channels_first: (channels, height, width)). "
            f"Received: input_shape={input_shape!r}"
        )
    return input_shape


@keras.saving.register_keras_serializable(package="nin_layers")
class AllConvNet(keras.Model):
    """An image classifier made of conv blocks and a `PointwiseClassifierHead`.

    One block per entry of `filters`: a 3x3 convolution with `"same"`
    padding and relu, then 2x2 max pooling. Then a `PointwiseClassifierHead`
    turns the feature map into class scores with 1x1 convolutions and
    global average pooling, after *Network in Network* (Lin et al., 2013,
    https://arxiv.org/abs/1312.4400). There is no Dense layer.

    With its defaults it is the tutorial's "reshape" model (65,354
    parameters); with `head_mode="gap"` and `activation_order=
    "activate_then_pool"` it is the tutorial's "gap" model (56,394
    parameters). `AllConvNet.tutorial("gap")` and
    `AllConvNet.tutorial("reshape")` build those presets.

    The model is a Functional model built at construction, so `summary()`,
    `count_params()` and `load_weights()` work before any `fit()`.

    Subclass it for new data: override `build_backbone(self, x)` to change
    the feature extractor (it receives the preprocessed input tensor and
    returns a rank-4 feature map), and `preprocess(self, x)` to change what
    happens to the raw input. Register the subclass with
    `keras.saving.register_keras_serializable(package="your_package")` and,
    if its `__init__` takes new arguments, extend `get_config()`.

    Args:
        num_classes: int >= 1. Number of classes. Defaults to `10`.
        input_shape: `(height, width, channels)` (or `(channels, height,
            width)` for channels_first); height and width may be `None`.
            Defaults to `(28, 28, 1)`.
        filters: sequence of ints >= 1, the width of each conv block.
            Defaults to `(32, 64, 64)`.
        head_mode: `"reshape"` or `"gap"`, the head's `mode`. Defaults to
            `"reshape"`.
        bottleneck_width: int >= 1, the head's 1x1 bottleneck width in
            `"reshape"` mode. Defaults to `128`.
        activation: output activation, `None` for logits. Defaults to
            `"softmax"`.
        activation_order: the head's `activation_order`. Defaults to
            `"pool_then_activate"`.
        dropout_rate: the head's `dropout_rate`. Defaults to `0.0`.
        rescaling: `None`, or a float by which raw pixels are multiplied
            inside the model (e.g. `1 / 255` to feed uint8 images).
            Defaults to `None`.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras default).
        name: model name. Defaults to `"all_conv_net"`.
        **kwargs: other `keras.Model` arguments, such as `dtype`.

    Input shape:
        `(batch,) + input_shape`.

    Output shape:
        `(batch, num_classes)`.

    Example:

    >>> from nin_layers import AllConvNet
    >>> model = AllConvNet()  # the tutorial's reshape model
    >>> model.count_params()
    65354
    >>> AllConvNet(head_mode="gap").count_params()
    56394
    """

    def __init__(
        self,
        num_classes=10,
        input_shape=(28, 28, 1),
        filters=(32, 64, 64),
        head_mode="reshape",
        bottleneck_width=128,
        activation="softmax",
        activation_order="pool_then_activate",
        dropout_rate=0.0,
        rescaling=None,
        data_format=None,
        name="all_conv_net",
        **kwargs,
    ):
        num_classes = check_positive_int("num_classes", num_classes)
        input_shape = _check_input_shape(input_shape)
        filters = _check_filters(filters)
        head_mode = check_choice("head_mode", head_mode, MODES)
        bottleneck_width = check_positive_int("bottleneck_width", bottleneck_width)
        dropout_rate = check_rate("dropout_rate", dropout_rate)
        if data_format is None:
            data_format = keras.config.image_data_format()
        data_format = check_choice("data_format", data_format, ("channels_last", "channels_first"))
        if rescaling is not None and (
            isinstance(rescaling, bool) or not isinstance(rescaling, (int, float))
        ):
            raise ValueError(
                "Received an invalid value for argument `rescaling`, expected "
                f"None or a number such as 1/255. Received: rescaling={rescaling!r}"
            )
        dtype = kwargs.pop("dtype", None)

        # Attributes that `preprocess` and `build_backbone` read.
        self.num_classes = num_classes
        self.filters = filters
        self.data_format = data_format
        self.rescaling = rescaling
        self._layer_dtype = dtype
        self._check_spatial_size(input_shape)

        inputs = keras.Input(shape=input_shape, name="images")
        x = self.preprocess(inputs)
        features = self.build_backbone(x)
        self._check_features(features, input_shape)
        head = PointwiseClassifierHead(
            num_classes,
            mode=head_mode,
            bottleneck_width=bottleneck_width,
            activation=activation,
            activation_order=activation_order,
            dropout_rate=dropout_rate,
            data_format=data_format,
            dtype=dtype,
            name="head",
        )
        outputs = head(features)
        super().__init__(inputs=inputs, outputs=outputs, name=name, dtype=dtype, **kwargs)

        self.head = head
        self._features = features
        self.image_shape = input_shape
        self.head_mode = head_mode
        self.bottleneck_width = bottleneck_width
        self.activation_order = activation_order
        self.dropout_rate = dropout_rate
        self.output_activation = activation

    # ------------------------------------------------------------ presets
    @classmethod
    def tutorial(cls, mode="reshape", **kwargs):
        """Builds one of the tutorial's two MNIST models exactly.

        `"reshape"`: 1x1 bottleneck of 128 (relu), average pooling, 1x1 conv
        to 10 classes, softmax (65,354 parameters). `"gap"`: 1x1 conv to 10
        classes, softmax at every position, then average pooling (56,394
        parameters). Other keyword arguments override the preset.
        """
        check_choice("mode", mode, MODES)
        preset = {"num_classes": 10, "input_shape": (28, 28, 1), "filters": (32, 64, 64)}
        if mode == "gap":
            preset.update(head_mode="gap", activation_order="activate_then_pool")
        else:
            preset.update(head_mode="reshape", bottleneck_width=128)
        preset.update(kwargs)
        return cls(**preset)

    # ---------------------------------------------------- overridable parts
    def preprocess(self, x):
        """Maps the raw input tensor to the backbone's input.

        By default multiplies by `rescaling` when it is set. Override it to
        add resizing or augmentation layers.
        """
        if self.rescaling is None:
            return x
        return layers.Rescaling(self.rescaling, dtype=self._layer_dtype, name="rescaling")(x)

    def build_backbone(self, x):
        """Builds the feature extractor on tensor `x`, returns a rank-4 map.

        The default is one block per entry of `self.filters`: a 3x3 conv
        (same padding, relu) then 2x2 max pooling. Override it to use
        another feature extractor; the head goes on whatever it returns.
        It runs inside `__init__`, so a subclass sets the attributes it
        reads *before* calling `super().__init__()`. If it pools a different
        number of times than `len(self.filters)`, override
        `num_pooling_stages` too, so that too-small inputs get a clear error.

        Example:

        ```python
        @keras.saving.register_keras_serializable(package="my_project")
        class ColourNet(AllConvNet):
            def __init__(self, use_batchnorm=True, **kwargs):
                self.use_batchnorm = use_batchnorm  # read by build_backbone
                kwargs.setdefault("input_shape", (32, 32, 3))
                kwargs.setdefault("rescaling", 1 / 255)  # feed uint8 pixels
                super().__init__(**kwargs)

            def build_backbone(self, x):
                for width in self.filters:
                    x = keras.layers.Conv2D(width, 3, padding="same")(x)
                    if self.use_batchnorm:
                        x = keras.layers.BatchNormalization()(x)
                    x = keras.layers.ReLU()(x)
                    x = keras.layers.MaxPooling2D(2)(x)
                return x

            def get_config(self):
                return {**super().get_config(),
                        "use_batchnorm": self.use_batchnorm}
        ```
        """
        for index, width in enumerate(self.filters, start=1):
            x = layers.Conv2D(
                width,
                3,
                padding="same",
                activation="relu",
                data_format=self.data_format,
                dtype=self._layer_dtype,
                name=f"block{index}_conv",
            )(x)
            x = layers.MaxPooling2D(
                2,
                data_format=self.data_format,
                dtype=self._layer_dtype,
                name=f"block{index}_pool",
            )(x)
        return x

    @property
    def num_pooling_stages(self):
        """How many 2x2 poolings `build_backbone` applies (for size checks)."""
        return len(self.filters)

    def _check_spatial_size(self, input_shape):
        spatial = input_shape[:2] if self.data_format == "channels_last" else input_shape[1:]
        stages = self.num_pooling_stages
        for size in spatial:
            if size is None:
                continue
            remaining = size
            for _ in range(stages):
                remaining //= 2
            if remaining < 1:
                raise ValueError(
                    f"Received an input too small for {stages} pooling "
                    f"stages: each 2x2 max pooling halves height and width, "
                    f"so the input needs at least {2**stages} pixels per "
                    f"side. Received: input_shape={input_shape}, "
                    f"filters={self.filters}. Use fewer entries in `filters` "
                    "or a larger input."
                )

    def _check_features(self, features, input_shape):
        """Checks that `build_backbone` returned a usable rank-4 map."""
        shape = tuple(getattr(features, "shape", ()))
        if len(shape) != 4:
            raise ValueError(
                "`build_backbone()` must return a rank-4 feature map "
                "(batch, height, width, channels) for the head. "
                f"Received: a tensor of shape {shape} for input_shape={input_shape}"
            )
        spatial = shape[1:3] if self.data_format == "channels_last" else shape[2:]
        if any(size is not None and size < 1 for size in spatial):
            raise ValueError(
                "Received an input too small for the backbone: its feature "
                f"map would have shape {shape}, with no pixels left for the "
                f"head. Received: input_shape={input_shape}. Use a larger "
                "input or fewer pooling stages."
            )

    # ------------------------------------------------------------- extras
    def feature_extractor(self):
        """Returns a `keras.Model` from the images to the head's input."""
        return keras.Model(self.input, self._features, name=f"{self.name}_features")

    def class_activation_maps(self, images):
        """Class activation maps (Zhou et al., 2016) of a batch of images.

        Returns the head's class scores at every position of the last
        feature map, `(batch, h, w, num_classes)` for channels_last.
        """
        features = self.feature_extractor()(images, training=False)
        return self.head.class_activation_maps(features)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            # A Functional model ignores its own `dtype`; the layers hold it.
            "dtype": keras.dtype_policies.serialize(self.head.dtype_policy),
            # The head's count, which `head.reset()` may have changed.
            "num_classes": self.head.num_classes,
            "input_shape": self.image_shape,
            "filters": self.filters,
            "head_mode": self.head_mode,
            "bottleneck_width": self.bottleneck_width,
            "activation": keras.activations.serialize(self.head.activation),
            "activation_order": self.activation_order,
            "dropout_rate": self.dropout_rate,
            "rescaling": self.rescaling,
            "data_format": self.data_format,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("input_shape", "filters"):
            if key in config and config[key] is not None:
                config[key] = tuple(config[key])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)
