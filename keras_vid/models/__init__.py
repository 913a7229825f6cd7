"""Model builders for experiments: the paper's Wide ResNets."""

from keras_vid.models.wide_resnet import GROUP_OUTPUTS, wide_resnet

__all__ = ["wide_resnet", "GROUP_OUTPUTS"]
