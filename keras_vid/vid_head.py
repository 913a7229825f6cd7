"""`VIDHead`: the variational distribution q(t | s) of one layer pair."""

import math

import keras
from keras import ops

from keras_vid.arguments import check_head_arguments
from keras_vid.losses import gaussian_nll, inverse_softplus
from keras_vid.pair_loss import PairLoss
from keras_vid.regressors import plan_regressor
from keras_vid.teacher_statistics import TeacherStandardization

# The PyTorch reference implementations' head (RepDistiller, torchdistill):
# raw teacher features, σ² starting at 5, no floor beyond ε, α learning at
# the optimizer's rate. `VIDDistiller(..., head_options=PYTORCH_REFERENCE)`
# with `compile(vid_weight=1.0)` reproduces their setting.
PYTORCH_REFERENCE = {
    "normalize_teacher": False,
    "init_variance": 5.0,
    "min_variance": 0.0,
    "alpha_gradient_scale": 1.0,
}


@keras.saving.register_keras_serializable(package="keras_vid")
class VIDHead(TeacherStandardization, PairLoss):
    """Gaussian q(t | s) with a learned mean and a learned per-channel variance.

    The head predicts the teacher feature `t` from the student feature `s`
    with a small regressor μ(s) and scores it with a Gaussian whose standard
    deviation per teacher channel is `σ_c = softplus(α_c) + epsilon`, or
    with a variance floor `σ_c² = (softplus(α_c) + epsilon)² + min_variance`.
    Calling it returns the per-example negative log-likelihood (constants
    dropped)

        nll = reduce_{h,w,c} [ log σ_c + (t − μ(s))² / (2 σ_c²) ]

    which is the VID loss of the pair. With σ fixed the loss is MSE
    (FitNet); learning σ lets the student give up on teacher channels it
    cannot predict.

    The head builds itself from the first `(student, teacher)` call, so
    `VIDHead()` works for any pair of shapes it can map:

    - maps → maps (channels-last, rank 3 or 4): `depth` 1×1 convolutions
      (computed as `Dense` layers on the channel axis, the faster kernel)
      without bias and ReLU between them (default 3, hidden width = teacher
      channels). When spatial sizes differ, the larger map is average-pooled
      to the smaller one, each spatial axis on its own.
    - vectors → vectors (e.g. penultimate layer → logits): one Dense layer
      by default (VID-LP).
    - vector → map: Dense then reshape (e.g. a CNN teacher and an MLP student).
    - map → vector: global average pooling then Dense.

    Token features `(batch, tokens, dim)` are rank-3 maps: μ is pointwise on
    `dim` and σ is per `dim`. `head(s, t, padding_mask=mask)` with a
    `(batch, tokens)` mask (true at real tokens) averages the NLL over the
    real tokens × dims only (sums with `reduction="sum"`); padded tokens get
    no gradient and an all-padding example contributes 0. Token features
    of different lengths (two ViTs with different patch sizes) are pooled
    like maps: the longer patch sequence is average-pooled to the shorter,
    after `class_tokens` leading tokens that are paired one to one
    (or dropped from the loss with `drop_class_tokens=True`); with
    `token_grid=True` the patches are pooled as the square grid they are.

    The teacher input is passed through `stop_gradient`; the NLL is computed
    in float32 whatever the dtype policy (the regressor itself follows the
    policy).

    Args:
        depth: number of pointwise layers in μ; `None` chooses 3 for
            map → map pairs and 1 otherwise (or `len(hidden_width) + 1`).
        hidden_width: width of μ's hidden layers: one int for all, a list
            with one int per hidden layer (e.g. `[256, 256]` for 2C, 2C on a
            128-channel teacher), or `None` for the teacher's channel count.
        use_batch_norm: `False` (default); `True` / `"hidden"` adds
            BatchNormalization before each hidden ReLU; `"all"` after every
            layer of μ, the last included (as the TensorFlow reproduction).
        init_variance: initial σ² of every channel (default 1.0: with
            `normalize_teacher`, the teacher channel's own variance, i.e. the
            error of predicting its mean); must exceed `min_variance`.
        epsilon: floor added to σ (default 1e-5), so σ > 0 and the loss per
            element is at least `log(epsilon)`.
        min_variance: floor on σ² (default 0.1: with `normalize_teacher`, a
            tenth of each teacher channel's variance). With a floor v the
            loss per element is at least `½·log v`, and its gradient with
            respect to μ, `(μ − t) / σ²`, is at most `|μ − t| / v`: the
            variance cannot collapse onto channels the regressor already
            fits, which would blow the VID gradient up by 1/σ² and let it
            swamp the task loss. Where the error is far below v the term is
            MSE / (2v) (FitNet); where it is above, σ² follows the error
            (VID). Without `normalize_teacher` it is in the units of the
            teacher feature's variance. The PyTorch references use no floor
            (`min_variance=0.0`; their 1e-5 is `epsilon`).
        normalize_teacher: score the teacher feature in units of its own
            per-channel spread, `(t − mean_c) / std_c` (default `True`). The
            statistics are estimated from the first training batch
            (`VIDDistiller.fit` calibrates every head on it; a head used
            alone averages its first `statistics_batches` training batches)
            and then fixed: the teacher is frozen, so they are a property of
            the data. `init_variance` and `min_variance` are then fractions
            of each channel's variance, and λ weighs a term whose scale does
            not depend on the layer, the dataset or the architecture: the
            same defaults mean the same thing on every pair (a teacher
            feature × 1 000 trains the student identically). `False` scores
            the raw feature (the PyTorch references).
        statistics_batches: how many training batches a head used on its own
            averages before fixing its statistics (default 100).
        alpha_gradient_scale: multiplies the gradient that reaches α (its
            value is unchanged), a learning-rate factor for σ alone. With the
            mean reduction each α_c receives 1/C of its channel's gradient,
            so in a short schedule σ² stays near `init_variance` and the term
            acts as MSE / (2·init_variance), a weak FitNet. `"channels"`
            scales by C (the teacher's channel count) under the mean
            reduction, so each α_c learns as from its own channel's mean,
            and by 1 under the sum reduction (the default, chosen on the
            CIFAR-10 validation split of `results/cifar10/`, where with 1.0
            σ² was still 3–4 after 800 steps). `1.0` is the PyTorch
            references' behaviour.
        reduction: `"mean"` over the teacher's elements (default, so a weight
            of 1 suits any layer size) or `"sum"` (the paper's form).
        learn_variance: train α (default). `False` keeps σ² at
            `init_variance`: with `init_variance=1` the loss is half the MSE
            (FitNet), the paper's special case.
        class_tokens: number of leading tokens of a token pair (a ViT's
            class token: 1; with distillation token: 2) that summarise the
            input rather than a place in it: they are left out when the
            patch tokens are pooled to the other side's length. Default 0
            (every token is pooled alike). Token pairs (rank 3) only.
        drop_class_tokens: `False` (default) regresses the class tokens one
            to one, as part of the loss; `True` leaves them out of it.
        token_grid: `True` when the patch tokens (after the class tokens)
            are a square grid in row-major order, as a ViT's: patches are
            then pooled per image axis (4×4 → 2×2 averages 2×2 blocks), not
            by runs of consecutive tokens. A non-square count is an error.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`...).

    Example:

    ```python
    head = keras_vid.VIDHead()
    nll = head(student_features, teacher_features)   # shape (batch,)
    loss = keras.ops.mean(nll)
    ```
    """

    def __init__(
        self,
        depth=None,
        hidden_width=None,
        use_batch_norm=False,
        init_variance=1.0,
        epsilon=1e-5,
        reduction="mean",
        learn_variance=True,
        min_variance=0.1,
        alpha_gradient_scale="channels",
        class_tokens=0,
        drop_class_tokens=False,
        token_grid=False,
        normalize_teacher=True,
        statistics_batches=100,
        **kwargs,
    ):
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        check_head_arguments(
            self._who(), depth=depth, hidden_width=hidden_width, use_batch_norm=use_batch_norm,
            init_variance=init_variance, epsilon=epsilon, reduction=reduction,
            min_variance=min_variance, alpha_gradient_scale=alpha_gradient_scale,
            class_tokens=class_tokens, drop_class_tokens=drop_class_tokens,
            statistics_batches=statistics_batches,
        )  # fmt: skip
        self.normalize_teacher = bool(normalize_teacher)
        self.statistics_batches = statistics_batches
        self._statistics_fixed = False
        self.class_tokens = class_tokens
        self.drop_class_tokens = bool(drop_class_tokens)
        self.token_grid = bool(token_grid)
        self.depth = depth
        self.hidden_width = list(hidden_width) if isinstance(hidden_width, tuple) else hidden_width
        self.use_batch_norm = (
            use_batch_norm if isinstance(use_batch_norm, str) else bool(use_batch_norm)
        )
        self.min_variance = float(min_variance)
        self.alpha_gradient_scale = (
            alpha_gradient_scale
            if isinstance(alpha_gradient_scale, str)
            else float(alpha_gradient_scale)
        )
        self.init_variance = float(init_variance)
        self.epsilon = float(epsilon)
        self.reduction = reduction
        self.learn_variance = bool(learn_variance)
        self.student_shape = None
        self.teacher_shape = None

    def _who(self):
        return f"VIDHead '{self.name}'"

    def build(self, student_shape, teacher_shape):
        if self.built:
            return
        plan = plan_regressor(
            student_shape,
            teacher_shape,
            depth=self.depth,
            hidden_width=self.hidden_width,
            use_batch_norm=self.use_batch_norm,
            class_tokens=self.class_tokens,
            drop_class_tokens=self.drop_class_tokens,
            token_grid=self.token_grid,
            owner=self._who(),
        )
        self.student_shape = tuple(student_shape)
        self.teacher_shape = tuple(teacher_shape)
        self.student_pool = plan.student_pool
        self.teacher_pool = plan.teacher_pool
        self.regressor = plan.layers
        shape = self.student_shape
        if self.student_pool is not None:
            self.student_pool.build(shape)
            shape = self.student_pool.compute_output_shape(shape)
        for layer in self.regressor:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if self.teacher_pool is not None:
            self.teacher_pool.build(self.teacher_shape)
        channels = self.teacher_shape[-1]
        # σ² starts at init_variance; at the floor itself, σ from α starts tiny.
        start = max(math.sqrt(self.init_variance - self.min_variance) - self.epsilon, 1e-4)
        alpha_0 = float(inverse_softplus(start))
        self.alpha = self.add_weight(
            name="alpha",
            shape=(channels,),
            initializer=keras.initializers.Constant(alpha_0),
            dtype="float32",
            trainable=self.learn_variance,
        )
        if self.normalize_teacher:
            self._build_statistics(channels)
        self.built = True

    def count_params(self):
        """μ's weights and α: the head's parameters. The tracked teacher
        statistics are state (like BatchNorm's moving averages of a frozen
        teacher), not parameters, and are not counted."""
        statistics = {id(w) for w in self._statistics_variables()}
        return sum(int(math.prod(w.shape)) for w in self.weights if id(w) not in statistics)

    def _alpha_scale(self):
        if self.alpha_gradient_scale == "channels":
            return float(self.teacher_shape[-1]) if self.reduction == "mean" else 1.0
        return self.alpha_gradient_scale

    def _scaled_alpha(self):
        """α with its gradient multiplied by the scale, its value unchanged
        (exactly: α + (s − 1)·(α − stop_gradient(α)))."""
        scale = self._alpha_scale()
        if scale == 1.0:
            return self.alpha
        alpha = ops.convert_to_tensor(self.alpha)
        return alpha + (scale - 1.0) * (alpha - ops.stop_gradient(alpha))

    @property
    def std(self):
        """σ per teacher channel, float32, shape `(channels,)`."""
        std = ops.softplus(self._scaled_alpha()) + self.epsilon
        if self.min_variance:
            return ops.sqrt(ops.square(std) + self.min_variance)
        return std

    @property
    def variance(self):
        """σ² per teacher channel, float32, shape `(channels,)`."""
        return ops.square(self.std)

    def mean(self, student, training=None):
        """μ(s): the predicted teacher feature (pooled to the common size)."""
        x = student
        if self.student_pool is not None:
            x = self.student_pool(x)
        for layer in self.regressor:
            x = layer(x, training=training)
        return x

    def target(self, teacher, training=None, padding_mask=None):
        """The teacher feature as the head scores it: float32, no gradient,
        pooled, and with `normalize_teacher` standardised per channel by the
        tracked statistics (which a training call updates first)."""
        t = ops.stop_gradient(ops.cast(teacher, "float32"))
        if self.teacher_pool is not None:
            t = self.teacher_pool(t)
        return self.standardize(t, training=training, padding_mask=padding_mask)

    def call(self, student, teacher, training=None, padding_mask=None):
        """The per-example NLL, shape `(batch,)`. `padding_mask`, shape
        `(batch, tokens)`, true at real tokens, leaves the padded tokens of
        `(batch, tokens, dim)` features out exactly (`gaussian_nll`'s `mask`):
        μ is pointwise, so a token's prediction reads that token alone."""
        if padding_mask is not None and (
            self.student_pool is not None
            or self.teacher_pool is not None
            or len(self.teacher_shape) != 3
            or len(self.student_shape) != 3
        ):
            raise ValueError(
                f"{self._who()}: a `padding_mask` applies to token features of the same "
                "length on both sides, (batch, tokens, dim), which the head regresses "
                "token by token. Received: student shape "
                f"{self.student_shape}, teacher shape {self.teacher_shape}"
            )
        return gaussian_nll(
            self.target(teacher, training=training, padding_mask=padding_mask),
            self.mean(student, training=training),
            self.std,
            reduction=self.reduction,
            mask=padding_mask,
        )

    def compute_output_shape(self, student_shape, teacher_shape, padding_mask=None):
        return (student_shape[0],)

    def compute_output_spec(self, student, teacher, training=None, padding_mask=None):
        return keras.KerasTensor((student.shape[0],), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth": self.depth,
                "hidden_width": self.hidden_width,
                "use_batch_norm": self.use_batch_norm,
                "init_variance": self.init_variance,
                "epsilon": self.epsilon,
                "reduction": self.reduction,
                "learn_variance": self.learn_variance,
                "min_variance": self.min_variance,
                "alpha_gradient_scale": self.alpha_gradient_scale,
                "class_tokens": self.class_tokens,
                "drop_class_tokens": self.drop_class_tokens,
                "token_grid": self.token_grid,
                "normalize_teacher": self.normalize_teacher,
                "statistics_batches": self.statistics_batches,
            }
        )
        return config

    def get_build_config(self):
        if self.student_shape is None:
            return None
        return {
            "student_shape": list(self.student_shape),
            "teacher_shape": list(self.teacher_shape),
        }

    def build_from_config(self, config):
        if config:
            self.build(tuple(config["student_shape"]), tuple(config["teacher_shape"]))
