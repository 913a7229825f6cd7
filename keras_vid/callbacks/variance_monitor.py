"""`VarianceMonitor`: the learned σ² of every VID pair, in the training logs."""

import keras
import numpy as np

from keras_vid.compat import sync_trainer_state

STATISTICS = ("min", "median", "max")


class VarianceMonitor(keras.callbacks.Callback):
    """Logs the min, median and max over channels of each pair's learned σ².

    A VID head learns σ² per teacher channel; a channel whose σ² grows large
    is one the student has given up predicting. At the end of every epoch
    this callback adds, for each pair `k` whose head has a `variance`
    (every `VIDHead`),

        sigma2_min_<k>, sigma2_median_<k>, sigma2_max_<k>

    to the epoch logs, so they appear in `History.history` (and in later
    callbacks such as `CSVLogger`, if this one is listed before them). The
    values are read after the trainer has written its state back to the
    variables (on JAX, `fit` keeps the state apart from the variables during
    an epoch), so they equal `head.variance` at the end of that epoch.

    Args:
        heads: the heads to monitor; `None` (default) uses the trained
            model's `heads` (a `VIDDistiller`). Heads without a `variance`
            (custom feature losses) are skipped.

    Example:

    ```python
    history = distiller.fit(x, y, epochs=10, callbacks=[VarianceMonitor()])
    history.history["sigma2_median_0"]   # one value per epoch
    ```
    """

    def __init__(self, heads=None):
        super().__init__()
        if heads is not None and not isinstance(heads, (list, tuple)):
            raise ValueError(
                f"VarianceMonitor: `heads` must be a list of heads or None. Received: {heads!r}"
            )
        self._heads = None if heads is None else list(heads)

    def monitored(self):
        """`[(pair_index, head)]` for every head that has a learned variance."""
        heads = self._heads
        if heads is None:
            heads = getattr(self.model, "heads", None)
            if heads is None:
                raise ValueError(
                    "VarianceMonitor: the model has no `heads` (train a VIDDistiller, "
                    f"or pass `heads=`). Model: {self.model!r}"
                )
        pairs = [(k, head) for k, head in enumerate(heads) if hasattr(head, "variance")]
        if not pairs:
            raise ValueError(
                "VarianceMonitor: none of the heads has a learned `variance` "
                f"(VIDHead has one). Heads: {list(heads)!r}"
            )
        return pairs

    def on_train_begin(self, logs=None):
        self.monitored()  # fail before the first epoch, not after it

    def statistics(self):
        """The current `{"sigma2_<stat>_<k>": value}` of every monitored pair."""
        sync_trainer_state(self.model)
        values = {}
        for k, head in self.monitored():
            variance = np.asarray(keras.ops.convert_to_numpy(head.variance), dtype="float64")
            for name, fn in zip(STATISTICS, (np.min, np.median, np.max)):
                values[f"sigma2_{name}_{k}"] = float(fn(variance))
        return values

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.statistics())
