"""`WeightSchedule` and `EpochSchedule`: values, validation, and the weights
the loss actually uses during `fit` on every backend."""

import math

import keras
import numpy as np
import pytest
from conftest import CNN_PAIRS, to_numpy

from keras_vid import VIDDistiller
from keras_vid.callbacks import EpochSchedule, WeightSchedule

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_epoch_schedule_values():
    linear = EpochSchedule("linear", start=2.0, end=0.0, epochs=4)
    assert [linear(e) for e in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    cosine = EpochSchedule("cosine", start=1.0, end=0.1, epochs=20)
    assert cosine(0) == 1.0
    assert cosine(10) == pytest.approx(0.55)
    assert cosine(5) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine(20) == pytest.approx(0.1) and cosine(99) == pytest.approx(0.1)
    ramp = EpochSchedule("linear", start=0.0, end=1.0, epochs=2)
    assert [ramp(e) for e in range(3)] == [0.0, 0.5, 1.0]
    assert EpochSchedule("constant", 0.3)(7) == 0.3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "step", "start": 1.0, "end": 0.0, "epochs": 3}, "`kind` must be one of"),
        ({"kind": "linear", "start": -1.0, "end": 0.0, "epochs": 3}, "`start`"),
        ({"kind": "cosine", "start": 1.0, "end": float("nan"), "epochs": 3}, "`end`"),
        ({"kind": "linear", "start": 1.0, "end": 0.0, "epochs": 0}, "`epochs`"),
        ({"kind": "linear", "start": 1.0, "end": 0.0}, "`epochs`"),
        ({"kind": "cosine", "start": 1.0, "epochs": 3}, "needs `end`"),
        ({"kind": "constant", "start": 1.0, "end": 2.0}, "`end`"),
    ],
)
def test_epoch_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpochSchedule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "nothing to schedule"),
        ({"vid_weight": -0.5}, "`vid_weight` must be"),
        ({"vid_weight": [1.0, -2.0, 1.0]}, r"`vid_weight\[1\]` must be"),
        ({"vid_weight": []}, "empty"),
        ({"kd_weight": float("inf")}, "`kd_weight` must be"),
        ({"kd_weight": True}, "`kd_weight` must be"),
    ],
)
def test_weight_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightSchedule(**kwargs)


def make_distiller(models, **compile_kwargs):
    """Zero learning rate and fixed teacher units (no tracked statistics):
    every loss term is the same in every epoch."""
    teacher, student = models
    options = {"normalize_teacher": False}
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS, head_options=options)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE, **compile_kwargs)
    return distiller


def test_bad_schedules_are_reported_by_argument(models):
    distiller = make_distiller(models)
    two = WeightSchedule([1.0, 2.0])
    two.set_model(distiller)
    with pytest.raises(ValueError, match="`vid_weight` has 2 entries but the distiller has 3"):
        two.on_train_begin()
    negative = WeightSchedule(kd_weight=lambda epoch: 1.0 - epoch)
    negative.set_model(distiller)
    negative.on_epoch_begin(1)
    assert float(to_numpy(distiller.kd_weight)) == 0.0
    with pytest.raises(ValueError, match="`kd_weight` at epoch 2 must be"):
        negative.on_epoch_begin(2)
    plain = WeightSchedule(kd_weight=1.0)
    plain.set_model(distiller.student)
    with pytest.raises(ValueError, match="needs a VIDDistiller"):
        plain.on_train_begin()


