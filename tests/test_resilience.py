"""Interrupted training, checkpoints, export and bad data."""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import BACKEND, CNN_PAIRS, small_cnn, to_numpy

from keras_vid import VIDDistiller

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ROOT = pathlib.Path(__file__).parent.parent


def fresh_distiller(seed=0):
    keras.utils.set_random_seed(seed)
    distiller = VIDDistiller(small_cnn("t", 8), small_cnn("s", 4), pairs=CNN_PAIRS)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE, kd_weight=0.5)
    return distiller


def batches():
    rng = np.random.default_rng(0)
    return rng.random((48, 8, 8, 3)).astype("float32"), rng.integers(0, 5, size=48)


def state(distiller):
    """Every weight (student, teacher, heads, α, loss weights) and optimizer slot."""
    return [to_numpy(v).copy() for v in distiller.weights + distiller.optimizer.variables]


class Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch, at_batch):
        super().__init__()
        self.at = (at_epoch, at_batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("simulated crash")


def test_backup_and_restore_resumes_to_identical_weights(tmp_path):
    x, y = batches()
    reference = fresh_distiller()
    reference.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    # Keras's BackupAndRestore resumes at an epoch boundary: with batch-level
    # saving it would restore mid-epoch weights but replay the epoch from its
    # first batch. Epoch-level backups make the resumed run exact.
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    crashed = fresh_distiller()
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[backup, Interrupt(1, 1)],
        )
    resumed = fresh_distiller(seed=123)  # a new process would start from scratch
    resumed.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[backup])
    for a, b in zip(state(reference), state(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_model_checkpoint_files_load_and_continue(tmp_path):
    x, y = batches()
    distiller = fresh_distiller()
    path = str(tmp_path / "epoch{epoch}.keras")
    distiller.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(path)],
    )
    loaded = keras.saving.load_model(tmp_path / "epoch2.keras")
    for a, b in zip(state(distiller), state(loaded)):
        np.testing.assert_array_equal(a, b)
    expected = distiller.train_on_batch(x[:16], y[:16], return_dict=True)["loss"]
    assert loaded.train_on_batch(x[:16], y[:16], return_dict=True)["loss"] == pytest.approx(
        expected, rel=1e-5
    )


KILLED_RUN = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    import keras, numpy as np
    from test_resilience import fresh_distiller, batches

    class KillSelf(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if {kill} and (self.epoch, batch) == (1, 1):
                os.kill(os.getpid(), 9)

    x, y = batches()
    distiller = fresh_distiller()
    backup = keras.callbacks.BackupAndRestore({backup!r})
    distiller.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                  callbacks=[backup, KillSelf()])
    np.savez({out!r}, *[keras.ops.convert_to_numpy(v) for v in
                        distiller.weights + distiller.optimizer.variables])
    """
)


def test_killed_process_resumes_to_identical_weights(tmp_path):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")

    def run(kill, out):
        script = KILLED_RUN.format(
            tests=str(ROOT / "tests"), kill=kill, backup=str(tmp_path / "backup"), out=str(out)
        )
        return subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )

    first = run(True, tmp_path / "never.npz")
    assert first.returncode == -9, first.stderr[-2000:]
    resumed = run(False, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    x, y = batches()
    reference = fresh_distiller()
    reference.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    saved = np.load(tmp_path / "resumed.npz")
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    for a, b in zip(state(reference), values):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_student_exports_and_reloads_without_keras_vid(tmp_path):
    x, y = batches()
    distiller = fresh_distiller()
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distiller.student.save(tmp_path / "student.keras")
    np.save(tmp_path / "x.npy", x)
    expected = distiller.student.predict(x, verbose=0)
    exported = BACKEND == "tensorflow"
    if exported:
        distiller.student.export(str(tmp_path / "saved_model"), verbose=False)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        x = np.load({str(tmp_path / "x.npy")!r})
        out = [keras.saving.load_model({str(tmp_path / "student.keras")!r}).predict(x, verbose=0)]
        if {exported}:
            import tensorflow as tf
            served = tf.saved_model.load({str(tmp_path / "saved_model")!r})
            out.append(served.serve(tf.constant(x)).numpy())
        assert "keras_vid" not in sys.modules
        np.save({str(tmp_path / "out.npy")!r}, np.stack(out))
        """
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300, cwd=tmp_path)
    for predictions in np.load(tmp_path / "out.npy"):
        np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)


def test_final_partial_batch_trains():
    x, y = batches()
    distiller = fresh_distiller()
    history = distiller.fit(x[:40], y[:40], batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_teacher_never_built_is_rejected():
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3, name="t_g1"), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="no symbolic graph"):
        VIDDistiller(unbuilt, small_cnn("s", 4), pairs=[("s_g1", "t_g1")])


def test_input_dtype_mismatch_is_rejected():
    inputs = keras.Input((8, 8, 3), dtype="int32")
    x = keras.layers.Conv2D(4, 3, padding="same", name="t_g1")(keras.ops.cast(inputs, "float32"))
    teacher = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(x)))
    with pytest.raises(ValueError, match="input dtype"):
        VIDDistiller(teacher, small_cnn("s", 4), pairs=[("s_g1", "t_g1")])


def test_empty_input_raises_a_clear_error():
    distiller = fresh_distiller()
    empty = (np.zeros((0, 8, 8, 3), "float32"), np.zeros((0,), "int64"))
    with pytest.raises(ValueError, match="0 examples"):
        distiller.fit(*empty, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="0 examples"):
        distiller.evaluate(*empty, verbose=0)
