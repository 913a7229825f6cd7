"""An airbench-style CIFAR network: a fast-training strong teacher on a CPU.

The architecture follows Keller Jordan's airbench94 (94 % on CIFAR-10 in
about 10 epochs): a fixed 2×2 patch-whitening convolution, then three groups
of [conv → max-pool → BN → GELU → conv → BN → GELU], a global max-pool and a
bias-free linear layer scaled by 1/9. With `residual=True` each group has a
third conv and a shortcut over its last two (airbench96's groups:
[conv → max-pool → BN → GELU] = x0, then x0 + [conv → BN → GELU → conv → BN],
then GELU), the variant that reaches 96 % on the original images.
Written for Keras from the published description; differences: the whitening
convolution is padded ("same"), so the groups' maps are 32/16/8/4 like the
small students' stages, and the input is raw RGB in [0, 255] (the
normalisation is the first layer), so a saved teacher needs no preprocessing.

Layer names: `block<k>` (group k's output, after its last GELU),
`block<k>_shift2` (the same feature before that GELU; `block<k>_residual`
in the residual variant), `pool`, `logits`.
"""

import keras
import numpy as np

from keras_vid.layers import DiracUniform, PatchWhitening, ScaledShift

# Per-channel mean and std of CIFAR-10's training images on the 0-255 scale.
CIFAR10_MEAN = (125.3, 123.0, 113.9)
CIFAR10_STD = (63.0, 62.1, 66.7)


def airbench_block_names(groups=3, pre_activation=False, residual=False):
    """The names of each group's output (`block<k>`), or with
    `pre_activation=True` of the same feature before its last GELU."""
    before = "_residual" if residual else "_shift2"
    return tuple(f"block{k}{before if pre_activation else ''}" for k in range(1, groups + 1))


def airbench(
    widths=(64, 256, 256),
    num_classes=10,
    input_shape=(32, 32, 3),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    bn_momentum=0.6,
    residual=False,
    seed=0,
    name=None,
):
    """Build an airbench-style network mapping raw RGB (0-255) to logits.

    Args:
        widths: channels of the conv groups (airbench94: 64, 256, 256;
            airbench95: 128, 384, 384).
        num_classes: size of the `logits` layer.
        input_shape: channels-last image shape.
        mean, std: per-channel statistics of the training images (0-255
            scale); the model normalises its input with them.
        bn_momentum: BatchNormalization momentum (Keras convention; 0.6 as
            airbench94).
        residual: three convs per group with a shortcut over the last two
            (airbench96: widths 128, 512, 512).
        seed: seed of the convolution initialisers.
        name: model name (default `"airbench_<w1>_<w2>..."`, with `"_res"`
            appended when residual).

    Returns:
        A functional `keras.Model`. Call `model.get_layer("whiten").set_whitening(x)`
        with normalised training images before training (see
        `keras_vid.experiments.fast_teacher`).

    Example:

    ```python
    from keras_vid.experiments.models.airbench import airbench

    teacher = airbench((64, 256, 256))
    teacher.summary()
    ```
    """
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"airbench: `widths` must be positive integers. Received: {widths!r}")
    inputs = keras.Input(input_shape, name="image")
    variance = [s * s for s in std]
    x = keras.layers.Normalization(mean=list(mean), variance=variance, name="normalize")(inputs)
    x = PatchWhitening(2, name="whiten")(x)
    x = keras.layers.Activation("gelu", name="whiten_act")(x)
    counter = iter(range(10_000))

    def conv_bn(x, k, n, width):  # conv (→ max-pool) → BN → shift: conv n of group k
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=DiracUniform(seed + next(counter)),
            name=f"block{k}_conv{n}",
        )(x)
        if n == 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{k}_pool")(x)
        x = keras.layers.BatchNormalization(
            momentum=bn_momentum, center=False, scale=False, name=f"block{k}_bn{n}"
        )(x)
        return ScaledShift(8.0, name=f"block{k}_shift{n}")(x)

    for k, width in enumerate(widths, start=1):
        first = keras.layers.Activation("gelu", name=f"block{k}_act1")(conv_bn(x, k, 1, width))
        if residual:
            x = keras.layers.Activation("gelu", name=f"block{k}_act2")(conv_bn(first, k, 2, width))
            x = keras.layers.Add(name=f"block{k}_residual")([conv_bn(x, k, 3, width), first])
        else:
            x = conv_bn(first, k, 2, width)
        x = keras.layers.Activation("gelu", name=f"block{k}")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, name="fc")(x)
    outputs = keras.layers.Rescaling(1.0 / 9.0, name="logits", dtype="float32")(x)
    default_name = "airbench_" + "_".join(str(w) for w in widths) + ("_res" if residual else "")
    return keras.Model(inputs, outputs, name=name or default_name)


def reading_normalised_input(model, mean, std):
    """A copy of a trained `airbench` model that reads images normalised as
    `(image / 255 − mean) / std` instead of raw RGB (0–255).

    The experiment CLI feeds every model that normalisation (its `mean` and
    `std` on the 0–1 scale, per channel); an airbench teacher saved by
    `fast_teacher` normalises raw RGB itself with (M, S). The copy's first
    layer maps the CLI's input z to the same `(255 (std·z + mean) − M) / S`,
    so it computes what the saved model computes on the raw images. Every
    other layer keeps its name and weights, so the pairs are the same.

    Example:

    ```python
    teacher = keras.saving.load_model("results/teachers/airbench.keras")
    teacher = reading_normalised_input(teacher, data.mean, data.std)
    ```
    """
    normalize = model.get_layer("normalize")
    raw_mean = np.asarray(keras.ops.convert_to_numpy(normalize.mean)).reshape(-1)
    raw_std = np.sqrt(np.asarray(keras.ops.convert_to_numpy(normalize.variance)).reshape(-1))
    mean, std = np.asarray(mean, "float64"), np.asarray(std, "float64")
    groups = sum(1 for layer in model.layers if layer.name.endswith("_conv2"))
    residual = any(layer.name == "block1_residual" for layer in model.layers)
    copy = airbench(
        [model.get_layer(f"block{k}_conv2").filters for k in range(1, groups + 1)],
        model.get_layer("fc").units,
        tuple(model.input_shape[1:]),
        mean=(raw_mean - 255.0 * mean) / (255.0 * std),
        std=raw_std / (255.0 * std),
        residual=residual,
        name=model.name,
    )
    for layer in model.layers:
        if layer.name != "normalize" and layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy
