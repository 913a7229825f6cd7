"""`VIDDistiller` steps on JAX: pure functions of the model state.

The teacher's forward pass is evaluated outside `jax.value_and_grad`, so it
is a constant of the differentiated function; the student and the heads run
once inside it. Losses added by layers (`add_loss`, activity regularizers)
are collected by the scope, as Keras's own JAX trainer does. A step whose
flags are raised (`keras_vid.StepGuard`) keeps the previous trainable,
non-trainable and optimizer state.
"""

import jax
import keras
from keras.utils import unpack_x_y_sample_weight


def _scope(variables, values, collect_losses=False):
    mapping = []
    for group, group_values in zip(variables, values):
        mapping += list(zip(group, group_values))
    return keras.StatelessScope(state_mapping=mapping, collect_losses=collect_losses)


def _current(scope, variables):
    values = [scope.get_current_value(v) for v in variables]
    return [v.value if new is None else new for v, new in zip(variables, values)]


def _forward(distiller, state, x, y, sample_weight, teacher_outputs, training):
    """The student pass and the loss under `state` (trainable, non-trainable,
    metrics values): `(loss, student_outputs, labels_ok, new_state)`."""
    variables = (
        distiller.trainable_variables,
        distiller.non_trainable_variables,
        distiller.metrics_variables,
    )
    with _scope(variables, state, collect_losses=True) as scope:
        loss, student_outputs, labels_ok = distiller._forward_loss(
            x, y, sample_weight, teacher_outputs, training=training
        )
    new_state = [_current(scope, group) for group in variables[1:]]
    return loss, student_outputs, labels_ok, new_state


def _teacher_outputs(distiller, trainable, non_trainable, x):
    variables = (distiller.trainable_variables, distiller.non_trainable_variables)
    with _scope(variables, (trainable, non_trainable)):
        outputs = distiller._teacher_features(x)
    return jax.tree_util.tree_map(jax.lax.stop_gradient, outputs)


def _log(distiller, metrics_values, x, y, sample_weight, student_outputs, loss):
    with _scope((distiller.metrics_variables,), (metrics_values,)) as scope:
        logs = distiller._log_step(x, y, sample_weight, student_outputs, loss)
    return logs, _current(scope, distiller.metrics_variables)


def _record(distiller, non_trainable, optimizer_values, flags, ok):
    variables = (distiller.non_trainable_variables, distiller.optimizer.variables)
    with _scope(variables, (non_trainable, optimizer_values)) as scope:
        distiller.step_guard.record(flags, ok, distiller.optimizer.iterations)
    return _current(scope, distiller.non_trainable_variables)


def train_step(distiller, state, data):
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = _teacher_outputs(distiller, trainable, non_trainable, x)
    optimizer = distiller.optimizer

    def loss_fn(trainable):
        loss, student_outputs, labels_ok, new_state = _forward(
            distiller,
            (trainable, non_trainable, metrics_values),
            x,
            y,
            sample_weight,
            teacher_outputs,
            training=True,
        )
        with _scope((optimizer.variables,), (optimizer_values,)):
            scaled_loss = optimizer.scale_loss(loss)
        return scaled_loss, (loss, student_outputs, labels_ok, new_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (loss, student_outputs, labels_ok, new_state)), grads = grad_fn(trainable)
    new_non_trainable, metrics_values = new_state
    flags, ok = distiller.step_guard.check(x, teacher_outputs, labels_ok, loss, grads, optimizer)
    new_trainable, new_optimizer_values = optimizer.stateless_apply(
        optimizer_values, grads, trainable
    )
    trainable, non_trainable, optimizer_values = jax.tree_util.tree_map(
        lambda new, old: jax.numpy.where(ok, new, old),
        (new_trainable, new_non_trainable, new_optimizer_values),
        (trainable, non_trainable, optimizer_values),
    )
    non_trainable = _record(distiller, non_trainable, optimizer_values, flags, ok)
    logs, metrics_values = _log(
        distiller, metrics_values, x, y, sample_weight, student_outputs, loss
    )
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


def test_step(distiller, state, data):
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = _teacher_outputs(distiller, trainable, non_trainable, x)
    loss, student_outputs, _, (non_trainable, metrics_values) = _forward(
        distiller,
        (trainable, non_trainable, metrics_values),
        x,
        y,
        sample_weight,
        teacher_outputs,
        training=False,
    )
    logs, metrics_values = _log(
        distiller, metrics_values, x, y, sample_weight, student_outputs, loss
    )
    return logs, (trainable, non_trainable, metrics_values)
