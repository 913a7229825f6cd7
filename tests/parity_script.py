"""Prints the distiller's losses for fixed weights and a fixed batch, as JSON.

Run under each backend (`KERAS_BACKEND=...`) by `test_parity.py`; the
weights come from a seeded NumPy generator, so every backend sees the same
model.
"""

import json
import sys

import keras
import numpy as np
from conftest import CNN_PAIRS, small_cnn

from keras_vid import VIDDistiller


def losses():
    rng = np.random.default_rng(42)
    distiller = VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        vid_weight=[1.0, 0.5, 2.0],
        kd_weight=0.5,
    )
    variables = distiller.teacher.weights + distiller.student.weights
    variables += [v for head in distiller.heads for v in head.weights]
    for variable in sorted(variables, key=lambda v: v.path):
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "teacher_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, size=shape)
        elif "statistics_count" in variable.path:  # statistics already fixed
            value = np.full(shape, 1e6)
        elif "gamma" in variable.path:
            value = rng.uniform(0.8, 1.2, size=shape)
        else:
            value = rng.normal(scale=0.3, size=shape)
        variable.assign(value.astype("float32"))
    x = rng.random((16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=16)
    before = distiller.test_on_batch(x, y, return_dict=True)
    distiller.train_on_batch(x, y)
    after = distiller.test_on_batch(x, y, return_dict=True)
    return {"before": before, "after": after}


if __name__ == "__main__":
    json.dump(losses(), sys.stdout)
