"""`suggest_pairs`: VID layer pairs read off the teacher's and student's graphs.

A CNN computes at a few spatial resolutions, one stage after another; the
natural layers to pair are the ends of those stages, where each network has
finished with a resolution. `suggest_pairs` finds them on both models,
matches them by resolution and returns `(student_layer, teacher_layer)`
pairs for `VIDDistiller(pairs=...)`, with a table of the layers, their
shapes and what each head would cost.

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
from keras_vid.text import shape_text, text_table
from keras_vid.vid_head import VIDHead

AUTO = "auto"
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


def _block_pairs(student_stages, teacher_stages):
    """TinyBERT's uniform mapping: embeddings ↔ embeddings, student block m
    of M ↔ teacher block round(m · N / M) of N (1-based)."""
    s_blocks = [s for s in student_stages if s.kind == "block"]
    t_blocks = [s for s in teacher_stages if s.kind == "block"]
    if not s_blocks or not t_blocks:
        return []
    chosen = []
    s_emb = next((s for s in student_stages if s.kind == "embeddings"), None)
    t_emb = next((s for s in teacher_stages if s.kind == "embeddings"), None)
    if s_emb is not None and t_emb is not None:
        chosen.append((s_emb, t_emb, "embeddings"))
    m_total, n_total = len(s_blocks), len(t_blocks)
    for m, stage in enumerate(s_blocks, start=1):
        n = min(n_total, max(1, round(m * n_total / m_total)))
        chosen.append((stage, t_blocks[n - 1], f"block {m}/{m_total} ↔ {n}/{n_total} (uniform)"))
    return chosen


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


@dataclasses.dataclass
class SuggestedPair:
    """One suggested pair, with what the table shows about it."""

    student: Stage
    teacher: Stage
    reason: str
    head_params: int


class SuggestedPairs(list):
    """A list of `(student_layer, teacher_layer)` pairs (pass it as
    `VIDDistiller(pairs=...)`), with `details`, the stages of both models
    and `print_table()` / `table()` describing them."""

    def __init__(self, details, teacher_stages, student_stages):
        super().__init__((d.student.path, d.teacher.path) for d in details)
        self.details = details
        self.teacher_stages = teacher_stages
        self.student_stages = student_stages

    def table(self):
        """The table of the suggested pairs, as a string."""
        header = ("#", "student layer", "shape", "teacher layer", "shape", "why", "head params")
        rows = [
            (
                str(index),
                d.student.path,
                shape_text(d.student.shape),
                d.teacher.path,
                shape_text(d.teacher.shape),
                d.reason,
                f"{d.head_params:,}",
            )
            for index, d in enumerate(self.details)
        ]
        return text_table(header, rows)

    def print_table(self, print_fn=print):
        """Print `table()`."""
        print_fn(self.table())


def _head_params(student, teacher, head_options):
    head = VIDHead(**(head_options or {}))
    head.build(student.shape, teacher.shape)
    return head.count_params()


def suggest_pairs(
    teacher, student, logits=AUTO, head_options=None, verbose=False, feature_point="output"
):
    """Suggest VID pairs: matching stage ends of `student` and `teacher`.

    Map stages are paired when their spatial resolutions are equal (a
    stage at a resolution the other model lacks is left out). Transformer
    stacks are paired block by block with TinyBERT's uniform mapping, plus
    embeddings ↔ embeddings (see the module docstring). The student's
    penultimate vector paired with the teacher's logits (VID-LP) is added
    when `logits=True`, or with the default `"auto"` only when no map pair
    exists (for instance an MLP student): with map pairs the suggestion is
    VID-I, the paper's setting for CNN students and the one the
    measurements in results/README.md use.

    Args:
        teacher: functional or Sequential teacher (its output the logits).
        student: functional or Sequential student.
        logits: `"auto"`, `True` or `False`: whether to add the
            (student penultimate vector, teacher logits) pair.
        head_options: `VIDHead` options used to count each head's parameters
            in the table (as passed to `VIDDistiller(head_options=...)`).
        verbose: print the table.
        feature_point: where map stages are read: `"output"` (the stage's
            last layer) or `"pre-activation"` (the input of a stage's final
            activation layer, e.g. a CNN's last BatchNormalization; see the
            module docstring).

    Returns:
        A `SuggestedPairs` list of `(student_layer, teacher_layer)` names.

    Example:

    ```python
    pairs = keras_vid.suggest_pairs(teacher, student)
    pairs.print_table()
    distiller = keras_vid.VIDDistiller(teacher, student, pairs=pairs)
    ```
    """
    if logits not in (AUTO, True, False):
        raise ValueError(f"`logits` must be 'auto', True or False. Received: logits={logits!r}")
    teacher_stages = model_stages(teacher, "teacher", feature_point)
    student_stages = model_stages(student, "student", feature_point)
    teacher_maps = {s.resolution: s for s in teacher_stages if s.kind == "map"}
    chosen = []
    for stage in student_stages:
        if stage.kind == "map" and stage.resolution in teacher_maps:
            size = "×".join(str(d) for d in stage.resolution)
            chosen.append((stage, teacher_maps[stage.resolution], f"{size} stage end"))
    chosen += _block_pairs(student_stages, teacher_stages)
    s_vector = next((s for s in student_stages if s.kind == "vector"), None)
    t_logits = next(s for s in teacher_stages if s.kind == "logits")
    if (logits is True or (logits == AUTO and not chosen)) and s_vector is not None:
        if len(t_logits.shape) == 2:
            chosen.append((s_vector, t_logits, "VID-LP (penultimate → logits)"))
    if not chosen:
        why = (
            "VID-LP is disabled (logits=False)"
            if logits is False
            else "the student has no penultimate vector for VID-LP"
        )
        raise ValueError(
            "No pair to suggest: the student's and the teacher's stages share no "
            f"spatial resolution and {why}. "
            f"Teacher stages: {[(s.path, shape_text(s.shape)) for s in teacher_stages]}; "
            f"student stages: {[(s.path, shape_text(s.shape)) for s in student_stages]}."
        )
    details = [
        SuggestedPair(s, t, reason, _head_params(s, t, head_options)) for s, t, reason in chosen
    ]
    pairs = SuggestedPairs(details, teacher_stages, student_stages)
    if verbose:
        pairs.print_table()
    return pairs


def resolve_pairs(teacher, student, pairs, **kwargs):
    """`suggest_pairs(teacher, student, **kwargs)` when `pairs == "auto"`,
    else `pairs` unchanged; what `VIDDistiller(pairs="auto")` calls.

    Args:
        teacher: the teacher `keras.Model` (functional or Sequential).
        student: the student `keras.Model`.
        pairs: `"auto"`, or a list of `(student_layer, teacher_layer)`
            names, returned as given.
        **kwargs: passed to `suggest_pairs` (`logits`, `head_options`,
            `verbose`).

    Returns:
        The list of pairs.

    Example:

    ```python
    from keras_vid.models import wide_resnet

    teacher = wide_resnet(16, 2, 10, (32, 32, 3))
    student = wide_resnet(16, 1, 10, (32, 32, 3))
    resolve_pairs(teacher, student, "auto")
    # [('group1', 'group1'), ('group2', 'group2'), ('group3', 'group3')]
    ```
    """
    if isinstance(pairs, str) and pairs == AUTO:
        return suggest_pairs(teacher, student, **kwargs)
    return pairs
