"""The suite with a spatial head: on a map → map pair, μ's first layer is a
3×3 convolution over the student feature instead of a pointwise layer.

The idea measured: VID maximises a lower bound on the mutual information
between the teacher's and the student's features, and the bound is tighter
the more flexible q(t|s) is. With a pointwise μ, each teacher position must
be decoded from the student's channels at the same position, so a student
narrower than the teacher is pushed to code every teacher channel linearly
where it stands; with a 3×3 neighbourhood the head may decode what the
student keeps spread over neighbouring positions, and the student is asked
to keep the information rather than one code for it. Where the narrow
students lose to KD when VID is added, that constraint is one suspect.

    python benchmarks/accuracy/validation/spatial-head/spatial_head.py \\
        --split validation --tasks digits-10,fmnist-10,fmnist-100 --seeds 0,1 \\
        --baseline benchmarks/accuracy/validation/base --methods vid,kd+vid \\
        --output runs/val-spatial

Every argument is the suite's (`benchmarks/accuracy.py`).
"""

import dataclasses
import os
import sys

import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import accuracy  # noqa: E402

from keras_vid import vid_head  # noqa: E402

_plan = vid_head.plan_regressor


def _spatial_plan(student_shape, teacher_shape, *args, **kwargs):
    plan = _plan(student_shape, teacher_shape, *args, **kwargs)
    if len(student_shape) != 4 or len(teacher_shape) != 4:
        return plan  # vectors and tokens keep the pointwise head
    first = plan.layers[0]
    conv = keras.layers.Conv2D(
        first.units, 3, padding="same", use_bias=first.use_bias, name=first.name
    )
    return dataclasses.replace(plan, layers=[conv, *plan.layers[1:]])


def main(argv=None):
    vid_head.plan_regressor = _spatial_plan
    return accuracy.main(argv)


if __name__ == "__main__":
    main()
