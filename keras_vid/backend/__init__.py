"""The training and evaluation steps of `VIDDistiller`, one module per backend.

Everything that differs between backends (how gradients are taken, how the
teacher is kept out of the differentiated computation, how state flows) lives
in `<backend>_trainer.py`; the loss itself is shared and written in
`keras.ops` (`VIDDistiller.compute_loss`). Each step calls three distiller
hooks: `_teacher_features`, `_forward_loss` and `_log_step`, and the
distiller's `StepGuard`.

`finite_groups` is the finiteness check `StepGuard` uses: the backend's
fused one where it has one, else `keras_vid.finiteness.finite_groups`.
`process_mean` averages a value over the processes of a multi-process data
parallel run (PyTorch DDP); the single-process backends return it as it is
(their `fit` sees the global batch).
"""

import keras

from keras_vid.finiteness import finite_groups


def process_mean(value):
    return value


_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_vid.backend.tensorflow_trainer import test_step, train_step
elif _BACKEND == "jax":
    from keras_vid.backend.jax_trainer import test_step, train_step
elif _BACKEND == "torch":
    from keras_vid.backend.torch_trainer import (  # noqa: F811
        finite_groups,
        process_mean,
        test_step,
        train_step,
    )
else:

    def _unsupported(*args, **kwargs):
        raise RuntimeError(
            f"VIDDistiller trains on the tensorflow, jax and torch backends; the "
            f"current backend is '{_BACKEND}'. Set KERAS_BACKEND before importing keras."
        )

    train_step = test_step = _unsupported

__all__ = ["train_step", "test_step", "finite_groups", "process_mean"]
