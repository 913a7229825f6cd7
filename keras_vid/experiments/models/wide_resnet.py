"""CIFAR-style Wide ResNet (Zagoruyko & Komodakis, 2016), the paper's models.

WRN-d-k has 3 groups of (d − 4) / 6 pre-activation basic blocks with
16k, 32k and 64k channels (strides 1, 2, 2). Layer names are stable so VID
pairs can be written by hand:

- `group1`, `group2`, `group3`: the residual stream at the end of each group
  (the last block's `Add`, before the next BN-ReLU), as used by the
  reference implementations for VID-I;
- `pool`: the penultimate vector (global average pool after the final
  BN-ReLU);
- `logits`: the classifier output (no softmax).
"""

import keras


def _block(x, channels, stride, dropout, weight_decay, bn_momentum, name):
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    conv = dict(
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
    )
    pre = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(x)
    pre = keras.layers.ReLU(name=f"{name}_relu1")(pre)
    equal = x.shape[-1] == channels and stride == 1
    shortcut = (
        x
        if equal
        else keras.layers.Conv2D(channels, 1, strides=stride, name=f"{name}_shortcut", **conv)(pre)
    )
    y = keras.layers.Conv2D(channels, 3, strides=stride, name=f"{name}_conv1", **conv)(pre)
    y = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = keras.layers.Conv2D(channels, 3, name=f"{name}_conv2", **conv)(y)
    return keras.layers.Add(name=name)([shortcut, y])


def wide_resnet(
    depth=16,
    width=1,
    num_classes=10,
    input_shape=(32, 32, 3),
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.9,
    normalize=None,
    name=None,
):
    """Build a functional pre-activation WRN-`depth`-`width`.

    The layers named in `GROUP_OUTPUTS` (`group1..3`), `pool` and `logits`
    are the stable feature points for VID pairs (see the module docstring).

    Args:
        depth: int, total depth, `6n + 4` with n ≥ 1 (10, 16, 22, 28, 40,
            ...; anything else raises `ValueError`). Defaults to `16`.
        width: int ≥ 1, widening factor k (channels 16k, 32k, 64k).
            Defaults to `1`.
        num_classes: int, size of the `logits` layer. Defaults to `10`.
        input_shape: channels-last input shape. Defaults to `(32, 32, 3)`.
        dropout: float in `[0, 1)`, dropout rate between the two
            convolutions of each block (0: none). Defaults to `0.0`.
        weight_decay: float ≥ 0, L2 factor on convolution and dense kernels
            (0: none; optimizers' `weight_decay` is the usual alternative).
            Defaults to `0.0`.
        bn_momentum: float in `[0, 1)`, BatchNorm moving-average momentum;
            the default 0.9 matches the PyTorch reference implementations
            (Keras's 0.99 lags in short runs).
        normalize: `None` (the default: inputs arrive normalised) or
            `(mean, std)` per channel, applied inside the model by a
            `Normalization` layer named `normalize`, so the model takes raw
            pixels.
        name: model name, a string; `None` (the default) gives
            `"wrn_<depth>_<width>"`.

    Returns:
        A `keras.Model` mapping images to logits.

    Example:

    ```python
    import numpy as np
    from keras_vid.experiments.models import GROUP_OUTPUTS, wide_resnet

    model = wide_resnet(depth=10, width=1, num_classes=3, input_shape=(8, 8, 3))
    model.name  # "wrn_10_1"
    [model.get_layer(g).output.shape for g in GROUP_OUTPUTS]
    # [(None, 8, 8, 16), (None, 4, 4, 32), (None, 2, 2, 64)]
    model(np.zeros((2, 8, 8, 3), "float32")).shape  # (2, 3)
    ```
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"WRN depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 40...). Received: depth={depth}"
        )
    if width < 1:
        raise ValueError(f"WRN width must be ≥ 1. Received: width={width}")
    blocks = (depth - 4) // 6
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if normalize is not None:
        mean, std = normalize
        if len(mean) != input_shape[-1] or len(std) != input_shape[-1]:
            raise ValueError(
                f"normalize needs one mean and one std per input channel "
                f"({input_shape[-1]}). Received: normalize={normalize!r}"
            )
        variance = [s * s for s in std]
        x = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")(x)
    x = keras.layers.Conv2D(
        16,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name="stem",
    )(x)
    for group, (channels, stride) in enumerate(
        ((16 * width, 1), (32 * width, 2), (64 * width, 2)), start=1
    ):
        for block in range(blocks):
            last = block == blocks - 1
            x = _block(
                x,
                channels,
                stride if block == 0 else 1,
                dropout,
                weight_decay,
                bn_momentum,
                name=f"group{group}" if last else f"group{group}_block{block + 1}",
            )
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name="final_bn")(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{width}")


GROUP_OUTPUTS = ("group1", "group2", "group3")
"""Names of the three group outputs of `wide_resnet` models (VID-I pairs)."""
