"""keras_vid: Variational Information Distillation (Ahn et al., CVPR 2019) for Keras 3.

`VIDHead` is the loss of one (student layer, teacher layer) pair;
`VIDDistiller` trains a student against a frozen teacher with one head per
pair. Both run on the TensorFlow, JAX and PyTorch backends.
"""

from keras_vid.distiller import VIDDistiller
from keras_vid.losses import gaussian_nll, softened_kl
from keras_vid.version import __version__
from keras_vid.vid_head import VIDHead

__all__ = ["VIDDistiller", "VIDHead", "gaussian_nll", "softened_kl", "__version__"]
