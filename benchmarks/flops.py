"""Analytic step cost of the benchmark configurations, in multiply-accumulates.

The floor ratio compares a VID step with one student training step plus one
teacher inference pass; a VID step also trains the regressors μ(s) of the
heads, which the floor does not count. This script counts the MACs of every
convolution and dense layer with `keras_vid.flops` (forward pass; a training
step is taken as 3× the forward pass: forward, gradient w.r.t. inputs,
gradient w.r.t. weights) and prints the floor ratio that compute alone predicts:

    (3·S + T + 3·H) / (3·S + T)

with S, T, H the forward MACs of the student, the teacher and the heads.

Usage:
    KERAS_BACKEND=torch python benchmarks/flops.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_step import CONFIGS, GROUPS, NUM_CLASSES  # noqa: E402

from keras_vid.flops import head_macs as vid_head_macs  # noqa: E402
from keras_vid.flops import model_macs  # noqa: E402


def head_macs(student, teacher, pairs):
    """Forward MACs per example of the default VID heads on `pairs`."""
    import keras_vid

    total = 0
    for s_name, t_name in pairs:
        head = keras_vid.VIDHead()
        head.build(student.get_layer(s_name).output.shape, teacher.get_layer(t_name).output.shape)
        total += vid_head_macs(head)
    return total


def main():
    from keras_vid.experiments.models import wide_resnet

    pairs = [(g, g) for g in GROUPS]
    for name in ("small", "wrn"):
        config = CONFIGS[name]
        teacher = wide_resnet(*config["teacher"], NUM_CLASSES, config["input_shape"])
        student = wide_resnet(*config["student"], NUM_CLASSES, config["input_shape"])
        t, s = model_macs(teacher), model_macs(student)
        h = head_macs(student, teacher, pairs)
        floor = 3 * s + t
        print(
            f"{name}: teacher {t / 1e6:.1f} M, student {s / 1e6:.1f} M, heads {h / 1e6:.1f} M "
            f"MACs/example; floor 3S+T = {floor / 1e6:.1f} M; with heads "
            f"{(floor + 3 * h) / 1e6:.1f} M; predicted floor ratio {(floor + 3 * h) / floor:.3f}"
        )


if __name__ == "__main__":
    main()
