"""`suggest_pairs`: VID layer pairs read off the teacher's and student's graphs.

A CNN computes at a few spatial resolutions, one stage after another; the
natural layers to pair are the ends of those stages, where each network has
finished with a resolution. `suggest_pairs` finds them on both models,
matches them by resolution and returns `(student_layer, teacher_layer)`
pairs for `VIDDistiller(pairs=...)`, with a table of the layers, their
shapes and what each head would cost.

Where the stages end is `keras_vid.model_stages`.
"""

import dataclasses

from keras_vid.model_stages import Stage, model_stages
from keras_vid.text import shape_text, text_table
from keras_vid.vid_head import VIDHead

AUTO = "auto"


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
    resolve_pairs(teacher, student, "auto")  # suggest_pairs(teacher, student)
    resolve_pairs(teacher, student, [("s_block2", "t_block2")])  # as given
    ```
    """
    if isinstance(pairs, str) and pairs == AUTO:
        return suggest_pairs(teacher, student, **kwargs)
    return pairs
