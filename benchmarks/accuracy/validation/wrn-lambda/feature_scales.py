"""Root mean square of the paired student features at initialisation:
WRN-16-1's group outputs (residual sums) against the CNN student's
BatchNorm → ReLU outputs, on 256 CIFAR-10 training images.

    python benchmarks/accuracy/validation/wrn-lambda/feature_scales.py
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
import accuracy  # noqa: E402

data = accuracy.load(accuracy.TASKS["cifar10-wrn-cnn80-100"])
x = data.x_pool[:256]
students = [
    ("WRN-16-1", accuracy._wrn_student, ["group1", "group2", "group3"]),
    ("CNN 8-16-32-64", accuracy._cifar_student, ["block1", "block2", "block3", "block4"]),
]
for name, build, layers in students:
    keras.utils.set_random_seed(1000)
    student = build(data)
    features = keras.Model(student.input, [student.get_layer(n).output for n in layers])
    for layer, value in zip(layers, features(x, training=True)):
        rms = float(np.sqrt(np.mean(np.square(np.asarray(value)))))
        print(f"{name:15s} {layer:7s} {tuple(value.shape[1:])!s:13s} rms {rms:.2f}")
