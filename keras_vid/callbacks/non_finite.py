"""`NonFiniteMonitor`: say which batch and which feature made a step unsafe."""

import math
import warnings

import keras
import numpy as np

from keras_vid.callbacks._state import sync_model_state
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

    It reports the first non-finite batch of an epoch as it happens
    (`epoch`, `batch`, global step) and, at the end of each epoch, how many
    steps were skipped in it, including skips that left the logged loss
    finite (out-of-range labels on JAX, whose loss is finite but wrong).

    Args:
        action: `"warn"` (a `RuntimeWarning`, training goes on with the
            bad steps skipped), `"stop"` (warn and stop training, like
            `TerminateOnNaN`), or `"raise"` (raise `FloatingPointError`;
            the model's weights are those from before the bad step).

    Example:

    ```python
    distiller.fit(ds, epochs=10, callbacks=[keras_vid.callbacks.NonFiniteMonitor("stop")])
    print(int(distiller.skipped_steps.numpy()))
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
        self._reported_step = None

    def _skipped(self):
        return int(keras.ops.convert_to_numpy(self.model.skipped_steps.value))

    def on_train_begin(self, logs=None):
        self._seen = self._skipped()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._seen
        self._reported_step = None

    def on_train_batch_end(self, batch, logs=None):
        if self._reported_step is not None or not logs:
            return
        loss = logs.get("loss")
        if loss is None or math.isfinite(float(np.asarray(loss))):
            return
        self._report(f"epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        sync_model_state(self.model)
        count = self._skipped()
        new = count - self._epoch_start
        if new and (self._reported_step is None or new > 1):
            self._report(f"epoch {epoch + 1}", summary=new)
        self._seen = count

    def _report(self, where, summary=None):
        sync_model_state(self.model)
        count = self._skipped()
        flags = keras.ops.convert_to_numpy(self.model.last_skip_flags.value)
        step = int(keras.ops.convert_to_numpy(self.model.last_skipped_step.value))
        if count == self._seen and summary is None:
            message = (
                f"{self.model.name}: the loss turned non-finite at {where}, but no step "
                "was skipped; check the compiled loss and the learning rate."
            )
        else:
            self._reported_step = step
            lead = (
                f"{summary} training step(s) skipped in {where}; the latest, step {step}"
                if summary is not None
                else f"training step {step} ({where}) was skipped"
            )
            message = (
                f"{self.model.name}: {lead}: {describe(self.model.pairs, flags)}. "
                "Weights, optimizer state and BatchNorm statistics were left as "
                f"they were before it. {count} step(s) skipped since the model "
                "was created (`skipped_steps`)."
            )
        self._seen = count
        if self.action == "raise":
            raise FloatingPointError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        if self.action == "stop":
            self.model.stop_training = True
