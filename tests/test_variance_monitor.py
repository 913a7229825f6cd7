"""`VarianceMonitor` logs, and the ignored channels of `variance_summary` /
`plot_variance`."""

import sys

import keras
import numpy as np
import pytest
from conftest import CNN_PAIRS, to_numpy

from keras_vid import VIDDistiller, VIDHead
from keras_vid.callbacks import VarianceMonitor
from keras_vid.losses import inverse_softplus
from keras_vid.variance_plot import plot_variance, variance_summary

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def stats(head):
    variance = to_numpy(head.variance).astype("float64")
    return {"min": variance.min(), "median": np.median(variance), "max": variance.max()}


def test_logged_variance_is_the_trained_heads_and_moves_every_epoch(models, data):
    x, y = data
    teacher, student = models
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS[1:])  # map and vector heads
    distiller.compile(optimizer=keras.optimizers.Adam(0.05), loss=CE)
    initial = [stats(head) for head in distiller.heads]
    history = distiller.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=[VarianceMonitor()]
    ).history

    for k, head in enumerate(distiller.heads):
        final = stats(head)
        for name in ("min", "median", "max"):
            logged = history[f"sigma2_{name}_{k}"]
            assert len(logged) == 2
            # The last epoch's value is the trained head's, read after the
            # trainer's state was synced (JAX), not a stale copy.
            assert logged[-1] == pytest.approx(final[name], rel=1e-6)
            assert logged[0] != pytest.approx(initial[k][name], rel=1e-4)
            assert logged[1] != pytest.approx(logged[0], rel=1e-4)
        assert history[f"sigma2_min_{k}"][0] <= history[f"sigma2_median_{k}"][0]
        assert history[f"sigma2_median_{k}"][0] <= history[f"sigma2_max_{k}"][0]


def test_monitor_needs_heads_with_a_variance():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    monitor = VarianceMonitor()
    monitor.set_model(plain)
    with pytest.raises(ValueError, match="VarianceMonitor: the model has no `heads`"):
        monitor.on_train_begin()
    custom = VarianceMonitor([keras.layers.Dense(2)])
    custom.set_model(plain)
    with pytest.raises(ValueError, match="none of the heads has a learned `variance`"):
        custom.on_train_begin()
    with pytest.raises(ValueError, match="`heads` must be a list"):
        VarianceMonitor(heads="vid_head_0")


def test_monitor_of_given_heads_skips_heads_without_variance():
    heads = [keras.layers.Dense(2), head_with_variance([0.5, 2.0, 8.0])]
    monitor = VarianceMonitor(heads)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert logs == pytest.approx(
        {"sigma2_min_1": 0.5, "sigma2_median_1": 2.0, "sigma2_max_1": 8.0}
    )


def head_with_variance(variance, student_channels=4, init_variance=5.0):
    """A built vector → vector VIDHead whose σ² per channel is `variance`."""
    head = VIDHead(init_variance=init_variance, min_variance=0.01)
    head.build((None, student_channels), (None, len(variance)))
    # σ² = (softplus(α) + ε)² + min_variance (a floor below the smallest σ² here).
    std = np.sqrt(np.asarray(variance, dtype="float64") - head.min_variance) - head.epsilon
    head.alpha.assign(np.asarray(inverse_softplus(std), dtype="float32"))
    return head


def test_ignored_channels_against_teacher_variance_and_initial_variance():
    heads = [head_with_variance([0.1, 2.0, 0.6, 9.0]), head_with_variance([6.0, 1.0, 4.0])]
    teacher_variance = [np.array([1.0, 1.0, 1.0, 10.0]), np.array([3.0, 3.0, 3.0])]

    summary = variance_summary(heads, teacher_variance=teacher_variance)
    assert summary[0].variance == pytest.approx([0.1, 2.0, 0.6, 9.0], rel=1e-4)
    assert summary[0].ignored.tolist() == [1]  # 9.0 < 10.0: still predicted
    assert summary[1].ignored.tolist() == [0, 2]
    half = variance_summary(heads, teacher_variance=teacher_variance, threshold=0.5)
    assert half[0].ignored.tolist() == [1, 2, 3]
    # No data: compared with the initial σ² (5.0).
    assert [p.ignored.tolist() for p in variance_summary(heads)] == [[3], [0]]
    assert variance_summary(heads)[1].reference.tolist() == [5.0, 5.0, 5.0]


def test_summary_rejects_bad_arguments():
    heads = [head_with_variance([1.0, 2.0])]
    with pytest.raises(ValueError, match="`threshold` must be"):
        variance_summary(heads, threshold=0)
    with pytest.raises(ValueError, match=r"`teacher_variance\[0\]` has shape \(3,\)"):
        variance_summary(heads, teacher_variance=[np.ones(3)])
    with pytest.raises(ValueError, match="one array per pair"):
        variance_summary(heads, teacher_variance=np.ones(2))
    with pytest.raises(ValueError, match="`x` needs a VIDDistiller"):
        variance_summary(heads, x=np.ones((2, 4)))
    with pytest.raises(ValueError, match="pair 1 .* has no learned `variance`"):
        variance_summary(heads + [keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`source` must be"):
        variance_summary("heads")


def test_teacher_variance_from_data_and_the_plot(models, data, tmp_path):
    x, _ = data
    teacher, student = models
    distiller = VIDDistiller(teacher, student, pairs=CNN_PAIRS)
    features = distiller.teacher_extractor.predict(x, verbose=0)
    path = tmp_path / "plots" / "variance.png"

    # σ² at half or twice each teacher channel's variance, alternately.
    references = []
    for k, head in enumerate(distiller.heads):
        t = np.asarray(features[f"pair_{k}"], dtype="float64")
        references.append(t.reshape(-1, t.shape[-1]).var(axis=0))
        factor = np.where(np.arange(len(references[k])) % 2 == 1, 2.0, 0.5)
        target = np.maximum(references[k] * factor - head.min_variance, 1e-6)
        std = np.sqrt(target) - head.epsilon
        head.alpha.assign(np.asarray(inverse_softplus(std), dtype="float32"))

    summary = plot_variance(distiller, path, x=x)

    for pair, reference in zip(summary, references):
        assert pair.reference == pytest.approx(reference, rel=1e-4)
        # Odd channels, and any whose variance is at or below the floor on σ²
        # (σ² cannot go under it; a dead ReLU's 0 among them).
        floor = distiller.heads[0].min_variance + 1e-6
        expected = [c for c in range(len(reference)) if c % 2 == 1 or reference[c] <= floor]
        assert pair.ignored.tolist() == expected
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_variance([head_with_variance([1.0])], tmp_path / "v.png")
    assert not (tmp_path / "v.png").exists()
