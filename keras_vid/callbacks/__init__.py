"""Keras callbacks for `VIDDistiller` training."""

from keras_vid.callbacks.non_finite import NonFiniteMonitor
from keras_vid.callbacks.variance_monitor import VarianceMonitor
from keras_vid.callbacks.weight_schedule import EpochSchedule, WeightSchedule

__all__ = ["EpochSchedule", "NonFiniteMonitor", "VarianceMonitor", "WeightSchedule"]
