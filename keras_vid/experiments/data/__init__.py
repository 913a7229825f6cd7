"""Datasets for the experiments: sources read into memory, tf.data pipelines out.

Needs TensorFlow and tensorflow-datasets (`pip install keras-vid[experiments]`);
the core of `keras_vid` never imports this package.
"""

from keras_vid.experiments.data.pipeline import (
    augment,
    channel_stats,
    make_dataset,
    subsample_per_class,
)
from keras_vid.experiments.data.sources import (
    Split,
    describe_source,
    load_image_folder,
    load_npz,
    load_split,
    load_tfds,
)

__all__ = [
    "Split",
    "augment",
    "channel_stats",
    "describe_source",
    "load_image_folder",
    "load_npz",
    "load_split",
    "load_tfds",
    "make_dataset",
    "subsample_per_class",
]
