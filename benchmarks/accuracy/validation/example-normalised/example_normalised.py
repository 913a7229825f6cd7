"""The suite with per-example normalised targets: on a map pair the head
regresses the teacher feature (standardised per channel, as by default)
divided by its root mean square over that example's positions and channels.

The idea measured: attention transfer, the one feature method that adds to
KD on fmnist-100, compares maps normalised per example, so an image's
overall feature energy does not count, only its pattern. VID's target keeps
each image's energy; dividing it out gives VID the same invariance while it
still predicts every channel.

    python benchmarks/accuracy/validation/example-normalised/example_normalised.py \\
        --split validation --tasks digits-10,fmnist-10,fmnist-100 --seeds 0,1 \\
        --baseline runs/val-base --methods vid,kd+vid --output runs/val-example

Every argument is the suite's (`benchmarks/accuracy.py`).
"""

import os
import sys

from keras import ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import accuracy  # noqa: E402

from keras_vid import VIDHead  # noqa: E402

_target = VIDHead.target


def _target_per_example(self, teacher, training=None, padding_mask=None):
    t = _target(self, teacher, training=training, padding_mask=padding_mask)
    if len(t.shape) < 4:  # vectors and tokens keep the default target
        return t
    axes = tuple(range(1, len(t.shape)))
    return t * ops.rsqrt(ops.mean(ops.square(t), axis=axes, keepdims=True) + 1e-6)


def main(argv=None):
    VIDHead.target = _target_per_example
    return accuracy.main(argv)


if __name__ == "__main__":
    main()
