"""`VIDDistiller` steps on JAX: pure functions of the model state.

The teacher's forward pass is evaluated outside `jax.value_and_grad`, so it
is a constant of the differentiated function; the student and the heads run
once inside it. A step whose flags are raised (`keras_vid.step_guard`) keeps
the previous trainable, non-trainable and optimizer state.
"""

import jax
import keras
from keras.utils import unpack_x_y_sample_weight


def _mapping(variables, values):
    return list(zip(variables, values))


def _forward(distiller, trainable, non_trainable, x, y, sample_weight, teacher_outputs, training):
    """Student forward pass and losses under a scope that maps every model
    variable to its value in `state`. Returns the loss, the terms, the
    student outputs and the updated non-trainable values."""
    mapping = _mapping(distiller.trainable_variables, trainable)
    mapping += _mapping(distiller.non_trainable_variables, non_trainable)
    with keras.StatelessScope(state_mapping=mapping) as scope:
        student_outputs = distiller.student_extractor(x, training=training)
        loss, terms = distiller.distillation_losses(
            x, y, sample_weight, student_outputs, teacher_outputs, training=training
        )
    non_trainable = [scope.get_current_value(v) for v in distiller.non_trainable_variables]
    return loss, terms, student_outputs, non_trainable


def _teacher_outputs(distiller, trainable, non_trainable, x):
    mapping = _mapping(distiller.trainable_variables, trainable)
    mapping += _mapping(distiller.non_trainable_variables, non_trainable)
    with keras.StatelessScope(state_mapping=mapping):
        outputs = distiller.teacher_extractor(x, training=False)
    return jax.tree_util.tree_map(jax.lax.stop_gradient, outputs)


def _log(distiller, metrics_values, x, y, sample_weight, student_outputs, loss, terms):
    with keras.StatelessScope(
        state_mapping=_mapping(distiller.metrics_variables, metrics_values)
    ) as scope:
        logs = distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
    metrics_values = [
        scope.get_current_value(v) if scope.get_current_value(v) is not None else v.value
        for v in distiller.metrics_variables
    ]
    return logs, metrics_values


def _record(distiller, non_trainable, optimizer_values, flags, ok):
    mapping = _mapping(distiller.non_trainable_variables, non_trainable)
    mapping += _mapping(distiller.optimizer.variables, optimizer_values)
    with keras.StatelessScope(state_mapping=mapping) as scope:
        distiller.record_step(flags, ok)
    return [scope.get_current_value(v) for v in distiller.non_trainable_variables]


def train_step(distiller, state, data):
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = _teacher_outputs(distiller, trainable, non_trainable, x)
    optimizer = distiller.optimizer

    def loss_fn(trainable, non_trainable):
        loss, terms, student_outputs, non_trainable = _forward(
            distiller,
            trainable,
            non_trainable,
            x,
            y,
            sample_weight,
            teacher_outputs,
            training=True,
        )
        with keras.StatelessScope(state_mapping=_mapping(optimizer.variables, optimizer_values)):
            scaled_loss = optimizer.scale_loss(loss)
        return scaled_loss, (loss, terms, student_outputs, non_trainable)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (loss, terms, student_outputs, new_non_trainable)), grads = grad_fn(
        trainable, non_trainable
    )
    flags, ok = distiller.step_flags(x, y, teacher_outputs, student_outputs, loss, grads)
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
        distiller, metrics_values, x, y, sample_weight, student_outputs, loss, terms
    )
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


def test_step(distiller, state, data):
    trainable, non_trainable, metrics_values = state
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    teacher_outputs = _teacher_outputs(distiller, trainable, non_trainable, x)
    loss, terms, student_outputs, non_trainable = _forward(
        distiller,
        trainable,
        non_trainable,
        x,
        y,
        sample_weight,
        teacher_outputs,
        training=False,
    )
    logs, metrics_values = _log(
        distiller, metrics_values, x, y, sample_weight, student_outputs, loss, terms
    )
    return logs, (trainable, non_trainable, metrics_values)
