"""Analytic forward cost of models and heads, in multiply-accumulates (MACs).

Only the layers that dominate the cost of a CNN, an MLP or a transformer are
counted: convolutions (1-D, 2-D, 3-D, grouped, depthwise, separable,
transposed), Dense and EinsumDense layers, at one MAC per weight use per
example, and `MultiHeadAttention` (its four projections plus the two
attention products, scores and weighted sum). Everything else (BatchNorm,
LayerNorm, activations, pooling — adaptive pooling included —, additions,
embedding lookups, the Gaussian NLL of a head) counts 0: those are
additions, lookups or element-wise operations, a small fraction of the
total. Other layers with weights (custom layers such as a KerasHub
`TransformerEncoder`, whose sublayers are not in the graph) are not counted:
`uncounted_layers` lists them. Counts are per example (batch
dimension left out); one FLOP pair (multiply + add) is one MAC.

Example:

```python
macs = keras_vid.flops.model_macs(keras.applications.MobileNetV2(weights=None))
```
"""

import math

import keras

from keras_vid.flat_graph import flat_graph

COUNTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.MultiHeadAttention,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


# Layers with weights whose cost is element-wise or a lookup: 0 MACs, by design.
ZERO_COST_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Embedding,
    keras.layers.PReLU,
)


def _known(shape, layer, what):
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': its {what} shape "
            f"{tuple(shape)} has unknown dimensions besides the batch. Build the "
            "model with a fixed input shape."
        )
    return dims


def layer_macs(layer, input_shape, output_shape, value_shape=None):
    """Per-example forward MACs of one call of `layer` (0 for uncounted layers).

    Args:
        layer: a Keras layer.
        input_shape: the call's input shape, batch dimension included.
        output_shape: the call's output shape, batch dimension included.
        value_shape: for `MultiHeadAttention`, the shape of its `value`
            (and key) input; `None` for self-attention.

    Returns:
        An int.

    Example:

    ```python
    conv = keras.layers.Conv2D(8, 3, padding="same")
    layer_macs(conv, (None, 4, 4, 3), (None, 4, 4, 8))  # 4·4·3·3·3·8 = 3456
    ```
    """
    if not isinstance(layer, COUNTED_LAYERS):
        return 0
    in_dims = _known(input_shape, layer, "input")
    out_dims = _known(output_shape, layer, "output")
    in_channels, out_channels = in_dims[-1], out_dims[-1]
    if isinstance(layer, keras.layers.MultiHeadAttention):
        value_dims = in_dims if value_shape is None else _known(value_shape, layer, "value")
        return _attention_macs(layer, in_dims, value_dims, out_channels)
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_macs(layer, input_shape)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(in_dims[:-1]) * in_channels * layer.units
    kernel = math.prod(layer.kernel_size)
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        depthwise = math.prod(out_dims[:-1]) * kernel * in_channels * layer.depth_multiplier
        pointwise = math.prod(out_dims[:-1]) * in_channels * layer.depth_multiplier * out_channels
        return depthwise + pointwise
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return math.prod(out_dims[:-1]) * kernel * in_channels * layer.depth_multiplier
    groups = getattr(layer, "groups", 1) or 1
    if isinstance(
        layer,
        (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose),
    ):
        # Every input position is scattered through the whole kernel.
        return math.prod(in_dims[:-1]) * kernel * in_channels * out_channels
    return math.prod(out_dims[:-1]) * kernel * (in_channels // groups) * out_channels


def _attention_macs(layer, query_dims, value_dims, out_channels):
    """Projections of query, key, value and output, and the two products."""
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    queries, values = math.prod(query_dims[:-1]), math.prod(value_dims[:-1])
    projections = queries * query_dims[-1] * heads * key_dim
    projections += values * value_dims[-1] * heads * (key_dim + value_dim)
    products = queries * values * heads * (key_dim + value_dim)
    return projections + products + queries * heads * value_dim * out_channels


def _einsum_macs(layer, input_shape):
    """One MAC per combination of the equation's indices, batch left out."""
    inputs, rest = layer.equation.split(",")
    kernel_spec = rest.split("->")[0]
    sizes = {}
    if "..." in inputs:
        explicit = inputs.replace("...", "")
        ellipsis_dims = tuple(input_shape)[: len(input_shape) - len(explicit)]
        inputs, shape = explicit, tuple(input_shape)[len(ellipsis_dims) :]
        ellipsis = math.prod(d for d in ellipsis_dims if d is not None)
    else:
        shape, ellipsis = tuple(input_shape), 1
    for letter, dim in zip(inputs, shape):
        sizes[letter] = dim
    for letter, dim in zip(kernel_spec, layer.kernel.shape):
        sizes[letter] = dim
    return ellipsis * math.prod(d for d in sizes.values() if d is not None)


def uncounted_layers(model):
    """Paths of the layers with weights that `model_macs` counts as 0 without
    knowing their cost (custom layers; not normalisation or embeddings)."""
    return [
        call.path
        for call in flat_graph(model).calls
        if getattr(call.layer, "weights", None)
        and not isinstance(call.layer, COUNTED_LAYERS + ZERO_COST_LAYERS)
    ]


def model_macs(model):
    """Per-example forward MACs of a functional or Sequential model.

    Layers of nested functional sub-models are counted too, and a layer
    called several times counts once per call.

    Args:
        model: a single-input, single-output functional or Sequential model
            with a fixed input shape.

    Returns:
        An int.
    """
    total = 0
    for call in flat_graph(model).calls:
        if isinstance(call.layer, COUNTED_LAYERS):
            value = call.inputs[1].shape if len(call.inputs) > 1 else None
            total += layer_macs(call.layer, call.inputs[0].shape, call.outputs[0].shape, value)
    return total


def head_macs(head):
    """Per-example forward MACs of a built `VIDHead`'s regressor μ(s).

    Pooling (adaptive average pooling of the larger map, global pooling)
    and the Gaussian NLL count 0, as in `layer_macs`.

    Args:
        head: a built `VIDHead` (or any head with `student_shape`,
            `student_pool` and `regressor`).

    Returns:
        An int, or `None` for a head without a `regressor` (custom heads).
    """
    if getattr(head, "regressor", None) is None or head.student_shape is None:
        return None
    shape = tuple(head.student_shape)
    if head.student_pool is not None:
        shape = head.student_pool.compute_output_shape(shape)
    total = 0
    for layer in head.regressor:
        out = layer.compute_output_shape(shape)
        total += layer_macs(layer, shape, out)
        shape = out
    return total
