"""`WeightSchedule`: λ and the KD weight as functions of the epoch."""

import math
import numbers

import keras
import numpy as np

from keras_vid.arguments import non_negative
from keras_vid.compat import sync_trainer_state

KINDS = ("constant", "linear", "cosine")


class EpochSchedule:
    """A loss weight that moves from `start` to `end` over `epochs` epochs.

    With `p = min(epoch / epochs, 1)` the value at (0-based) `epoch` is

    - `"constant"`: `start` (`end` and `epochs` are not used);
    - `"linear"`: `start + (end − start) · p`;
    - `"cosine"`: `end + (start − end) · (1 + cos(π p)) / 2`.

    Epoch 0 uses `start`; epoch `epochs` and every later one use `end` (as
    `keras.optimizers.schedules.CosineDecay` does with steps). `end < start`
    decays the weight, `end > start` ramps it up.

    Args:
        kind: `"constant"`, `"linear"` or `"cosine"`.
        start: the value at epoch 0, a finite number ≥ 0.
        end: the value from epoch `epochs` on, a finite number ≥ 0
            (required unless `kind="constant"`).
        epochs: number of epochs from `start` to `end`, a positive integer
            (required unless `kind="constant"`).

    Example:

    ```python
    schedule = EpochSchedule("cosine", start=1.0, end=0.1, epochs=20)
    schedule(0), schedule(10), schedule(20)   # 1.0, 0.55, 0.1
    ```
    """

    def __init__(self, kind, start, end=None, epochs=None):
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
        self.kind = kind
        self.start = non_negative(start, "start")
        if kind == "constant":
            self.end = self.start if end is None else non_negative(end, "end")
            if end is not None and self.end != self.start:
                raise ValueError(
                    f"A constant schedule has one value: `end` ({end!r}) must be None or "
                    f"equal `start` ({start!r})."
                )
            self.epochs = epochs
            return
        if end is None:
            raise ValueError(f"A {kind!r} schedule needs `end`. Received: end=None")
        self.end = non_negative(end, "end")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
            raise ValueError(
                f"`epochs` must be a positive integer for a {kind!r} schedule. "
                f"Received: epochs={epochs!r}"
            )
        self.epochs = int(epochs)

    def __call__(self, epoch):
        if self.kind == "constant":
            return self.start
        progress = min(max(epoch, 0) / self.epochs, 1.0)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * progress
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __repr__(self):
        if self.kind == "constant":
            return f"EpochSchedule('constant', start={self.start})"
        return (
            f"EpochSchedule({self.kind!r}, start={self.start}, end={self.end}, "
            f"epochs={self.epochs})"
        )


def _as_schedule(value, argument):
    """A float or a callable epoch → value; floats are checked now."""
    if callable(value):
        return value
    return EpochSchedule("constant", non_negative(value, argument))


class WeightSchedule(keras.callbacks.Callback):
    """Sets a `VIDDistiller`'s λ and KD weight at the start of every epoch.

    At `on_epoch_begin(epoch)` it assigns `distiller.vid_weights` (λ_k of
    each pair) and `distiller.kd_weight` from their schedules, so the whole
    epoch trains on

        task_loss + Σ_k λ_k(epoch) · vid_k + kd_weight(epoch) · kd_loss

    and at the end of the epoch it adds the applied values to the logs as
    `vid_weight_<k>` and `kd_weight` (so they appear in `History.history`).
    A weight left as `None` is not touched and not logged. The values set
    for the last epoch stay in the distiller after `fit`.

    Args:
        vid_weight: λ for every pair, or a list with one entry per pair.
            Each entry is a number ≥ 0 (constant), an `EpochSchedule`, or any
            callable `epoch → number ≥ 0` (epochs count from 0, including
            `initial_epoch`). `None` keeps the compiled λ.
        kd_weight: the KD weight, in the same forms. `None` keeps the
            compiled value. A distiller compiled with `kd_weight=0` computes
            (and logs) the KD term under a schedule that sets it.

    Example:

    ```python
    schedule = WeightSchedule(
        vid_weight=EpochSchedule("cosine", start=2.0, end=0.2, epochs=30),
        kd_weight=EpochSchedule("linear", start=0.0, end=1.0, epochs=10),
    )
    history = distiller.fit(x, y, epochs=30, callbacks=[schedule])
    history.history["vid_weight_0"], history.history["kd_weight"]
    ```
    """

    def __init__(self, vid_weight=None, kd_weight=None):
        super().__init__()
        if vid_weight is None and kd_weight is None:
            raise ValueError(
                "WeightSchedule: pass `vid_weight`, `kd_weight` or both; "
                "with neither there is nothing to schedule."
            )
        if isinstance(vid_weight, (list, tuple)):
            if not vid_weight:
                raise ValueError("`vid_weight` is an empty list: give one entry per pair.")
            self._vid = [_as_schedule(w, f"vid_weight[{i}]") for i, w in enumerate(vid_weight)]
            self._vid_per_pair = True
        elif vid_weight is not None:
            self._vid = _as_schedule(vid_weight, "vid_weight")
            self._vid_per_pair = False
        else:
            self._vid = None
        self._kd = None if kd_weight is None else _as_schedule(kd_weight, "kd_weight")
        self.applied = {}

    @property
    def schedules_kd(self):
        """Whether this schedule sets `kd_weight` (the distiller then computes
        the KD term even when compiled with `kd_weight=0`)."""
        return self._kd is not None

    def _num_pairs(self):
        weights = getattr(self.model, "vid_weights", None)
        if weights is None or getattr(self.model, "kd_weight", None) is None:
            raise ValueError(
                "WeightSchedule needs a VIDDistiller (a model with `vid_weights` and "
                f"`kd_weight`). Model: {self.model!r}"
            )
        return int(weights.shape[0])

    def on_train_begin(self, logs=None):
        num_pairs = self._num_pairs()
        if self._vid is not None and self._vid_per_pair and len(self._vid) != num_pairs:
            raise ValueError(
                f"`vid_weight` has {len(self._vid)} entries but the distiller has "
                f"{num_pairs} pairs: pass one value or schedule for all pairs, or one per pair."
            )

    def values(self, epoch):
        """`{"vid_weight_<k>": λ_k, "kd_weight": w}` scheduled for `epoch`."""
        values = {}
        if self._vid is not None:
            num_pairs = self._num_pairs()
            schedules = self._vid if self._vid_per_pair else [self._vid] * num_pairs
            for k, schedule in enumerate(schedules):
                name = f"vid_weight[{k}]" if self._vid_per_pair else "vid_weight"
                values[f"vid_weight_{k}"] = non_negative(
                    schedule(epoch), name, f" at epoch {epoch}"
                )
        if self._kd is not None:
            values["kd_weight"] = non_negative(self._kd(epoch), "kd_weight", f" at epoch {epoch}")
        return values

    def on_epoch_begin(self, epoch, logs=None):
        values = self.values(epoch)
        sync_trainer_state(self.model)  # assign onto the current state (JAX)
        if self._vid is not None:
            lambdas = [values[f"vid_weight_{k}"] for k in range(self._num_pairs())]
            self.model.vid_weights.assign(np.asarray(lambdas, dtype="float32"))
        if self._kd is not None:
            self.model.kd_weight.assign(np.asarray(values["kd_weight"], dtype="float32"))
        self.applied = values

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.applied)
