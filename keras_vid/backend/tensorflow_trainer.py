"""`VIDDistiller` steps on TensorFlow: the teacher runs before the tape opens.

A step whose flags are raised (`keras_vid.step_guard`) applies no update and
puts back the BatchNorm statistics its forward pass changed.
"""

import tensorflow as tf
from keras.utils import unpack_x_y_sample_weight


def _apply_if(ok, optimizer, gradients, variables, state_variables, saved_state):
    def apply():
        optimizer.apply(gradients, variables)
        return tf.constant(True)

    def restore():
        for variable, value in zip(state_variables, saved_state):
            variable.assign(value)
        return tf.constant(False)

    if not tf.distribute.has_strategy() or (
        tf.__internal__.distribute.strategy_supports_no_merge_call()
    ):
        tf.cond(ok, apply, restore)
        return

    # Under a strategy whose optimizer updates call `merge_call` (Mirrored),
    # the condition must be taken in the cross-replica context, as Keras's
    # LossScaleOptimizer does; every replica agrees on `ok` first.
    ok = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.MIN, tf.cast(ok, "float32")
    )

    def cross_replica(distribution, ok, gradients):
        ok = distribution.experimental_local_results(ok)[0] > 0

        def apply_all():
            distribution.extended.call_for_each_replica(
                lambda g: optimizer.apply(g, variables), args=(gradients,)
            )
            return tf.constant(True)

        def restore_all():
            distribution.extended.call_for_each_replica(restore)
            return tf.constant(False)

        tf.cond(ok, apply_all, restore_all)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, gradients))


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = distiller.teacher_extractor(x, training=False)
    state_variables = distiller.step_state_variables
    saved_state = [tf.identity(v.value) for v in state_variables]
    with tf.GradientTape() as tape:
        student_outputs = distiller.student_extractor(x, training=True)
        loss, terms = distiller.distillation_losses(
            x, y, sample_weight, student_outputs, teacher_outputs, training=True
        )
        scaled_loss = distiller.optimizer.scale_loss(loss)
    variables = distiller.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    flags, ok = distiller.step_flags(x, y, teacher_outputs, student_outputs, loss, gradients)
    _apply_if(ok, distiller.optimizer, gradients, variables, state_variables, saved_state)
    distiller.record_step(flags, ok)
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = distiller.teacher_extractor(x, training=False)
    student_outputs = distiller.student_extractor(x, training=False)
    loss, terms = distiller.distillation_losses(
        x, y, sample_weight, student_outputs, teacher_outputs, training=False
    )
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
