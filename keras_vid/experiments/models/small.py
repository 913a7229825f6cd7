"""Small CNN and MLP builders for CPU-scale experiments and CNN → MLP transfer.

Layer names are stable so VID pairs can be written by hand:

- `small_cnn`: `block1`, `block2`, ... (the ReLU output of each stage, before
  its pooling), `block<k>_bn<n>` (stage k's last BatchNormalization: the same
  feature before its ReLU), `pool` (global average pool), `logits`;
- `mlp`: `hidden1`, `hidden2`, ... (post-activation hidden layers), `logits`.
"""

import keras


def _regularizer(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def small_cnn(
    filters=(32, 64, 128),
    convs_per_block=1,
    num_classes=10,
    input_shape=(28, 28, 1),
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.9,
    name=None,
):
    """Build a plain VGG-style CNN: per stage, conv3×3-BN-ReLU × n, then 2×2 max-pool.

    Stage k ends in a layer named `block<k>` (its last ReLU), whose spatial
    size halves from one stage to the next (the max-pool sits after it), so
    `block1..3` play the role of a WRN's group outputs for VID-I and AT.

    Args:
        filters: non-empty sequence of ints, the channels of each stage (one
            stage per entry). Defaults to `(32, 64, 128)`.
        convs_per_block: int ≥ 1, convolutions per stage. Defaults to `1`.
        num_classes: int, size of the `logits` layer. Defaults to `10`.
        input_shape: channels-last input shape `(height, width, channels)`.
            Defaults to `(28, 28, 1)`.
        dropout: float in `[0, 1)`, dropout rate before the classifier
            (0: no `Dropout` layer). Defaults to `0.0`.
        weight_decay: float ≥ 0, L2 factor on kernels (0: none; the
            optimizer's `weight_decay` is the usual alternative). Defaults
            to `0.0`.
        bn_momentum: float in `[0, 1)`, BatchNormalization momentum; the
            default 0.9 matches PyTorch's default (0.1 there), so the moving
            statistics settle within the few hundred steps of a small-data
            run (Keras's 0.99 does not).
        name: model name, a string; `None` (the default) gives
            `"cnn_<f1>_<f2>..."`.

    Returns:
        A functional `keras.Model` mapping images to logits.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.models import small_cnn

    model = small_cnn(filters=(8, 16), num_classes=3, input_shape=(8, 8, 1))
    model.name  # "cnn_8_16"
    model.get_layer("block2").output.shape  # (None, 4, 4, 16)
    model(np.zeros((2, 8, 8, 1), "float32")).shape  # (2, 3)
    ```
    """
    if not filters or convs_per_block < 1:
        raise ValueError(
            "`filters` must be non-empty and `convs_per_block` ≥ 1. Received: "
            f"filters={filters!r}, convs_per_block={convs_per_block!r}"
        )
    regularizer = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for stage, channels in enumerate(filters, start=1):
        if stage > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{stage - 1}_pool")(x)
        for conv in range(1, convs_per_block + 1):
            x = keras.layers.Conv2D(
                channels,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                kernel_regularizer=regularizer,
                name=f"block{stage}_conv{conv}",
            )(x)
            x = keras.layers.BatchNormalization(
                momentum=bn_momentum, name=f"block{stage}_bn{conv}"
            )(x)
            last = conv == convs_per_block
            x = keras.layers.ReLU(name=f"block{stage}" if last else f"block{stage}_relu{conv}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    default = "cnn_" + "_".join(str(f) for f in filters)
    return keras.Model(inputs, outputs, name=name or default)


def cnn_block_names(filters, convs_per_block=1, pre_activation=False):
    """Names of the stage outputs of a `small_cnn` built with `filters`.

    Handy for writing VID-I or attention-transfer pairs without building the
    model: stage k of `small_cnn` ends in a layer named `block<k>` (its last
    ReLU). With `pre_activation=True` the names are those of the
    BatchNormalization before that ReLU (`block<k>_bn<convs_per_block>`): the
    same feature with its negative part, which a Gaussian q(t|s) models far
    better than a post-ReLU map that is mostly exact zeros (see
    `results/cifar10/README.md`).

    Args:
        filters: the sequence of per-stage channel counts passed to
            `small_cnn` (only its length matters). No default.
        convs_per_block: int ≥ 1, as passed to `small_cnn`. Defaults to `1`.
        pre_activation: bool, name the features before the stages' last
            ReLU. Defaults to `False`.

    Returns:
        A tuple of strings, `("block1", ..., "block<len(filters)>")`, or
        `("block1_bn<n>", ...)` with `pre_activation=True`.

    Example:

    ```python
    from keras_vid.experiments.models import cnn_block_names, small_cnn

    cnn_block_names((32, 64, 128))  # ("block1", "block2", "block3")
    cnn_block_names((32, 64), pre_activation=True)  # ("block1_bn1", "block2_bn1")
    model = small_cnn(filters=(8, 16), input_shape=(8, 8, 1))
    [model.get_layer(name).output.shape for name in cnn_block_names((8, 16))]
    ```
    """
    suffix = f"_bn{convs_per_block}" if pre_activation else ""
    return tuple(f"block{stage}{suffix}" for stage in range(1, len(filters) + 1))


def mlp(
    hidden_units=(256, 256),
    num_classes=10,
    input_shape=(28, 28, 1),
    dropout=0.0,
    weight_decay=0.0,
    name=None,
):
    """Build a multi-layer perceptron on flattened images.

    Hidden layer k is named `hidden<k>` (Dense + ReLU, post-activation), the
    student side of CNN → MLP transfer: a `VIDHead` maps it onto a teacher
    feature map with a Dense layer and a reshape.

    Args:
        hidden_units: sequence of ints, the width of each hidden layer (one
            layer per entry; empty gives a linear classifier). Defaults to
            `(256, 256)`.
        num_classes: int, size of the `logits` layer. Defaults to `10`.
        input_shape: input shape, any rank (flattened first). Defaults to
            `(28, 28, 1)`.
        dropout: float in `[0, 1)`, dropout rate after each hidden layer
            (0: no `Dropout` layers). Defaults to `0.0`.
        weight_decay: float ≥ 0, L2 factor on kernels (0: none). Defaults
            to `0.0`.
        name: model name, a string; `None` (the default) gives
            `"mlp_<u1>_<u2>..."`.

    Returns:
        A functional `keras.Model` mapping inputs to logits.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.models import mlp

    model = mlp(hidden_units=(16,), num_classes=3, input_shape=(8, 8, 1))
    model.name  # "mlp_16"
    model.get_layer("hidden1").output.shape  # (None, 16)
    model(np.zeros((2, 8, 8, 1), "float32")).shape  # (2, 3)
    ```
    """
    regularizer = _regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"hidden{index}"
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"hidden{index}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    default = "mlp_" + "_".join(str(u) for u in hidden_units)
    return keras.Model(inputs, outputs, name=name or default)
