"""Wiring a teacher and a student for distillation, once, at construction.

`wire` checks the two models, finds their logits outputs, resolves the
pairs (`"auto"`: `suggest_pairs`), builds one `DistillationPair` per pair
with its head, decides where every padding mask comes from, and builds the
one-pass feature extractors. Everything it refuses is refused here, before
any training, with the model, layer or argument at fault named.
"""

import dataclasses
import inspect

import keras

from keras_vid.arguments import normalize_head_options, normalize_pairs
from keras_vid.distillation_pair import wire_pairs
from keras_vid.extractors import build_extractors, final_softmax
from keras_vid.features import (
    LOGITS,
    check_no_shared_layers,
    check_same_inputs,
    check_symbolic_model,
    output_index,
)
from keras_vid.pair_suggestion import resolve_pairs
from keras_vid.token_masks import TokenMasks, mask_input_key, token_mask_source
from keras_vid.vid_head import VIDHead

# `head_options` keys: `VIDHead`'s own arguments.
HEAD_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(VIDHead.__init__).parameters.items()
    if name != "self" and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
)


@dataclasses.dataclass
class Wiring:
    """What `wire` found and built."""

    pairs: list  # (student_layer, teacher_layer) tuples
    records: list  # one `DistillationPair` per pair
    token_masks: TokenMasks
    student_extractor: keras.Model
    teacher_extractor: keras.Model
    student_input_keys: list  # or None: the student reads all of x
    student_output_index: int
    student_softmax: str  # the layer ending the student in a softmax, or None
    teacher_logits_shape: tuple
    student_logits_shape: tuple


def wire(teacher, student, pairs, head_options, heads, teacher_output, student_output,
         token_mask, owner):  # fmt: skip
    """Check and wire the two models (see the module docstring); `owner`
    names the distiller in warnings."""
    check_symbolic_model(teacher, "teacher")
    check_symbolic_model(student, "student")
    if teacher is student:
        raise ValueError("The teacher and the student must be different models.")
    input_keys = check_same_inputs(teacher, student)
    check_no_shared_layers(teacher, student)
    t_index = output_index(teacher, teacher_output, "teacher", "teacher_output")
    s_index = output_index(student, student_output, "student", "student_output")
    mask_input = mask_input_key(teacher, token_mask)
    pairs = normalize_pairs(resolve_pairs(teacher, student, pairs))
    options = normalize_head_options(head_options, len(pairs), HEAD_OPTIONS)
    _check_heads(heads, head_options, len(pairs))
    teacher.trainable = False
    records, student_features, teacher_features = wire_pairs(
        teacher, student, pairs, options, heads, token_mask, mask_input
    )
    mask_tensor = None if mask_input is None else teacher.input[mask_input]
    sources = {record.key: record.mask_source for record in records}
    sources[LOGITS] = token_mask_source(
        student.outputs[s_index], teacher.outputs[t_index], token_mask, mask_tensor
    )
    masks = TokenMasks(sources, mask_input)
    student_extractor, teacher_extractor = build_extractors(
        teacher, student, t_index, s_index, (student_features, teacher_features), masks, owner
    )
    return Wiring(
        pairs=pairs,
        records=records,
        token_masks=masks,
        student_extractor=student_extractor,
        teacher_extractor=teacher_extractor,
        student_input_keys=input_keys,
        student_output_index=s_index,
        student_softmax=final_softmax(student, s_index),
        teacher_logits_shape=tuple(teacher.outputs[t_index].shape),
        student_logits_shape=tuple(student.outputs[s_index].shape),
    )


def _check_heads(heads, head_options, num_pairs):
    if heads is None:
        return
    if head_options is not None:
        raise ValueError("Pass either `head_options` or `heads`, not both.")
    if not isinstance(heads, (list, tuple)) or len(heads) != num_pairs:
        raise ValueError(
            f"`heads` must be a list with one layer per pair ({num_pairs}). Received: {heads!r}"
        )
    if not all(isinstance(head, keras.layers.Layer) for head in heads):
        raise ValueError("Every entry of `heads` must be a `keras.layers.Layer`.")
