"""`VIDDistiller` steps on PyTorch: the teacher runs under `torch.no_grad()`.

A step whose flags are raised (`keras_vid.step_guard`) applies no update and
puts back the BatchNorm statistics its forward pass changed.
"""

import torch
from keras.utils import unpack_x_y_sample_weight


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    with torch.no_grad():
        teacher_outputs = distiller.teacher_extractor(x, training=False)
    state_variables = distiller.step_state_variables
    saved_state = [v.value.detach().clone() for v in state_variables]
    distiller.zero_grad()
    student_outputs = distiller.student_extractor(x, training=True)
    loss, terms = distiller.distillation_losses(
        x, y, sample_weight, student_outputs, teacher_outputs, training=True
    )
    distiller.optimizer.scale_loss(loss).backward()
    variables = distiller.trainable_variables[:]
    gradients = [v.value.grad for v in variables]
    with torch.no_grad():
        flags, ok = distiller.step_flags(x, y, teacher_outputs, student_outputs, loss, gradients)
        if bool(ok):
            distiller.optimizer.apply(gradients, variables)
        else:
            for variable, value in zip(state_variables, saved_state):
                variable.assign(value)
        distiller.record_step(flags, ok)
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    with torch.no_grad():
        teacher_outputs = distiller.teacher_extractor(x, training=False)
        student_outputs = distiller.student_extractor(x, training=False)
        loss, terms = distiller.distillation_losses(
            x, y, sample_weight, student_outputs, teacher_outputs, training=False
        )
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
