"""Stages of a model: where a network finishes with each resolution.

`model_stages(model)` reads a model's flat graph (nested functional models
inlined, so names may be paths such as `"backbone/conv3_block2_out"`) and
returns its stages in order, each a layer whose output ends one: the maps
at every spatial resolution, the transformer embeddings and blocks, the
penultimate vector and the logits. `suggest_pairs` pairs them.

How a stage end is found (on the model's flat graph, nested functional
models inlined, so the names may be paths such as `"backbone/conv3_block2_out"`):

1. Only *cut points* qualify: layers every input-to-output path goes
   through (a block's output, not a layer inside one of its branches).
2. Consecutive cut points at one spatial resolution form a stage; stages
   that compute nothing with weights (a lone pooling layer) are skipped.
3. In a stage with residual merges (`Add`...), the end is the last merge,
   or the activation that directly follows it (post-activation ResNets:
   `conv3_block2_out`). So in a pre-activation network such as this
   package's Wide ResNets the end is the group output (`group1`), not the
   next group's BN-ReLU that still runs at the old resolution.
4. Otherwise (plain CNNs) the end is the stage's last cut point, skipping
   back over dropout-like layers to the activation before them.

With `feature_point="pre-activation"` a map stage that ends in an
activation layer (ReLU...) is read at that layer's input instead: the same
feature before its activation (a plain CNN's last BatchNormalization, a
post-activation ResNet's `Add`). A pre-activation network's group output
already is one.

Transformer stacks (token features `(batch, tokens, dim)`) are found
apart from maps:

- A *block* is a rank-3 cut point whose layer is built from other layers
  and returns the shape it takes: a KerasHub `TransformerEncoder` or
  `TransformerDecoder` (`"bert_backbone/transformer_layer_3"`), or your own
  block layer. A transformer written out layer by layer in a functional
  model (attention, `Add`, `LayerNormalization`) has no such layer: name
  its pairs instead.
- The *embeddings* stage is the last rank-3 cut point before the first
  block, skipping back over dropout (`embeddings_layer_norm`).
- With a stack on both sides, the student's block m (of M) is paired with
  the teacher's block round(m · N / M) (of N), TinyBERT's uniform mapping
  (m ↔ m·k with k = N / M), and embeddings with embeddings. The other
  rank-3 layers of a model with a stack are not map stages.

The vector stage is the penultimate vector (the last cut point of rank 2
before the output, e.g. `pool`) and the logits are the model's output.
"""

import dataclasses

import keras

from keras_vid.features import check_symbolic_model
from keras_vid.flat_graph import flat_graph

PASSTHROUGH_LAYERS = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
ACTIVATION_LAYERS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


@dataclasses.dataclass
class Stage:
    """A stage end: its layer path, output shape (batch included) and kind
    (`"map"`, `"embeddings"` or `"block"` of a transformer stack, `"vector"`
    for the penultimate vector, or `"logits"`)."""

    path: str
    shape: tuple
    kind: str

    @property
    def resolution(self):
        """Spatial size of a map stage, `None` for vectors."""
        return tuple(self.shape[1:-1]) if self.kind == "map" else None


def _is_map(shape):
    return len(shape) >= 3


FEATURE_POINTS = ("output", "pre-activation")