class WeightProbe(keras.callbacks.Callback):
    """Reads the weights the trainer holds after every batch (syncing JAX's state)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()
        self.seen.append(
            (to_numpy(self.model.vid_weights).tolist(), float(to_numpy(self.model.kd_weight)))
        )


def test_scheduled_weights_are_the_ones_the_loss_uses(models, data):
    x, y = data
    distiller = make_distiller(models, vid_weight=1.0, kd_weight=0.5)
    schedule = WeightSchedule(
        vid_weight=[
            EpochSchedule("linear", start=2.0, end=0.0, epochs=2),
            EpochSchedule("cosine", start=0.25, end=1.5, epochs=2),
            lambda epoch: 0.3 * (epoch + 1),
        ],
        kd_weight=EpochSchedule("linear", start=0.0, end=3.0, epochs=2),
    )
    probe = WeightProbe()
    epochs, batches = 3, 2
    history = distiller.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[schedule, probe]
    ).history

    expected = {
        "vid_weight_0": [2.0, 1.0, 0.0],
        "vid_weight_1": [0.25, 0.875, 1.5],
        "vid_weight_2": [0.3, 0.6, 0.9],
        "kd_weight": [0.0, 1.5, 3.0],
    }
    for name, values in expected.items():
        assert history[name] == pytest.approx(values, abs=1e-6)
    # Inside training the trainer holds exactly the logged values, every batch.
    assert len(probe.seen) == epochs * batches
    for step, (lambdas, kd) in enumerate(probe.seen):
        epoch = step // batches
        assert lambdas == pytest.approx([expected[f"vid_weight_{k}"][epoch] for k in range(3)])
        assert kd == pytest.approx(expected["kd_weight"][epoch])
    # With a zero learning rate every term is the same each epoch, so the
    # epoch means obey the loss identity exactly for the scheduled weights.
    for epoch in range(epochs):
        total = (
            history["task_loss"][epoch] + history["kd_weight"][epoch] * (history["kd_loss"][epoch])
        )
        total += sum(
            history[f"vid_weight_{k}"][epoch] * history[f"vid_{k}"][epoch] for k in range(3)
        )
        assert history["loss"][epoch] == pytest.approx(total, rel=1e-5)
    for name in ("task_loss", "vid_0", "vid_1", "vid_2", "kd_loss"):
        assert history[name] == pytest.approx([history[name][0]] * epochs, rel=1e-5)
    assert len(set(np.round(history["loss"], 5))) == epochs  # the schedule moved the loss
    # The last epoch's values stay in the distiller.
    assert to_numpy(distiller.vid_weights) == pytest.approx([0.0, 1.5, 0.9])


def test_one_float_sets_every_pair_and_none_is_left_alone(models):
    distiller = make_distiller(models, vid_weight=[0.5, 1.0, 2.0], kd_weight=0.25)
    schedule = WeightSchedule(vid_weight=0.7)
    schedule.set_model(distiller)
    schedule.on_train_begin()
    schedule.on_epoch_begin(0)
    logs = {"loss": 1.0}
    schedule.on_epoch_end(0, logs)
    assert logs == pytest.approx({"loss": 1.0, **{f"vid_weight_{k}": 0.7 for k in range(3)}})
    assert to_numpy(distiller.vid_weights) == pytest.approx([0.7] * 3)
    assert float(to_numpy(distiller.kd_weight)) == pytest.approx(0.25)


def _compiled_without_kd(seed):
    """A distiller compiled with `kd_weight=0`, `vid_weight=0` and a zero
    learning rate (the logged terms stay those of the initial weights), and
    16 examples for it."""
    from conftest import small_cnn

    rng = np.random.default_rng(seed)
    x = rng.random((16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 5, size=16)
    keras.utils.set_random_seed(0)
    teacher, student = small_cnn("t", 8), small_cnn("s", 4)
    distiller = VIDDistiller(teacher, student, pairs=[("s_g1", "t_g1")])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE, vid_weight=0.0, kd_weight=0.0)
    return x, y, teacher, student, distiller


def test_kd_scheduled_after_compiling_without_it_is_trained():
    """`compile(kd_weight=0)` then a WeightSchedule that turns KD on at epoch 1
    (a curriculum): from that epoch the KD term is computed, logged, and part
    of the loss; before it the loss is the task and VID terms alone."""
    x, y, teacher, student, distiller = _compiled_without_kd(seed=0)
    schedule = WeightSchedule(kd_weight=lambda epoch: float(epoch))  # 0, then 1
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[schedule]).history
    assert "kd_loss" in history and history["kd_loss"][1] > 0
    # Epoch 0 trains at KD weight 0, epoch 1 at 1 (vid_weight is 0).
    np.testing.assert_allclose(history["loss"][0], history["task_loss"][0], rtol=1e-5)
    np.testing.assert_allclose(
        history["loss"][1], history["task_loss"][1] + history["kd_loss"][1], rtol=1e-5
    )
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    t_logits = to_numpy(teacher.predict(x, verbose=0)).astype("float64") / 4
    s_logits = to_numpy(student.predict(x, verbose=0)).astype("float64") / 4

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    log_t, log_s = log_softmax(t_logits), log_softmax(s_logits)
    kd = 16 * np.mean((np.exp(log_t) * (log_t - log_s)).sum(1))
    np.testing.assert_allclose(logs["kd_loss"], kd, rtol=1e-4)


def test_kd_weight_assigned_by_hand_after_compile_is_trained():
    """A `kd_weight` set on the variable after `compile(kd_weight=0)` (a
    custom callback, or by hand between fits) is trained too: KD is computed
    whenever its current weight can be non-zero, and the loss is the task
    term plus that weight times the KD term."""
    x, y, _, _, distiller = _compiled_without_kd(seed=1)
    first = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert "kd_loss" not in first
    distiller.kd_weight.assign(0.5)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert history["kd_loss"][0] > 0
    np.testing.assert_allclose(
        history["loss"][0], history["task_loss"][0] + 0.5 * history["kd_loss"][0], rtol=1e-5
    )
