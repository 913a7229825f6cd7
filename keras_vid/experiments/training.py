"""The shared training recipe: optimizer, learning-rate schedule, epochs."""

import dataclasses
import math

import keras


@dataclasses.dataclass
class TrainingConfig:
    """The paper's CIFAR recipe by default (SGD Nesterov 0.9, lr 0.1, batch 128,
    weight decay 5e-4, 200 epochs, lr × 0.2 at 30/60/80 % of training).

    `weight_decay` is the L2 coefficient of the reference (PyTorch)
    implementations, where it is added to the gradient before momentum.
    Keras's SGD decays weights after the momentum update (decoupled), which
    under momentum m decays 1/(1 − m) times less; `keras_weight_decay`
    rescales it so the effective decay matches (5e-4 → 5e-3 at m = 0.9).
    `min_steps` lengthens runs on tiny subsets: a run lasts
    `max(epochs, ceil(min_steps / steps_per_epoch))` epochs. `clipnorm`
    clips every gradient tensor to that norm (the TensorFlow reproduction of
    the paper uses 100); `None` does not clip.
    """

    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    milestones: tuple = (0.3, 0.6, 0.8)
    lr_factor: float = 0.2
    min_steps: int = 0
    augmentation: bool = True
    flip: bool = True
    clipnorm: float | None = None

    @property
    def keras_weight_decay(self):
        if not self.weight_decay:
            return None
        return self.weight_decay / (1.0 - self.momentum) if self.momentum < 1 else None

    def epochs_for(self, num_examples):
        """Epochs of one run on `num_examples` training examples."""
        steps_per_epoch = math.ceil(num_examples / self.batch_size)
        if self.min_steps:
            return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))
        return self.epochs

    def optimizer(self, total_steps):
        """A fresh SGD optimizer with the step-decay schedule over `total_steps`."""
        boundaries = [max(1, int(round(m * total_steps))) for m in self.milestones]
        boundaries = sorted(set(boundaries))
        values = [self.learning_rate * self.lr_factor**i for i in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        return keras.optimizers.SGD(
            learning_rate=schedule,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.keras_weight_decay,
            clipnorm=self.clipnorm,
        )
