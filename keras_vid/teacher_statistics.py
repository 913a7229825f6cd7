"""Teacher standardisation: each teacher channel scored in its own units.

The teacher's per-channel variances span an order of magnitude and change
with the layer, the dataset and the architecture, so a σ² floor or an
initial σ² in absolute units means something different on every pair.
Standardising each teacher channel by its mean and variance (the teacher is
frozen, so these are fixed numbers of the data) makes `min_variance` and
`init_variance` fractions of the channel's variance everywhere.

`TeacherStandardization` is the part of `VIDHead` that holds them: it
averages the first `statistics_batches` batches' moments in the step unless
`calibrate` (called by `VIDDistiller.fit` on the first batch) fixes them
first; once fixed, the step does no statistics work.
"""

from keras import ops

# Keeps a channel that is constant in the teacher (e.g. a dead ReLU) finite.
STATISTICS_EPSILON = 1e-6


class TeacherStandardization:
    """Per-channel teacher statistics of a head (a mixin of `VIDHead`).

    The host layer sets `normalize_teacher`, `statistics_batches`,
    `_statistics_fixed` and `teacher_pool` (or `None`), and calls
    `_build_statistics(channels)` in its `build`.
    """

    STATISTICS_EPSILON = STATISTICS_EPSILON

    def _build_statistics(self, channels):
        def state(name, shape, initializer):
            return self.add_weight(
                name=name, shape=shape, initializer=initializer, dtype="float32",
                trainable=False, autocast=False,
            )  # fmt: skip

        self.teacher_mean = state("teacher_mean", (channels,), "zeros")
        self.teacher_variance = state("teacher_variance", (channels,), "ones")
        self.statistics_count = state("statistics_count", (), "zeros")

    def _statistics_variables(self):
        """The statistics' variables (state, not parameters), or `[]`."""
        if not (self.built and self.normalize_teacher):
            return []
        return [self.teacher_mean, self.teacher_variance, self.statistics_count]

    def standardize(self, t, training=None, padding_mask=None):
        """`t` (float32, pooled) standardised per channel by the tracked
        statistics, which a training call updates first while they are not
        fixed; `t` itself without `normalize_teacher`."""
        if not self.normalize_teacher:
            return t
        if training and not self._statistics_fixed:  # no per-step work once fixed
            self._update_statistics(t, padding_mask)
        mean = ops.convert_to_tensor(self.teacher_mean)
        variance = ops.convert_to_tensor(self.teacher_variance)
        return (t - mean) * ops.rsqrt(variance + STATISTICS_EPSILON)

    def _update_statistics(self, t, padding_mask=None):
        """Average this batch's per-channel mean and variance into the tracked
        ones while fewer than `statistics_batches` batches were seen; after
        that (or after `calibrate`) they stay fixed."""
        batch_mean, batch_variance = channel_moments(t, padding_mask)
        count = ops.convert_to_tensor(self.statistics_count)
        rate = ops.where(count < self.statistics_batches, 1.0 / (count + 1.0), 0.0)
        mean = ops.convert_to_tensor(self.teacher_mean)
        variance = ops.convert_to_tensor(self.teacher_variance)
        self.teacher_mean.assign(mean + rate * (batch_mean - mean))
        self.teacher_variance.assign(variance + rate * (batch_variance - variance))
        self.statistics_count.assign(ops.minimum(count + 1.0, float(self.statistics_batches)))

    def calibrate(self, teacher, padding_mask=None):
        """Set the teacher statistics from a batch of teacher features (the
        head's input, before pooling) and stop updating them.
        `VIDDistiller.fit` calls it on the first batch of the data, as a whole
        (not per replica), so training is the same on any number of devices."""
        if self.normalize_teacher:
            self.set_statistics(*self.statistics_of(teacher, padding_mask))

    def statistics_of(self, teacher, padding_mask=None):
        """`(mean, variance)` per channel of teacher features, as the head pools them."""
        t = ops.cast(teacher, "float32")
        if self.teacher_pool is not None:
            t = self.teacher_pool(t)
        return channel_moments(t, padding_mask)

    def set_statistics(self, mean, variance):
        """Fix the teacher statistics to these per-channel values."""
        self.teacher_mean.assign(mean)
        self.teacher_variance.assign(variance)
        self.statistics_count.assign(float(self.statistics_batches))
        self._statistics_fixed = True

    @property
    def calibrated(self):
        """Whether the teacher statistics are fixed (estimated from enough
        batches, or set by `calibrate`); always true without `normalize_teacher`."""
        if not self.normalize_teacher:
            return True
        # float() of a 0-d tensor: NumPy 2 warns on np.array of a torch/TF tensor.
        done = float(ops.add(self.statistics_count, 0.0)) >= self.statistics_batches
        # Read outside a step (`fit` asks before tracing): the traced step then
        # leaves the statistics update out.
        self._statistics_fixed = self._statistics_fixed or done
        return done


def channel_moments(t, padding_mask=None):
    """Per-channel (last axis) mean and variance of `t` over every other axis,
    over its finite values only (a NaN example does not poison them); with a
    `(batch, tokens)` padding mask, over the real tokens only."""
    axes = tuple(range(len(t.shape) - 1))
    finite = ops.isfinite(t)
    weight = ops.cast(finite, "float32")
    if padding_mask is not None:
        real = ops.cast(ops.greater(ops.cast(padding_mask, "float32"), 0.0), "float32")
        weight = weight * ops.expand_dims(real, -1)
    t = ops.where(finite, t, ops.zeros_like(t))
    total = ops.maximum(ops.sum(weight, axis=axes), 1.0)
    mean = ops.sum(t * weight, axis=axes) / total
    return mean, ops.sum(ops.square(t - mean) * weight, axis=axes) / total
