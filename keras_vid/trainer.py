"""`DistillerTrainer`: the training-loop entry points of a distiller, and its logs.

Like Keras's own `Trainer`, a base class of the model: `VIDDistiller` supplies
the models, the loss and the three step hooks; this class wraps `fit`,
`evaluate` and `train_on_batch` with what must happen before the first step
(the data checks of `keras_vid.fit_checks`, the teacher statistics'
calibration, KD switched on when a schedule sets its weight), dispatches
`train_step`/`test_step` to the backend's step (`keras_vid.backend`), and
decides which metrics a step logs.
"""

import keras
from keras import ops

from keras_vid import backend as vid_backend
from keras_vid import calibration, compat
from keras_vid import fit_checks as checks


class DistillerTrainer(keras.Model):
    """The entry points and logs of `VIDDistiller` (see the module docstring).

    It reads the distiller's `settings`, `kd_weight`, `kd_loss_tracker`,
    `step_guard`, `heads` and `_check_kd_logits`.
    """

    @property
    def metrics(self):
        metrics = super().metrics
        if not self.settings.computes_kd:
            metrics = [m for m in metrics if m is not self.kd_loss_tracker]
        return metrics

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Compiled metrics on the student's logits, and every loss tracker.
        Without labels the compiled metrics are left out of the logs."""
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight)
        return self.get_metrics_result(labelled=False)

    def get_metrics_result(self, labelled=True):
        """As `keras.Model`'s, leaving out compiled metrics that were never
        built, and with `labelled=False` (a step without labels) every
        compiled metric, whose value would be stale."""
        logs = {}
        compiled = compat.compiled_metrics(self)
        for metric in self.metrics:
            if not labelled and metric is compiled:
                continue
            if getattr(metric, "built", True):
                result = metric.result()
                logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    def train_step(self, *args):
        return vid_backend.train_step(self, *args)

    def test_step(self, *args):
        return vid_backend.test_step(self, *args)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after the data checks (`keras_vid.fit_checks`),
        with the teacher statistics calibrated on the first batch and a
        `NonFiniteMonitor` added unless `callbacks` has one."""
        from keras_vid.callbacks.non_finite import NonFiniteMonitor

        arguments = checks.FIT_SIGNATURE.bind(self, *args, **kwargs).arguments
        checks.check_fit_data(self, arguments)
        callbacks = arguments.get("callbacks")
        current_kd_weight = float(ops.add(self.kd_weight, 0.0))
        if self.settings.enable_kd_for_fit(callbacks, current_kd_weight, self._check_kd_logits):
            self.train_function = self.test_function = None  # traced without the KD term
        calibration.calibrate_from(self, arguments.get("x"), arguments.get("batch_size"))
        if callbacks is None or isinstance(callbacks, (list, tuple)):
            callbacks = list(callbacks or [])
            if not any(isinstance(c, NonFiniteMonitor) for c in callbacks):
                callbacks.append(NonFiniteMonitor())
            arguments["callbacks"] = callbacks
        arguments.pop("self")
        extra = arguments.pop("kwargs", {})
        with checks.no_batches_error("fit"):
            return super().fit(**arguments, **extra)

    def train_on_batch(self, x, *args, **kwargs):
        checks.keep_teacher_frozen(self)
        calibration.calibrate_from(self, x)
        return super().train_on_batch(x, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        checks.check_evaluate_data(self, x, y)
        with checks.no_batches_error("evaluate"):
            logs = super().evaluate(x, y, *args, **kwargs)
        if logs == {} or logs == []:  # TensorFlow's answer to a dataset that yielded nothing
            raise ValueError(checks.NO_BATCHES.format(method="evaluate"))
        return logs

    def calibrate(self, x):
        """Set the teacher statistics of every head that normalises the
        teacher feature (`VIDHead(normalize_teacher=True)`) from the teacher's
        features on the inputs `x`, and fix them. `fit` and `train_on_batch`
        do it on their first data; call it yourself in a custom loop, or to
        use other data (`keras_vid.calibration`)."""
        calibration.calibrate(self, x)
