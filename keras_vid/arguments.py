"""Checks of user arguments, shared so every one fails with the same message."""

import math
import numbers

from keras_vid.losses import REDUCTIONS


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


def normalize_pairs(pairs):
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise ValueError(
            "`pairs` must be a list of (student_layer_name, teacher_layer_name) tuples. "
            f"Received: pairs={pairs!r}"
        )
    normalized = []
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(
                "Each entry of `pairs` must be a (student_layer_name, teacher_layer_name) "
                f"tuple. Received: {pair!r}"
            )
        pair = (pair[0], pair[1])
        if pair in normalized:
            raise ValueError(f"The pair {pair} appears twice in `pairs`.")
        normalized.append(pair)
    return normalized


def normalize_head_options(head_options, num_pairs, known):
    if head_options is None:
        return [{} for _ in range(num_pairs)]
    if isinstance(head_options, dict):
        options = [dict(head_options) for _ in range(num_pairs)]
    elif isinstance(head_options, (list, tuple)):
        if len(head_options) != num_pairs:
            raise ValueError(
                f"`head_options` has {len(head_options)} entries but there are "
                f"{num_pairs} pairs: pass one dict for all pairs or one per pair."
            )
        options = [dict(o or {}) for o in head_options]
    else:
        raise ValueError(
            f"`head_options` must be a dict or a list of dicts. Received: {head_options!r}"
        )
    for index, option in enumerate(options):
        unknown = sorted(set(option) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown head option(s) {unknown} for pair {index}; "
                f"valid options are {list(known)}."
            )
    return options


def check_head_arguments(who, depth, hidden_width, use_batch_norm, init_variance, epsilon,
                         reduction, min_variance, alpha_gradient_scale, class_tokens,
                         drop_class_tokens, statistics_batches):  # fmt: skip
    """`VIDHead`'s arguments, each refused with a message naming the head
    (`who`) and the argument."""
    if depth is not None and (not isinstance(depth, int) or depth < 1):
        raise ValueError(
            f"{who}: `depth` must be a positive integer or None. Received: depth={depth!r}"
        )
    widths = hidden_width if isinstance(hidden_width, (list, tuple)) else [hidden_width]
    if hidden_width is not None and (
        not widths
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        raise ValueError(
            f"{who}: `hidden_width` must be a positive integer, a non-empty list "
            f"of positive integers, or None. Received: hidden_width={hidden_width!r}"
        )
    if isinstance(hidden_width, (list, tuple)) and depth is not None:
        if len(hidden_width) != depth - 1:
            raise ValueError(
                f"{who}: `hidden_width` lists {len(hidden_width)} widths but "
                f"`depth={depth}` has {depth - 1} hidden layers. Received: "
                f"hidden_width={list(hidden_width)!r}, depth={depth}"
            )
    if not (isinstance(use_batch_norm, bool) or use_batch_norm in ("hidden", "all")):
        raise ValueError(
            f"{who}: `use_batch_norm` must be False, True, 'hidden' or 'all'. "
            f"Received: use_batch_norm={use_batch_norm!r}"
        )
    if (
        isinstance(min_variance, bool)
        or not isinstance(min_variance, numbers.Real)
        or not 0 <= min_variance < float("inf")
    ):
        raise ValueError(
            f"{who}: `min_variance` must be a finite number ≥ 0. "
            f"Received: min_variance={min_variance!r}"
        )
    if not (
        alpha_gradient_scale == "channels"
        or (
            isinstance(alpha_gradient_scale, numbers.Real)
            and not isinstance(alpha_gradient_scale, bool)
            and 0 < alpha_gradient_scale < float("inf")
        )
    ):
        raise ValueError(
            f"{who}: `alpha_gradient_scale` must be a positive number or "
            f"'channels'. Received: alpha_gradient_scale={alpha_gradient_scale!r}"
        )
    if not epsilon > 0:
        raise ValueError(f"{who}: `epsilon` must be > 0. Received: epsilon={epsilon!r}")
    if not (init_variance > 0 and init_variance >= min_variance):
        raise ValueError(
            f"{who}: `init_variance` must be > 0 and at least `min_variance` "
            f"(σ² starts there). Received: init_variance={init_variance!r}, "
            f"min_variance={min_variance!r}"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"{who}: `reduction` must be one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    if isinstance(class_tokens, bool) or not isinstance(class_tokens, int) or class_tokens < 0:
        raise ValueError(
            f"{who}: `class_tokens` must be an integer ≥ 0. "
            f"Received: class_tokens={class_tokens!r}"
        )
    if drop_class_tokens and not class_tokens:
        raise ValueError(
            f"{who}: `drop_class_tokens=True` needs `class_tokens` ≥ 1 (how "
            f"many leading tokens to drop). Received: class_tokens={class_tokens!r}"
        )
    if (
        isinstance(statistics_batches, bool)
        or not isinstance(statistics_batches, int)
        or statistics_batches < 1
    ):
        raise ValueError(
            f"{who}: `statistics_batches` must be a positive integer. "
            f"Received: statistics_batches={statistics_batches!r}"
        )
