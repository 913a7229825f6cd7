"""`NonFiniteMonitor`: say which batch and which feature made a step unsafe."""

import math
import warnings

import keras
import numpy as np

from keras_vid.compat import sync_trainer_state
from keras_vid.step_guard import describe

ACTIONS = ("warn", "stop", "raise")


class NonFiniteMonitor(keras.callbacks.Callback):
    """Reports the training steps `VIDDistiller` skipped, and why.

    A step is skipped (no update; BatchNorm statistics put back) when its
    input batch or a teacher feature holds NaN or Inf, when a label is
    outside the logits' classes, or when the loss or its gradients are
    non-finite (see `keras_vid.step_guard`). The loss trackers still record
    the step, so the epoch's `loss` turns NaN and
    `keras.callbacks.TerminateOnNaN` still stops training; this callback
    names the culprit: the input, the labels, the teacher logits, or the
    teacher feature of pair k.

    `VIDDistiller.fit` adds one with `action="warn"` unless the callbacks
    already contain one.

    With `action="warn"` it reads nothing but the logs while training runs
    (it is `async_safe`, so it does not force a device sync per batch) and
    reports at the end of each epoch: how many steps were skipped, the
    batch where the loss first turned non-finite, and the culprits of the
    latest skipped step, including skips that left the logged loss finite
    (non-finite gradients). With `"stop"` and `"raise"` it reports at the
    first non-finite batch, as it happens.

    With `"warn"`, an epoch in which every step was skipped (at least two)
    also stops training, with a warning (the other actions stop at the
    first bad batch): no update was applied, so
    the next epoch would start from the same weights and, when the weights
    themselves make the loss overflow (a distillation term that grew
    until it was infinite: `vid_weight` or the learning rate too high for
    the model), skip every step again. The warning names the logged terms
    that were not finite.

    Args:
        action: `"warn"` (a `RuntimeWarning` per epoch with skipped steps;
            training goes on with the bad steps skipped), `"stop"` (warn
            at the first non-finite batch and stop training, like
            `TerminateOnNaN`), or `"raise"` (raise `FloatingPointError`
            there; the model's weights are those from before the bad
            step).

    Example:

    ```python
    distiller.fit(ds, epochs=10, callbacks=[keras_vid.callbacks.NonFiniteMonitor("stop")])
    print(int(distiller.step_guard.skipped_steps.numpy()))
    ```
    """

    def __init__(self, action="warn"):
        super().__init__()
        if action not in ACTIONS:
            raise ValueError(f"`action` must be one of {ACTIONS}. Received: action={action!r}")
        self.action = action
        self._epoch = 0
        self._seen = 0
        self._epoch_start = 0
        self._first_bad_batch = None
        self._iterations = 0

    @property
    def async_safe(self):
        """Keras may run the batch hook off the training thread: with "warn"
        it only reads the logs it is given."""
        return self.action == "warn"

    def _skipped(self):
        return _read(self.model.step_guard.skipped_steps)

    def _trained_steps(self):
        return _read(self.model.optimizer.iterations)

    def on_train_begin(self, logs=None):
        sync_trainer_state(self.model)
        self._seen = self._skipped()
        self._iterations = self._trained_steps()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._seen
        self._first_bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
        if self._first_bad_batch is not None or not logs:
            return
        loss = logs.get("loss")
        if loss is None or _finite(loss):
            return
        self._first_bad_batch = batch
        if self.action != "warn":
            self._report(f"at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.action != "warn" and self._first_bad_batch is not None:
            return  # reported as it happened
        sync_trainer_state(self.model)
        skipped = self._skipped() - self._epoch_start
        iterations = self._trained_steps()
        trained, self._iterations = iterations - self._iterations, iterations
        if skipped > 0 or self._first_bad_batch is not None:
            where = f"in epoch {epoch + 1}"
            if self._first_bad_batch is not None:
                batch = self._first_bad_batch + 1
                where += f" (the loss first turned non-finite at batch {batch})"
            self._report(where)
        if skipped >= 2 and trained == 0:
            self._stop_dead_run(epoch, skipped, logs)

    def _stop_dead_run(self, epoch, skipped, logs):
        bad = [k for k, v in (logs or {}).items() if np.size(v) == 1 and not _finite(v)]
        terms = f" Not finite in the epoch's logs: {', '.join(bad)}." if bad else ""
        warnings.warn(
            f"{self.model.name}: every step of epoch {epoch + 1} ({skipped}) was skipped, "
            "so no weight changed; training stopped, as the next epoch would start from "
            f"the same weights.{terms} A distillation term that grew until it overflowed "
            "means its weight (`vid_weight`) or the learning rate is too high for this "
            "model; a non-finite input or teacher feature is named in the warning above.",
            RuntimeWarning,
            stacklevel=2,
        )
        self.model.stop_training = True

    def _report(self, where):
        sync_trainer_state(self.model)
        count = self._skipped()
        new = count - self._epoch_start
        guard = self.model.step_guard
        flags = _read(guard.last_skip_flags)
        step = _read(guard.last_skipped_step)
        if new == 0:
            message = (
                f"{self.model.name}: the loss turned non-finite {where}, but no step "
                "was skipped; check the compiled loss and the learning rate."
            )
        else:
            message = (
                f"{self.model.name}: {new} training step(s) skipped {where}; the latest, "
                f"step {step}: {describe(self.model.pairs, flags)}. Weights, optimizer "
                "state and BatchNorm statistics were left as they were before each "
                f"skipped step. {count} step(s) skipped since the model was created "
                "(`skipped_steps`)."
            )
        self._seen = count
        if self.action == "raise":
            raise FloatingPointError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        if self.action == "stop":
            self.model.stop_training = True


def _finite(value):
    """Whether a logged scalar (a float, a NumPy or backend scalar) is finite."""
    return math.isfinite(float(np.asarray(value)))


def _read(variable):
    """A variable's value as Python ints, on every backend and under a
    `tf.distribute` strategy (a mirrored variable). Not `np.array`: NumPy 2
    warns that a torch or TensorFlow tensor's `__array__` takes no `copy`."""
    value = keras.ops.add(variable, 0)  # a tensor, also of a mirrored variable
    if len(value.shape) == 0:
        return int(value)
    return [int(item) for item in keras.ops.unstack(value)]
