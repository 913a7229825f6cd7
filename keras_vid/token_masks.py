"""Padding masks of token pairs: where each pair's mask comes from, and the
mask and the per-example weights of one step.

A token pair `(batch, tokens, dim)` averages its loss over the real tokens
only. Its `(batch, tokens)` mask comes from the teacher's dict inputs (the
KerasHub `"padding_mask"`), from the Keras mask one of the paired outputs
carries, or nowhere; the choice is made once, at construction, per pair.
"""

from keras import ops

from keras_vid import compat
from keras_vid.extractors import mask_key
from keras_vid.features import input_structure
from keras_vid.losses import reduce_tokens

AUTO_MASK_KEY = "padding_mask"


def mask_input_key(teacher, token_mask):
    """The key of the teacher's dict inputs that holds the padding mask, or
    `None` (no input mask: Keras masks with `"auto"`, or none at all)."""
    structure = input_structure(teacher)
    keys = list(structure) if isinstance(structure, dict) else []
    if token_mask is None:
        return None
    if token_mask == "auto":
        key = AUTO_MASK_KEY if AUTO_MASK_KEY in keys else None
    elif not isinstance(token_mask, str):
        raise ValueError(
            "`token_mask` must be 'auto', the key of an input (str) or None. "
            f"Received: token_mask={token_mask!r}"
        )
    elif token_mask not in keys:
        takes = f"the dict inputs {keys}" if keys else "no dict of inputs"
        raise ValueError(
            f"`token_mask` names the input {token_mask!r}, but the teacher '{teacher.name}' "
            f"takes {takes}. Received: token_mask={token_mask!r}"
        )
    else:
        key = token_mask
    if key is not None and len(structure[key].shape) != 2:
        raise ValueError(
            f"The padding mask input {key!r} of the teacher '{teacher.name}' must have shape "
            f"(batch, tokens). Received: shape {tuple(structure[key].shape)}"
        )
    return key


def _fits(*lengths):
    known = {n for n in lengths if n is not None}
    return len(known) <= 1


def token_mask_source(student, teacher, token_mask, mask_input):
    """Where the padding mask of a (student, teacher) pair of symbolic
    outputs comes from: `"input"` (`mask_input`, the mask entry of x),
    `"teacher"` or `"student"` (the Keras mask that output carries), or
    `None` (not masked). Only rank-3 token features on both sides whose
    token axes agree with each other and with the mask are masked."""
    if token_mask is None or len(student.shape) != 3 or len(teacher.shape) != 3:
        return None
    tokens = (student.shape[1], teacher.shape[1])
    if mask_input is not None:
        return "input" if _fits(*tokens, mask_input.shape[1]) else None
    if token_mask != "auto":
        return None
    for role, tensor in (("teacher", teacher), ("student", student)):
        mask = compat.keras_mask(tensor)
        if mask is not None and len(mask.shape) == 2 and _fits(*tokens, mask.shape[1]):
            return role
    return None


class TokenMasks:
    """The padding-mask source of every extractor output (`pair_<k>` and
    `logits`), and the masks and example weights of a step.

    Args:
        sources: dict, extractor key -> `None`, `"input"`, `"teacher"` or
            `"student"` (see `token_mask_source`).
        input_key: the key of x that holds the mask (for `"input"`), or `None`.
    """

    def __init__(self, sources, input_key):
        self.sources = dict(sources)
        self.input_key = input_key

    def extracted_by(self, role):
        """The extractor keys whose Keras mask the `role` extractor returns."""
        return [key for key, source in self.sources.items() if source == role]

    def mask(self, key, x, student_outputs, teacher_outputs):
        """The padding mask of extractor output `key` in this step, or `None`."""
        source = self.sources[key]
        if source == "input":
            return x[self.input_key]
        if source == "teacher":
            return teacher_outputs[mask_key(key)]
        if source == "student":
            return student_outputs[mask_key(key)]
        return None

    def example_weights(self, sample_weight, x, student_outputs, teacher_outputs):
        """The per-example weights of the VID and KD terms. Per-token sample
        weights `(batch, tokens)` (KerasHub's causal LMs weigh the tokens by
        their padding mask) become each example's mean weight over its real
        tokens (over all of them without a mask), so a padding-mask weight
        is 1 for every example with a real token."""
        if sample_weight is None:
            return None
        weight = ops.cast(sample_weight, "float32")
        if len(weight.shape) < 2 or all(d == 1 for d in weight.shape[1:]):
            return weight
        if len(weight.shape) > 2:
            return ops.mean(weight, axis=tuple(range(1, len(weight.shape))))
        mask = self.mask("logits", x, student_outputs, teacher_outputs)
        if mask is None and self.input_key is not None:
            mask = x[self.input_key]
        if mask is not None and len(mask.shape) == 2:
            known = (weight.shape[1], mask.shape[1])
            if None not in known and known[0] != known[1]:
                mask = None
        return reduce_tokens(weight, mask)
