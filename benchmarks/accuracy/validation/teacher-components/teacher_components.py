"""The suite with capacity-matched targets: on a map pair whose student
feature has fewer channels (k) than the teacher's (C), the head regresses the
teacher feature's k leading principal components (of the standardised
channels, each component scaled to unit variance) instead of its C channels.

The idea measured: a narrow student cannot hold C teacher channels; asking it
for the k directions that carry most of the teacher feature's variance is a
target it can hold, as attention transfer's one map per layer is. The
components are estimated once, like the per-channel statistics (the teacher
is frozen), from the teacher's features on the first `--sample` training
images; the standardisation itself still uses the first batch.

    python benchmarks/accuracy/validation/teacher-components/teacher_components.py \\
        --split validation --tasks digits-10,fmnist-10,fmnist-100 --seeds 0,1 \\
        --baseline runs/val-base --methods vid,kd+vid --output runs/val-components

Every other argument is the suite's (`benchmarks/accuracy.py`).
"""

import argparse
import os
import sys

import numpy as np
from keras import ops

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import accuracy  # noqa: E402

from keras_vid import VIDHead, calibration  # noqa: E402
from keras_vid.teacher_statistics import STATISTICS_EPSILON  # noqa: E402

_build, _target = VIDHead.build, VIDHead.target
_calibrate_from = calibration.calibrate_from
_state = {"sample": 1024, "fraction": 1.0, "whiten": True}


def _components(student_shape, teacher_shape):
    """k for a map pair with fewer student than teacher channels, else None."""
    if len(teacher_shape) < 3 or len(student_shape) != len(teacher_shape):
        return None
    k = max(1, int(round(student_shape[-1] * _state["fraction"])))
    return k if k < teacher_shape[-1] else None


def _build_on_components(self, student_shape, teacher_shape):
    if self.built:
        return
    k = _components(student_shape, teacher_shape)
    self._teacher_channels = teacher_shape[-1]
    self._k = k
    if k is None:
        return _build(self, student_shape, teacher_shape)
    if self.hidden_width is None:  # μ keeps the width it has on C channels
        self.hidden_width = teacher_shape[-1]
    _build(self, student_shape, tuple(teacher_shape[:-1]) + (k,))


def _target_on_components(self, teacher, training=None, padding_mask=None):
    if getattr(self, "_k", None) is None:
        return _target(self, teacher, training=training, padding_mask=padding_mask)
    t = ops.stop_gradient(ops.cast(teacher, "float32"))
    if self.teacher_pool is not None:
        t = self.teacher_pool(t)
    mean, inverse_std, projection = self._pca
    return ops.einsum("...c,ck->...k", (t - mean) * inverse_std, projection)


def _pca_of(head, features):
    t = ops.convert_to_numpy(ops.cast(features, "float32"))
    if head.teacher_pool is not None:
        t = ops.convert_to_numpy(head.teacher_pool(t))
    t = t.reshape(-1, t.shape[-1]).astype("float64")
    mean, std = t.mean(0), np.sqrt(t.var(0) + STATISTICS_EPSILON)
    z = (t - mean) / std
    eigenvalues, vectors = np.linalg.eigh(z.T @ z / len(z))
    order = np.argsort(eigenvalues)[::-1][: head._k]
    if _state["whiten"]:  # every component in its own units
        scale = np.sqrt(eigenvalues[order] + STATISTICS_EPSILON)
    else:  # the components' relative variances kept, their mean variance 1
        scale = np.sqrt(eigenvalues[order].mean() + STATISTICS_EPSILON)
    projection = vectors[:, order] / scale
    kept = eigenvalues[order].sum() / eigenvalues.sum()
    print(f"  {head.name}: {head._k} of {t.shape[-1]} components, {100 * kept:.1f} % of variance")
    return tuple(ops.convert_to_tensor(a.astype("float32")) for a in (mean, 1.0 / std, projection))


def _calibrate_with_components(distiller, x):
    """Per-channel statistics from the first batch, as the library does;
    the components of the narrow pairs from the whole sample."""
    first = distiller._teacher_features(x[: _state["batch_size"]])
    sample = distiller._teacher_features(x)
    for pair in distiller.distillation_pairs:
        head = pair.head
        if getattr(head, "_k", None):
            head._pca = _pca_of(head, sample[pair.key])
            head.set_statistics(np.zeros(head._k, "float32"), np.ones(head._k, "float32"))
            # (without whitening the components' variances differ; σ² starts
            # at 1, their mean, and the floor is a tenth of it)
        elif pair.needs_calibration:
            head.set_statistics(*head.statistics_of(first[pair.key]))


def _calibrate_from_sample(distiller, x, batch_size=None):
    _state["batch_size"] = batch_size or 32
    return _calibrate_from(distiller, x, _state["sample"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=int, default=1024, help="images for the components")
    p.add_argument("--fraction", type=float, default=1.0, help="k = fraction × student channels")
    p.add_argument(
        "--no-whiten", dest="whiten", action="store_false",
        help="keep the components' relative variances (scaled to mean 1)",
    )  # fmt: skip
    args, rest = p.parse_known_args(argv)
    _state.update(sample=args.sample, fraction=args.fraction, whiten=args.whiten)
    VIDHead.build, VIDHead.target = _build_on_components, _target_on_components
    calibration.calibrate = _calibrate_with_components
    calibration.calibrate_from = _calibrate_from_sample
    return accuracy.main(rest)


if __name__ == "__main__":
    main()
