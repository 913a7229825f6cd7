"""`VIDDistiller` steps on TensorFlow: the teacher runs before the tape opens."""

import tensorflow as tf
from keras.utils import unpack_x_y_sample_weight


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = distiller.teacher_extractor(x, training=False)
    with tf.GradientTape() as tape:
        student_outputs = distiller.student_extractor(x, training=True)
        loss, terms = distiller.distillation_losses(
            x, y, sample_weight, student_outputs, teacher_outputs, training=True
        )
        scaled_loss = distiller.optimizer.scale_loss(loss)
    variables = distiller.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    distiller.optimizer.apply_gradients(zip(gradients, variables))
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = distiller.teacher_extractor(x, training=False)
    student_outputs = distiller.student_extractor(x, training=False)
    loss, terms = distiller.distillation_losses(
        x, y, sample_weight, student_outputs, teacher_outputs, training=False
    )
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
