"""The training-step contract: `compute_loss` is Keras's, layers' losses count, KD-only works."""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import BACKEND, CNN_PAIRS, small_cnn, to_numpy, weights_of

from keras_vid import PairLoss, VIDDistiller, VIDHead

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 5, size=n)


def numpy_ce(logits, y):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.mean(log_p[np.arange(len(y)), y])


def test_compute_loss_is_the_total_loss():
    """`compute_loss(x, y, y_pred)` alone returns task_weight·CE + Σ λ·NLL + kd_weight·KD,
    against NumPy references of each term."""
    keras.utils.set_random_seed(0)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
    distiller.compile(
        optimizer="sgd", loss=CE, vid_weight=[0.5, 2.0, 1.5], kd_weight=0.3, task_weight=0.7
    )
    x, y = data()
    logits = to_numpy(student(x, training=False))
    loss = to_numpy(distiller.compute_loss(x, y, student(x, training=False), training=False))

    s_features = keras.Model(student.input, [student.get_layer(s).output for s, _ in CNN_PAIRS])
    t_features = keras.Model(teacher.input, [teacher.get_layer(t).output for _, t in CNN_PAIRS])
    s_out = [to_numpy(v) for v in s_features(x, training=False)]
    t_out = [to_numpy(v) for v in t_features(x, training=False)]
    vid = [ref.head_nll(h, s, t).mean() for h, s, t in zip(distiller.heads, s_out, t_out)]
    kd = ref.softened_kl(to_numpy(teacher(x, training=False)), logits, 4.0).mean()
    expected = 0.7 * numpy_ce(logits, y) + 0.5 * vid[0] + 2.0 * vid[1] + 1.5 * vid[2] + 0.3 * kd
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


class PenalisedDistiller(VIDDistiller):
    """A user's override, written as for any Keras model."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + 0.25 * keras.ops.mean(keras.ops.square(y_pred))


def test_a_compute_loss_override_is_what_trains():
    x, y = data()
    runs = {}
    for cls in (VIDDistiller, PenalisedDistiller):
        keras.utils.set_random_seed(0)
        distiller = cls(small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
        logits = to_numpy(distiller.student(x, training=True))
        history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        runs[cls] = (history.history, weights_of(distiller.student), logits)
    (plain, plain_weights, logits), (penalised, penalised_weights, _) = runs.values()
    np.testing.assert_allclose(
        penalised["loss"][0] - plain["loss"][0], 0.25 * np.mean(logits**2), rtol=1e-3
    )
    np.testing.assert_allclose(penalised["task_loss"], plain["task_loss"], rtol=1e-5)
    moved = [not np.allclose(a, b) for a, b in zip(plain_weights, penalised_weights)]
    assert any(moved)  # the penalty's gradient reached the student


def mlp(prefix, regularize=0.0):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(
        3,
        activity_regularizer=keras.regularizers.L2(regularize) if regularize else None,
        name=f"{prefix}_hidden",
    )(inputs)
    outputs = keras.layers.Dense(2, name=f"{prefix}_logits")(keras.layers.ReLU()(hidden))
    return keras.Model(inputs, outputs, name=prefix)


def test_losses_added_by_layers_change_loss_and_gradients_on_every_backend():
    """An activity regularizer c·Σh² on a student layer (Keras divides it by the
    batch size n): the loss rises by exactly c·Σh²/n, and one SGD step moves that
    layer's kernel by exactly −lr·2c·xᵀh/n more."""
    c, lr = 0.01, 0.1
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 2, size=8)
    runs = []
    for regularize in (0.0, c):
        keras.utils.set_random_seed(0)
        teacher, student = mlp("t"), mlp("s", regularize)
        distiller = VIDDistiller(teacher, student, pairs=[("s_hidden", "t_hidden")])
        distiller.compile(optimizer=keras.optimizers.SGD(lr), loss=CE)
        kernel, bias = (to_numpy(w).copy() for w in student.get_layer("s_hidden").weights)
        history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        runs.append((history.history["loss"][0], to_numpy(student.get_layer("s_hidden").kernel)))
    h = x @ kernel + bias
    n = len(x)
    np.testing.assert_allclose(runs[1][0] - runs[0][0], c * np.sum(h**2) / n, rtol=1e-4)
    np.testing.assert_allclose(runs[0][1] - runs[1][1], lr * 2 * c * x.T @ h / n, atol=1e-6)


