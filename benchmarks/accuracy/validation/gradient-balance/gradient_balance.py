"""The suite with the VID gradient balanced against the supervised one.

The idea measured: λ sets how hard the VID terms push the student, but what
a push of λ means depends on the task (the task loss's scale, how fast it
falls on a small labelled set, KD's weight and temperature, the number of
pairs and their channels). Balancing the gradients removes those units: in
every step the VID terms' gradient on the student's weights is rescaled to
`ratio` times the norm of the supervised gradient (task loss, plus KD when
it is on), so VID never pushes the student harder than the labels and the
teacher's outputs do, on any task:

    g_student = g_sup + ratio · (‖g_sup‖ / ‖g_vid‖) · g_vid

The heads' weights (μ's layers and α), which only VID trains, take their
own gradient unscaled, so q(t|s) is fitted as with the defaults. Norms are
global over the student's trainable weights. TensorFlow only (the suite's
backend): two gradients from one persistent tape, about 1.5× a step.

    python benchmarks/accuracy/validation/gradient-balance/gradient_balance.py \\
        --ratio 1.0 --split validation --tasks digits-10,fmnist-10,fmnist-100 \\
        --seeds 0,1 --baseline benchmarks/accuracy/validation/base \\
        --methods vid,kd+vid --output runs/val-balance-1

`--ratio` is this script's; every other argument is the suite's
(`benchmarks/accuracy.py`).
"""

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.utils import unpack_x_y_sample_weight  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import accuracy  # noqa: E402

import keras_vid.backend  # noqa: E402
from keras_vid import distillation_pair  # noqa: E402

_pair_loss = distillation_pair.DistillationPair.loss
_vid_terms = []  # (pair index, batch-mean NLL) of the step being traced


def _recording_loss(self, *args, **kwargs):
    value = _pair_loss(self, *args, **kwargs)
    _vid_terms.append((self.index, value))
    return value


def _or_zeros(gradients, variables):
    """Zeros for the variables a loss does not reach (the heads, for the
    supervised loss)."""
    return [tf.zeros_like(v.value) if g is None else g for g, v in zip(gradients, variables)]


def _global_norm(gradients):
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients]))


def balanced_train_step(ratio):
    """The TensorFlow step of `keras_vid.backend`, with the student's VID
    gradient rescaled to `ratio` × the supervised gradient's norm."""

    def train_step(distiller, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        guard, optimizer = distiller.step_guard, distiller.optimizer
        teacher_outputs = distiller._teacher_features(x)
        saved = guard.snapshot()
        with tf.GradientTape(persistent=True) as tape:
            _vid_terms.clear()
            loss, student_outputs, labels_ok = distiller._forward_loss(
                x, y, sample_weight, teacher_outputs, training=True
            )
            vid = tf.zeros((), "float32")
            for index, value in _vid_terms:
                vid = vid + tf.cast(distiller.vid_weights[index], "float32") * value
            supervised = loss - vid
        variables = distiller.trainable_variables
        g_sup = _or_zeros(tape.gradient(supervised, variables), variables)
        g_vid = _or_zeros(tape.gradient(vid, variables), variables)
        del tape
        student = {id(v) for v in distiller.student.trainable_variables}
        in_student = [id(v) in student for v in variables]
        sup_norm = _global_norm([g for g, s in zip(g_sup, in_student) if s])
        vid_norm = _global_norm([g for g, s in zip(g_vid, in_student) if s])
        scale = ratio * sup_norm / (vid_norm + 1e-12)
        gradients = [a + (scale * b if s else b) for a, b, s in zip(g_sup, g_vid, in_student)]
        flags, ok = guard.check(x, teacher_outputs, labels_ok, loss, gradients, optimizer)
        keras_vid.backend.tensorflow_trainer._apply_if(
            ok, optimizer, gradients, variables, guard.restore, saved
        )
        guard.record(flags, ok, optimizer.iterations)
        return distiller._log_step(x, y, sample_weight, student_outputs, loss)

    return train_step


def main(argv=None):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ratio", type=float, default=1.0)
    known, rest = parser.parse_known_args(argv)
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("gradient_balance.py runs on the TensorFlow backend.")
    distillation_pair.DistillationPair.loss = _recording_loss
    keras_vid.backend.train_step = balanced_train_step(known.ratio)
    return accuracy.main(rest)


if __name__ == "__main__":
    main()
