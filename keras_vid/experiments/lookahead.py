"""Lookahead as airbench uses it: a weight average that takes over at the end."""

import keras
import numpy as np


class Lookahead:
    """airbench's Lookahead: every `every` steps the weights move to
    `ema ← ema + (1 − decay)·(w − ema)`, with `decay = 0.95⁵·(step/total)³`,
    so it does nothing early and averages the last steps' weights; the last
    step sets the weights to the average. Works on every backend (it reads
    and assigns the model's variables between steps). `state()` and
    `restore()` carry the average across a resumed run."""

    def __init__(self, model, total_steps, every=5):
        self.variables = [v for v in model.variables if "float" in str(v.dtype)]
        self.total_steps = int(total_steps)
        self.every = int(every)
        self.average = [np.array(keras.ops.convert_to_numpy(v)) for v in self.variables]

    def decay(self, step):
        return 0.95**5 * (step / self.total_steps) ** 3

    def after_step(self, step):
        """Call after optimizer step number `step` (1-based)."""
        if step >= self.total_steps:
            self._update(1.0)
        elif step % self.every == 0:
            self._update(self.decay(step))

    def _update(self, decay):
        for variable, average in zip(self.variables, self.average):
            current = keras.ops.convert_to_numpy(variable)
            average += (1.0 - decay) * (current - average)
            variable.assign(average)

    def state(self):
        return {f"v{i}": a for i, a in enumerate(self.average)}

    def restore(self, state):
        self.average = [np.array(state[f"v{i}"]) for i in range(len(self.variables))]
