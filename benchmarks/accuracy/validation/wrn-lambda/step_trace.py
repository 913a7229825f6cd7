"""The first 40 steps of VID on WRN-16-1 with the 80.6 % teacher at λ
`argv[1]` (seed 0's labelled images, the task's optimizer): the loss terms
and the student's largest weight per step, to see whether a λ is stable.

    python benchmarks/accuracy/validation/wrn-lambda/step_trace.py 30
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
import accuracy  # noqa: E402

weight = float(sys.argv[1])
task = accuracy.TASKS["cifar10-wrn-cnn80-100"]
data = accuracy.load(task)
teacher = accuracy.manifest_teacher("cifar10-cnn-32-64-128-256")
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
index = accuracy._stratified(data.y_pool, task.labelled_per_class, rng)
x, y = task.augment(data.x_pool[index], rng), data.y_pool[index]
keras.utils.set_random_seed(1000)
student = task.student(data)
settings = accuracy.vid_settings({"vid_weight": weight})
model, kwargs = accuracy.build("vid", teacher, student, None, settings)
model.compile(optimizer=task.optimizer(task.steps), loss=accuracy.CE, **kwargs)
model.fit(x[:128], y[:128], batch_size=128, epochs=1, verbose=0)  # calibrates, one step
for step in range(40):
    batch = np.random.default_rng(step).choice(len(y), task.batch_size, replace=False)
    logs = model.train_on_batch(x[batch], y[batch], return_dict=True)
    largest = max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(v)))) for v in student.trainable_variables
    )
    terms = " ".join(f"{k} {float(v):.3g}" for k, v in logs.items())
    print(f"step {step + 1:2d}: {terms}; largest student weight {largest:.3g}", flush=True)
