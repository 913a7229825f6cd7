"""Checks of user arguments, shared so every one fails with the same message."""

import math
import numbers


def non_negative(value, argument, context=""):
    """`value` as a float, or a `ValueError` naming `argument` unless it is a
    finite real number ≥ 0 (booleans are refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{argument}`{context} must be a finite number ≥ 0. Received: {value!r}")
    return float(value)
