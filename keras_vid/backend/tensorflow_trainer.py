"""`VIDDistiller` steps on TensorFlow: the teacher runs before the tape opens.

A step whose flags are raised (`keras_vid.step_guard`) applies no update and
puts back the BatchNorm statistics its forward pass changed.

Under a `tf.distribute` strategy (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`) each replica runs this step on its slice of
the global batch:

- Loss scaling follows Keras: the compiled task loss comes back from
  `compute_loss` already divided by the number of replicas R (Keras's
  `scale_loss_for_distribution`), and the optimizer sums the replicas'
  gradients. The VID and KD terms are local batch means, so the step
  divides the whole local loss by R as well: the summed gradient is that of
  the global-batch mean (exactly, when the replicas' slices are equal).
- The logged `loss`, `task_loss`, `vid_k` and `kd_loss` are the local
  (unscaled) batch means; the trackers are summed over replicas, so the
  epoch logs are global-batch means.
- The replicas agree on the step guard: the flags are summed over replicas
  before the update, so a NaN in one replica's slice skips the update on
  every replica.
"""

import tensorflow as tf
from keras.utils import unpack_x_y_sample_weight


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _local_losses(loss, terms):
    """The local (per-replica, unscaled) loss and terms, and the loss to
    differentiate (the local loss divided by the number of replicas)."""
    replicas = _num_replicas()
    if replicas == 1:
        return loss, loss, terms
    # As Keras's `scale_loss_for_distribution` / `unscale_loss_for_distribution`.
    terms = dict(terms)
    scaled_task = terms["task_loss"]
    terms["task_loss"] = scaled_task * tf.cast(replicas, scaled_task.dtype)
    loss = loss - scaled_task + terms["task_loss"]
    return loss, loss * tf.cast(1.0 / replicas, loss.dtype), terms


def _agree(flags, ok):
    """Every replica's flags raised on any replica, and whether all are clear."""
    context = tf.distribute.get_replica_context()
    if context is None or _num_replicas() == 1:
        return flags, ok
    flags = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(flags, "float32"))
    flags = tf.cast(flags > 0, "int32")
    return flags, tf.logical_not(tf.reduce_any(flags > 0))


def _apply(optimizer, gradients, variables):
    optimizer.apply(gradients, variables)


def _restore(state_variables, saved_state):
    for variable, value in zip(state_variables, saved_state):
        variable.assign(value)


def _apply_if(ok, optimizer, gradients, variables, state_variables, saved_state):
    def apply():
        _apply(optimizer, gradients, variables)
        return tf.constant(True)

    def restore():
        _restore(state_variables, saved_state)
        return tf.constant(False)

    if not tf.distribute.has_strategy() or (
        tf.__internal__.distribute.strategy_supports_no_merge_call()
    ):
        tf.cond(ok, apply, restore)
        return

    # Under a strategy whose optimizer updates call `merge_call` (Mirrored),
    # the condition must be taken in the cross-replica context, as Keras's
    # LossScaleOptimizer does. `ok` is the same on every replica (`_agree`);
    # the gradients and the saved statistics are per replica, so they are
    # passed through `merge_call` rather than captured.
    def cross_replica(distribution, ok, gradients, saved_state):
        ok = distribution.experimental_local_results(ok)[0]

        def apply_all():
            distribution.extended.call_for_each_replica(
                _apply, args=(optimizer, gradients, variables)
            )
            return tf.constant(True)

        def restore_all():
            distribution.extended.call_for_each_replica(
                _restore, args=(state_variables, saved_state)
            )
            return tf.constant(False)

        tf.cond(ok, apply_all, restore_all)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(ok, gradients, saved_state)
    )


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
        loss, replica_loss, terms = _local_losses(loss, terms)
        scaled_loss = distiller.optimizer.scale_loss(replica_loss)
    variables = distiller.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    flags, ok = distiller.step_flags(x, y, teacher_outputs, student_outputs, loss, gradients)
    flags, ok = _agree(flags, ok)
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
    loss, _, terms = _local_losses(loss, terms)
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
