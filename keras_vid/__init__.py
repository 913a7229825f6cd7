"""keras_vid: Variational Information Distillation (Ahn et al., CVPR 2019) for Keras 3.

`VIDHead` is the loss of one (student layer, teacher layer) pair;
`VIDDistiller` trains a student against a frozen teacher with one head per
pair. Both run on the TensorFlow, JAX and PyTorch backends. Callbacks for
skipped steps, σ² statistics and weight schedules live in
`keras_vid.callbacks`.
"""

from keras_vid.callbacks import EpochSchedule, NonFiniteMonitor, VarianceMonitor, WeightSchedule
from keras_vid.distiller import VIDDistiller
from keras_vid.head_cost import head_cost_summary
from keras_vid.losses import gaussian_nll, softened_kl
from keras_vid.pair_suggestion import resolve_pairs, suggest_pairs
from keras_vid.variance_plot import plot_variance, variance_summary
from keras_vid.version import __version__
from keras_vid.vid_head import VIDHead

__all__ = [
    "VIDDistiller",
    "VIDHead",
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
    "__version__",
]
