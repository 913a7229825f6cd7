"""The paper's reduced-data experiment: recipes, the runner and its command line.

This package (its `data` pipelines, `models` builders, recipes and runner)
imports TensorFlow: its inputs are tf.data pipelines, which Keras feeds to any
backend. Install it with
`pip install keras-vid[experiments]`; the core of `keras_vid` never imports it.
"""

from keras_vid.attention_transfer import AttentionTransferHead
from keras_vid.experiments.architectures import Architecture, parse_architecture
from keras_vid.experiments.recipes import METHODS, MethodConfig, build_method, stage_pairs
from keras_vid.experiments.training import TrainingConfig

__all__ = [
    "METHODS",
    "Architecture",
    "AttentionTransferHead",
    "MethodConfig",
    "TrainingConfig",
    "build_method",
    "parse_architecture",
    "stage_pairs",
]