def model_stages(model, role="model", feature_point="output"):
    """The stage ends of `model`: map stages in order, then the penultimate
    vector and the logits (each when present). See the module docstring.

    Args:
        model: a single-output functional or Sequential model (any inputs).
        role: how errors name the model (`"teacher"`, `"student"`).
        feature_point: `"output"` or `"pre-activation"` (map stages ending
            in an activation layer are read at its input).

    Returns:
        A list of `Stage`.
    """
    if feature_point not in FEATURE_POINTS:
        raise ValueError(
            f"`feature_point` must be one of {FEATURE_POINTS}. Received: {feature_point!r}"
        )
    check_symbolic_model(model, role)
    if len(model.outputs) != 1:
        raise ValueError(
            f"The {role} model '{model.name}' has {len(model.outputs)} outputs; "
            "`suggest_pairs` (pairs='auto') needs a single-output model: name the pairs "
            f"instead. Received: {role}={model.name!r}"
        )
    graph = flat_graph(model)
    calls = graph.calls
    producer = {id(t): i for i, call in enumerate(calls) for t in call.outputs}
    out = producer.get(id(graph.output))
    if out is None:
        raise ValueError(f"The {role} model '{model.name}' output is not produced by a layer.")

    # Calls that lead to the output, and the cut points among them: a call is
    # a cut unless an edge jumps over it in topological order.
    useful, stack = set(), [out]
    while stack:
        index = stack.pop()
        if index not in useful:
            useful.add(index)
            stack += [producer[id(t)] for t in calls[index].inputs if id(t) in producer]
    jumps = [0] * (len(calls) + 1)
    for index in useful:
        for tensor in calls[index].inputs:
            source = producer.get(id(tensor), -1)
            if source + 1 < index:
                jumps[source + 1] += 1
                jumps[index] -= 1
    covered, cuts = 0, []
    for index in range(len(calls)):
        covered += jumps[index]
        if index in useful and covered == 0 and len(calls[index].outputs) == 1:
            cuts.append(index)

    def shape(index):
        return tuple(calls[index].outputs[0].shape)

    blocks = [i for i in cuts if i != out and _is_block(calls[i])]
    runs = []
    for index in cuts:
        if index == out or not _is_map(shape(index)):
            continue
        if blocks and len(shape(index)) == 3:
            continue  # token features: the stack's stages, below
        resolution = shape(index)[1:-1]
        if any(d is None for d in resolution):
            raise ValueError(
                f"The {role} model '{model.name}' has feature maps of unknown spatial "
                f"size (layer '{calls[index].path}': {shape(index)}), so its stages "
                "cannot be found. Build it on a `keras.Input` with a fixed image size."
            )
        if (
            runs
            and shape(runs[-1][-1])[1:-1] == resolution
            and runs[-1][-1] == _previous(cuts, index)
        ):
            runs[-1].append(index)
        else:
            runs.append([index])

    stages = []
    for run in runs:
        start = _previous(cuts, run[0])
        span = range(0 if start is None else start + 1, run[-1] + 1)
        if not any(getattr(calls[i].layer, "weights", None) for i in span):
            continue  # e.g. a lone pooling layer between two stages
        end = _stage_end(run, calls)
        if feature_point == "pre-activation":
            end = _before_activation(end, calls, producer)
        stages.append(Stage(calls[end].path, shape(end), "map"))
    if blocks:
        before = [i for i in cuts if i < blocks[0] and len(shape(i)) == 3]
        if before:
            end = _last_computing(before, calls)
            stages.append(Stage(calls[end].path, shape(end), "embeddings"))
        stages += [Stage(calls[i].path, shape(i), "block") for i in blocks]
    vectors = [i for i in cuts if i < out and len(shape(i)) == 2]
    if vectors:
        end = _last_computing(vectors, calls)
        stages.append(Stage(calls[end].path, shape(end), "vector"))
    stages.append(Stage(calls[out].path, shape(out), "logits"))
    return stages


def _is_block(call):
    """A transformer block: one call of a layer made of layers that maps
    `(batch, tokens, dim)` to the same shape."""
    layer = call.layer
    if not call.inputs or len(call.outputs[0].shape) != 3:
        return False
    if tuple(call.inputs[0].shape) != tuple(call.outputs[0].shape) or not layer.weights:
        return False
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, keras.layers.Layer) for v in values):
            return True
    return False


def _last_computing(items, calls):
    """The last of the call indices `items`, skipping back over dropout-like
    layers (never past the first)."""
    end = items[-1]
    while isinstance(calls[end].layer, PASSTHROUGH_LAYERS) and _previous(items, end) is not None:
        end = _previous(items, end)
    return end


def _previous(items, item):
    position = items.index(item)
    return items[position - 1] if position > 0 else None


def _stage_end(run, calls):
    merges = [i for i in run if len(calls[i].inputs) >= 2]
    if merges:
        end = merges[-1]
        following = run[run.index(end) + 1 :]
        for nxt in following:
            if isinstance(calls[nxt].layer, ACTIVATION_LAYERS) and any(
                t is calls[end].outputs[0] for t in calls[nxt].inputs
            ):
                end = nxt
            else:
                break
        return end
    end = run[-1]
    while isinstance(calls[end].layer, PASSTHROUGH_LAYERS) and run.index(end) > 0:
        end = run[run.index(end) - 1]
    return end


def _before_activation(end, calls, producer):
    """The call whose output feeds the activation layer `end` (`end` itself
    when it is not an activation of one single-output layer's output)."""
    call = calls[end]
    if not isinstance(call.layer, ACTIVATION_LAYERS) or len(call.inputs) != 1:
        return end
    source = producer.get(id(call.inputs[0]))
    if source is None or len(calls[source].outputs) != 1:
        return end
    return source
