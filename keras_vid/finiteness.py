"""Finiteness of nested tensor structures, in `keras.ops`: the check
`StepGuard` runs every step, and the helper a backend's fused version uses.

It imports nothing else of keras_vid, so the guard and the backends can both
depend on it without depending on each other.
"""

import keras
from keras import ops, tree


def float_tensors(values):
    """The floating-point tensors of a nested structure, in order."""
    return [
        value
        for value in tree.flatten(values)
        if value is not None
        and keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype))
    ]


def finite_groups(groups):
    """One boolean per group (a nested structure of tensors): whether every
    floating-point element in that group is finite. Groups without float
    tensors count as finite.

    This is the `keras.ops` implementation; a backend may offer a fused one
    (`keras_vid.backend.finite_groups`, which `StepGuard` uses).
    """
    checks = []
    for group in groups:
        values = [ops.all(ops.isfinite(value)) for value in float_tensors(group)]
        checks.append(ops.all(ops.stack(values)) if values else ops.convert_to_tensor(True))
    return ops.stack(checks)
