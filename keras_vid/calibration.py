"""Calibration: the teacher statistics of the heads, set once from the data.

A `VIDHead(normalize_teacher=True)` standardises each teacher channel by its
mean and variance. The teacher is frozen, so these are fixed numbers of the
data: `fit` and `train_on_batch` estimate them on their first batch, as a
whole (averaged over the processes of a PyTorch DDP run), so training is the
same on any number of devices, and the step then does no statistics work.
"""

import keras
from keras import ops, tree

from keras_vid import backend as vid_backend


def calibrate(distiller, x):
    """Set and fix the statistics of every pair that needs them, from the
    teacher's features on the inputs `x`."""
    pairs = [pair for pair in distiller.distillation_pairs if pair.needs_calibration]
    if not pairs:
        return
    teacher_outputs = distiller._teacher_features(x)
    for pair in pairs:
        mask = distiller.token_masks.mask(pair.key, x, {}, teacher_outputs)
        mean, variance = pair.head.statistics_of(teacher_outputs[pair.key], mask)
        # Each PyTorch DDP process sees its slice: average the moments.
        mean_square = vid_backend.process_mean(variance + ops.square(mean))
        mean = vid_backend.process_mean(mean)
        pair.head.set_statistics(mean, ops.maximum(mean_square - ops.square(mean), 0.0))


def calibrate_from(distiller, x, batch_size=None):
    """`calibrate` on the first batch of `fit`'s data, when a head's
    statistics are not fixed yet. Data that cannot be peeked at (a generator)
    is left to the heads, which average their first batches' statistics in
    the step."""
    if all(getattr(head, "calibrated", True) for head in distiller.heads):
        return
    sample = first_inputs(x, batch_size or 32)
    if sample is not None:
        calibrate(distiller, sample)


def first_inputs(x, batch_size):
    """The inputs of the first batch of `fit`'s `x`: the first `batch_size`
    examples of arrays (or a dict or list of arrays), the first element of a
    `tf.data.Dataset`, `PyDataset` or DataLoader; `None` for data that cannot
    be read without consuming it (a generator)."""

    def inputs(element):
        return element[0] if isinstance(element, tuple) else element

    def unpack(element):  # a DataLoader yields lists
        return tuple(element) if isinstance(element, list) else element

    try:
        if isinstance(x, keras.utils.PyDataset):
            return inputs(x[0])
        leaves = tree.flatten(x)
        if leaves and all(hasattr(leaf, "shape") and len(leaf.shape) for leaf in leaves):
            return tree.map_structure(lambda a: a[:batch_size], x)
        if iter(x) is not x:  # re-iterable: tf.data.Dataset, a torch DataLoader
            return inputs(unpack(next(iter(x))))
    except (StopIteration, TypeError, IndexError):
        return None
    return None