def test_kd_only_distiller_needs_no_pairs():
    keras.utils.set_random_seed(0)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=[])
    with pytest.raises(ValueError, match=r"no layer pairs.*kd_weight. > 0"):
        distiller.compile(optimizer="sgd", loss=CE)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE, kd_weight=1.0)
    x, y = data()
    logits = to_numpy(student(x, training=False))
    kd = ref.softened_kl(to_numpy(teacher(x, training=False)), logits, 4.0).mean()
    loss = to_numpy(distiller.compute_loss(x, y, student(x, training=False), training=False))
    np.testing.assert_allclose(loss, numpy_ce(logits, y) + kd, rtol=1e-4)
    before, teacher_before = weights_of(student), weights_of(teacher)
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert distiller.heads == [] and "kd_loss" in history.history
    assert all(not np.allclose(a, b) for a, b in zip(before, weights_of(student)) if a.ndim > 1)
    for a, b in zip(teacher_before, weights_of(teacher)):
        np.testing.assert_array_equal(a, b)


def test_vid_head_is_a_pair_loss_and_custom_pair_losses_train():
    assert issubclass(VIDHead, PairLoss)

    class ProjectedMSE(PairLoss):
        def build(self, student_shape, teacher_shape):
            self.project = keras.layers.Dense(teacher_shape[-1], name="project")
            self.project.build(student_shape)
            self.built = True

        def call(self, student, teacher, training=None):
            error = keras.ops.square(self.project(student) - teacher)
            return keras.ops.mean(error, axis=tuple(range(1, len(error.shape))))

    keras.utils.set_random_seed(0)
    head = ProjectedMSE()
    distiller = VIDDistiller(
        small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS[:1], heads=[head]
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
    before = weights_of(head)
    x, y = data()
    history = distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["vid_0"][0])
    assert all(not np.allclose(a, b) for a, b in zip(before, weights_of(head)))
    with pytest.raises(NotImplementedError, match="must implement"):
        PairLoss()(keras.ops.ones((2, 3)), keras.ops.ones((2, 3)))


def test_fit_finds_callbacks_passed_positionally():
    from keras_vid.callbacks import NonFiniteMonitor

    keras.utils.set_random_seed(0)
    distiller = VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS)
    distiller.compile(optimizer="sgd", loss=CE)
    monitor = NonFiniteMonitor()
    x, y = data()
    # x, y, batch_size, epochs, verbose, callbacks: the sixth positional argument.
    distiller.fit(x, y, 8, 1, 0, [monitor])
    assert monitor.model is distiller


@pytest.mark.skipif(BACKEND == "tensorflow", reason="about the JAX and PyTorch backends")
def test_core_trains_without_importing_tensorflow(tmp_path):
    """`import keras_vid` and training on NumPy arrays, a PyDataset and (PyTorch)
    a torch DataLoader never load TensorFlow (the core does not need it; the
    experiments extra does)."""
    import subprocess
    import sys

    script = """
import sys
import keras
import numpy as np
import keras_vid
from keras_vid import VIDDistiller

class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 2
    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return rng.random((4, 6)).astype("float32"), rng.integers(0, 3, size=4)

def mlp(prefix):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, name=prefix + "_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))

d = VIDDistiller(mlp("t"), mlp("s"), pairs=[("s_hidden", "t_hidden")])
d.compile(optimizer="sgd",
          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
d.fit(rng.random((8, 6)).astype("float32"), rng.integers(0, 3, size=8), epochs=1, verbose=0)
d.fit(Batches(), epochs=1, verbose=0)
d.evaluate(Batches(), verbose=0)
if keras.backend.backend() == "torch":
    import torch
    data = torch.utils.data.TensorDataset(
        torch.rand(8, 6), torch.randint(0, 3, (8,)))
    d.fit(torch.utils.data.DataLoader(data, batch_size=4), epochs=1, verbose=0)
loaded = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
assert not loaded, loaded[:5]
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
