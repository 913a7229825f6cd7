"""keras_vid: Variational Information Distillation (Ahn et al., CVPR 2019) for Keras 3.

`VIDHead` is the loss of one (student layer, teacher layer) pair (a
`PairLoss`); `VIDDistiller` trains a student against a frozen teacher with
one head per pair, guarded by a `StepGuard`. Both run on the TensorFlow, JAX
and PyTorch backends, and none of this package's core needs TensorFlow.
Callbacks for skipped steps, σ² statistics and weight schedules live in
`keras_vid.callbacks`. The experiment harness (`keras_vid.experiments`, with its data pipelines,
model builders, recipes and command line) is an extra, `pip install
keras-vid[experiments]`, and is never imported by the core.
"""

from keras_vid import layers  # noqa: F401  (registers the layers saved teachers use)
from keras_vid.attention_transfer import AttentionTransferHead
from keras_vid.callbacks import EpochSchedule, NonFiniteMonitor, VarianceMonitor, WeightSchedule
from keras_vid.distiller import VIDDistiller
from keras_vid.head_cost import head_cost_summary
from keras_vid.losses import gaussian_nll, sigmoid_kl, softened_kl
from keras_vid.pair_loss import PairLoss
from keras_vid.pair_suggestion import resolve_pairs, suggest_pairs
from keras_vid.step_guard import StepGuard
from keras_vid.variance_plot import plot_variance, variance_summary
from keras_vid.version import __version__
from keras_vid.vid_head import PYTORCH_REFERENCE, VIDHead

__all__ = [
    "VIDDistiller",
    "VIDHead",
    "PairLoss",
    "AttentionTransferHead",
    "StepGuard",
    "suggest_pairs",
    "resolve_pairs",
    "head_cost_summary",
    "EpochSchedule",
    "NonFiniteMonitor",
    "VarianceMonitor",
    "WeightSchedule",
    "plot_variance",
    "variance_summary",
    "gaussian_nll",
    "softened_kl",
    "sigmoid_kl",
    "PYTORCH_REFERENCE",
    "__version__",
]
