"""`VIDDistiller` steps on TensorFlow: the teacher runs before the tape opens.

A step whose flags are raised (`keras_vid.StepGuard`) applies no update and
puts back the BatchNorm statistics its forward pass changed.

Under a `tf.distribute` strategy (`MirroredStrategy`,
`MultiWorkerMirroredStrategy`) each replica runs this step on its slice of
the global batch:

- Loss scaling follows Keras: `compute_loss` returns the replica's loss
  divided by the number of replicas R (the compiled loss as Keras's
  `scale_loss_for_distribution` does, the VID and KD terms likewise), and
  the optimizer sums the replicas' gradients: the summed gradient is that of
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

from keras_vid import compat


def _sum_over_replicas(flags):
    context = tf.distribute.get_replica_context()
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(flags, "float32"))


def _distributed():
    return (
        tf.distribute.get_replica_context() is not None
        and tf.distribute.get_strategy().num_replicas_in_sync > 1
    )


def _apply_if(ok, optimizer, gradients, variables, restore, saved):
    """Apply the update when `ok`, else `restore(saved)` the step's state."""

    def apply():
        optimizer.apply(gradients, variables)
        return tf.constant(True)

    def skip():
        restore(saved)
        return tf.constant(False)

    if not tf.distribute.has_strategy() or compat.strategy_supports_no_merge_call():
        tf.cond(ok, apply, skip)
        return

    # Under a strategy whose optimizer updates call `merge_call` (Mirrored),
    # the condition must be taken in the cross-replica context, as Keras's
    # LossScaleOptimizer does. `ok` is the same on every replica (`agree`);
    # the gradients and the saved statistics are per replica, so they are
    # passed through `merge_call` rather than captured.
    def cross_replica(distribution, ok, gradients, saved):
        ok = distribution.experimental_local_results(ok)[0]

        def apply_all():
            distribution.extended.call_for_each_replica(
                optimizer.apply, args=(gradients, variables)
            )
            return tf.constant(True)

        def restore_all():
            distribution.extended.call_for_each_replica(restore, args=(saved,))
            return tf.constant(False)

        tf.cond(ok, apply_all, restore_all)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, gradients, saved))


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    guard, optimizer = distiller.step_guard, distiller.optimizer
    teacher_outputs = distiller._teacher_features(x)
    saved = guard.snapshot()
    with tf.GradientTape() as tape:
        loss, student_outputs, labels_ok = distiller._forward_loss(
            x, y, sample_weight, teacher_outputs, training=True
        )
        scaled_loss = optimizer.scale_loss(loss)
    variables = distiller.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    flags, ok = guard.check(x, teacher_outputs, labels_ok, loss, gradients, optimizer)
    if _distributed():
        flags, ok = guard.agree(flags, _sum_over_replicas)
    _apply_if(ok, optimizer, gradients, variables, guard.restore, saved)
    guard.record(flags, ok, optimizer.iterations)
    return distiller._log_step(x, y, sample_weight, student_outputs, loss)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = distiller._teacher_features(x)
    loss, student_outputs, _ = distiller._forward_loss(
        x, y, sample_weight, teacher_outputs, training=False
    )
    return distiller._log_step(x, y, sample_weight, student_outputs, loss)
