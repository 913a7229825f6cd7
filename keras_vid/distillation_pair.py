"""`DistillationPair`: one (student layer, teacher layer) pair and everything it owns.

A `VIDDistiller` holds one record per pair: the two layer names, the pair
loss (a `VIDHead` or a custom `PairLoss`), where the pair's padding mask
comes from, the `vid_<k>` loss tracker, and the checks that wiring the pair
needs. `wire_pairs` finds the layers, checks them and builds the heads.
"""

import inspect

import keras
from keras import ops

from keras_vid.features import (
    check_channels_last,
    check_feature_trains,
    find_layer,
    layer_output,
    pair_key,
)
from keras_vid.losses import weighted_batch_mean
from keras_vid.token_masks import token_mask_source
from keras_vid.vid_head import VIDHead


class DistillationPair:
    """One layer pair of a distiller.

    Attributes:
        index: the pair's position (its extractor key is `pair_<index>`).
        student_layer, teacher_layer: the layer names (or paths) paired.
        head: the pair's loss layer.
        tracker: the `keras.metrics.Mean` logged as `vid_<index>`.
        mask_source: where its padding mask comes from (`None`, `"input"`,
            `"teacher"` or `"student"`; see `keras_vid.token_masks`).
    """

    def __init__(self, index, student_layer, teacher_layer, head, mask_source=None):
        self.index = index
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.head = head
        self.mask_source = mask_source
        self.tracker = keras.metrics.Mean(name=f"vid_{index}")

    @property
    def key(self):
        return pair_key(self.index)

    @property
    def names(self):
        return (self.student_layer, self.teacher_layer)

    def error(self, message):
        """A `ValueError` that names the pair."""
        return ValueError(f"Pair {self.index} {self.names}: {message}")

    def build_head(self, student_output, teacher_output):
        try:
            if not self.head.built:
                self.head.build(student_output.shape, teacher_output.shape)
        except ValueError as error:
            raise self.error(error) from None

    def check_custom_head(self, student_output, teacher_output, mask_input):
        """A custom pair loss must return one value per example (`(batch, 1)`
        would broadcast against the sample weights and weigh the term wrongly),
        and take `padding_mask` when the pair's tokens are masked."""
        head = self.head
        who = f"the head '{head.name}' ({type(head).__name__})"
        try:
            spec = head.compute_output_spec(student_output, teacher_output)
        except Exception:  # noqa: BLE001 - a head that cannot be traced is checked at run time
            spec = None
        shape = tuple(getattr(spec, "shape", (None,)))
        if len(shape) != 1:
            raise self.error(
                f"{who} returns shape {shape}; a pair loss must return the per-example "
                "loss, shape (batch,). Reduce every other axis in its `call` (e.g. "
                "`ops.mean(..., axis=...)` without keepdims)."
            )
        if self.mask_source is not None and not _takes_padding_mask(head):
            where = f" key {mask_input!r}" if self.mask_source == "input" else ""
            raise self.error(
                f"{who} takes no `padding_mask`, but the pair's token features are "
                f"masked (the mask comes from the {self.mask_source}{where}). Add "
                "`padding_mask=None` to its `call`, or pass `token_mask=None` to switch "
                "masking off."
            )

    def loss(self, student_outputs, teacher_outputs, mask, example_weight, training):
        """The pair's batch-mean loss (float32 scalar), also given to its tracker."""
        masking = {} if mask is None else {"padding_mask": mask}
        nll = self.head(
            student_outputs[self.key], teacher_outputs[self.key], training=training, **masking
        )
        nll = ops.cast(nll, "float32")  # a custom head may answer in half precision
        value = weighted_batch_mean(nll, example_weight)
        self.tracker.update_state(value, sample_weight=ops.shape(nll)[0])
        return value

    @property
    def needs_calibration(self):
        """Whether `calibrate` sets statistics for this pair: a head that
        standardises the teacher feature, on a mask the teacher side knows."""
        return getattr(self.head, "normalize_teacher", False) and self.mask_source != "student"


def _takes_padding_mask(head):
    """Whether a pair loss's `call` accepts `padding_mask`."""
    parameters = inspect.signature(head.call).parameters.values()
    return any(
        p.name == "padding_mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def wire_pairs(teacher, student, pairs, options, heads, token_mask, mask_input):
    """The records of `pairs`, with their symbolic features.

    Finds each pair's layers, checks them (channels-last, the student side
    trainable), decides its mask source and builds its head: `heads[k]` when
    given (checked as a custom pair loss), else `VIDHead(**options[k])`.
    Returns `(records, student_features, teacher_features)`, the last two
    dicts keyed by `pair_<k>`.
    """
    mask_tensor = None if mask_input is None else teacher.input[mask_input]
    records, student_features, teacher_features = [], {}, {}
    for index, ((s_name, t_name), option) in enumerate(zip(pairs, options)):
        s_layer = find_layer(student, s_name, "student")
        t_layer = find_layer(teacher, t_name, "teacher")
        s_out = layer_output(s_layer, student, "student")
        t_out = layer_output(t_layer, teacher, "teacher")
        head = heads[index] if heads is not None else VIDHead(name=f"vid_head_{index}", **option)
        record = DistillationPair(index, s_name, t_name, head)
        try:
            check_channels_last(s_layer, s_out, "student", s_name)
            check_channels_last(t_layer, t_out, "teacher", t_name)
            check_feature_trains(student, s_out, s_name)
        except ValueError as error:
            raise record.error(error) from None
        record.mask_source = token_mask_source(s_out, t_out, token_mask, mask_tensor)
        record.build_head(s_out, t_out)
        if heads is not None:
            record.check_custom_head(s_out, t_out, mask_input)
        student_features[record.key] = s_out
        teacher_features[record.key] = t_out
        records.append(record)
    return records, student_features, teacher_features
