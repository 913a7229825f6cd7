"""Model builders for experiments: the paper's Wide ResNets, small CNNs and MLPs."""

from keras_vid.experiments.models.small import cnn_block_names, mlp, small_cnn
from keras_vid.experiments.models.wide_resnet import GROUP_OUTPUTS, wide_resnet

__all__ = ["wide_resnet", "GROUP_OUTPUTS", "small_cnn", "cnn_block_names", "mlp"]
