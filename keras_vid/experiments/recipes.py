"""The compared methods as named recipes on one training loop.

Every recipe returns a model to `fit` and the extra `compile` arguments, so
all methods share the optimizer, schedule, data and epochs; only the loss
differs:

- `student`: the student alone on the task loss (plain `student.fit`; no
  teacher forward pass is needed, so none is paid for).
- `kd`: Hinton's KD at temperature T on the logits: a `VIDDistiller`
  without layer pairs (`pairs=[]`).
- `fitnet`: the VID-I regressors with σ fixed at 1 (`learn_variance=False`,
  `init_variance=1`), i.e. half the MSE: the paper's special case.
- `at`: attention transfer on the same stage pairs (`AttentionTransferHead`,
  weight β = 1000 per pair).
- `vid-i`: VID on one pair at the end of each stage / WRN group.
- `vid-lp`: VID from the student's penultimate vector to the teacher's logits.
- `kd+vid-i`: `kd` and `vid-i` together.
"""

import dataclasses
import inspect

from keras_vid.attention_transfer import AttentionTransferHead
from keras_vid.distiller import VIDDistiller
from keras_vid.vid_head import VIDHead

# The library's defaults: the recipes use them unless told otherwise.
_HEAD = {k: p.default for k, p in inspect.signature(VIDHead.__init__).parameters.items()}
_COMPILE = {k: p.default for k, p in inspect.signature(VIDDistiller.compile).parameters.items()}

METHODS = ("student", "kd", "fitnet", "at", "vid-i", "vid-lp", "kd+vid-i")


@dataclasses.dataclass
class MethodConfig:
    """Loss weights and head options shared by the recipes.

    Every default is the library's (`VIDHead`, `VIDDistiller.compile`):
    `vid_weight` is λ per VID pair (mean reduction, default 1) and
    `fitnet_weight` the weight per FitNet pair (default 1: FitNet is the
    head with σ² fixed at 1, on the same standardised teacher features;
    `None`: λ); `at_weight` β per AT pair;
    `kd_weight` the weight of T²·KL next to the task loss (weight 1).
    `stages` keeps only these stage pairs (1-based, e.g. `(2, 3)`) for
    `fitnet`, `at` and `vid-i`; `None` uses them all. `hidden_multiplier`
    sets μ's hidden widths to that multiple of each pair's teacher channels
    (2 gives the reproduction's 2C, 2C, C); it overrides `hidden_width`.
    `feature_point` picks which features the stage pairs read: `"output"`
    (each stage's post-activation output) or `"pre-activation"` (the same
    feature before its last ReLU; for a pre-activation WRN both are the
    group's residual stream).
    `min_variance` is the VID heads' floor on σ² and `normalize_teacher`
    whether they standardise the teacher feature (`VIDHead`'s defaults);
    `use_batch_norm` is
    `VIDHead`'s (`False`, `"hidden"`, `"all"`); `task_weight` weighs the task
    loss of the VID-head methods (`fitnet`, `vid-i`, `vid-lp`, `kd+vid-i`);
    `student`, `kd` and `at` keep their published weighting (task loss 1).
    """

    vid_weight: float = _COMPILE["vid_weight"]
    fitnet_weight: float | None = _COMPILE["vid_weight"]
    at_weight: float = 1000.0
    kd_weight: float = 1.0
    temperature: float = 4.0
    init_variance: float = _HEAD["init_variance"]
    hidden_width: int | None = None
    head_depth: int | None = None
    use_batch_norm: bool | str = False
    stages: tuple | None = None
    feature_point: str = "output"
    min_variance: float = _HEAD["min_variance"]
    hidden_multiplier: float | None = None
    task_weight: float = 1.0
    alpha_gradient_scale: float | str = _HEAD["alpha_gradient_scale"]
    normalize_teacher: bool = _HEAD["normalize_teacher"]

    def head_options(self, **overrides):
        options = {
            "init_variance": self.init_variance,
            "hidden_width": self.hidden_width,
            "depth": self.head_depth,
            "use_batch_norm": self.use_batch_norm,
            "min_variance": self.min_variance,
            "alpha_gradient_scale": self.alpha_gradient_scale,
            "normalize_teacher": self.normalize_teacher,
        }
        options.update(overrides)
        return options

    def pair_head_options(self, teacher, pairs, **overrides):
        """One options dict per pair (hidden widths scaled to each teacher layer)."""
        options = []
        for _, teacher_layer in pairs:
            option = self.head_options(**overrides)
            if self.hidden_multiplier:
                channels = teacher.get_layer(teacher_layer).output.shape[-1]
                depth = self.head_depth or 3
                width = max(1, int(round(self.hidden_multiplier * channels)))
                option["hidden_width"] = [width] * (depth - 1)
            options.append(option)
        return options


FEATURE_POINTS = ("output", "pre-activation")


def stage_pairs(student_arch, teacher_arch, feature_point="output"):
    """(student, teacher) layer pairs at the ends of stages, aligned from the end.

    A CNN or WRN student pairs its stages with the teacher's; an MLP student
    pairs its hidden layers with the teacher's last stages (CNN → MLP).
    `feature_point="pre-activation"` pairs the features before each stage's
    last activation on both sides (an MLP student has none: ValueError).
    """
    if feature_point not in FEATURE_POINTS:
        raise ValueError(
            f"`feature_point` must be one of {FEATURE_POINTS}. Received: {feature_point!r}"
        )
    pre = feature_point == "pre-activation"
    student_layers = (
        student_arch.pre_activation_stages if pre else student_arch.stages or student_arch.hidden
    )
    teacher_layers = teacher_arch.pre_activation_stages if pre else teacher_arch.stages
    if not student_layers or not teacher_layers:
        raise ValueError(
            f"No {feature_point} stage layers to pair between student "
            f"{student_arch.name!r} and teacher {teacher_arch.name!r}."
        )
    count = min(len(student_layers), len(teacher_layers))
    return list(zip(student_layers[-count:], teacher_layers[-count:]))


def build_method(method, teacher, student, teacher_arch, student_arch, config=None):
    """The model to train for `method` and its extra `compile` arguments.

    Returns:
        `(model, compile_kwargs)`: `model` is the student itself for
        `student`, a `VIDDistiller` otherwise; pass `compile_kwargs` to
        `model.compile` next to the optimizer, loss and metrics.
    """
    config = config or MethodConfig()
    if method == "student":
        return student, {}
    kd = {"kd_weight": config.kd_weight, "temperature": config.temperature}
    task = {"task_weight": config.task_weight}
    if method == "kd":
        return VIDDistiller(teacher, student, pairs=[]), kd
    if method == "vid-lp":
        pairs = [(student_arch.penultimate, teacher_arch.logits)]
        options = config.head_options(hidden_width=None, depth=None)
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
        return distiller, {"vid_weight": config.vid_weight, "kd_weight": 0.0, **task}
    pairs = stage_pairs(student_arch, teacher_arch, config.feature_point)
    if config.stages:
        pairs = [pairs[i - 1] for i in config.stages]
    if method == "fitnet":
        options = config.pair_head_options(
            teacher, pairs, init_variance=1.0, learn_variance=False, min_variance=0.0
        )
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
        weight = config.vid_weight if config.fitnet_weight is None else config.fitnet_weight
        return distiller, {"vid_weight": weight, "kd_weight": 0.0, **task}
    if method == "at":
        heads = [AttentionTransferHead(name=f"at_head_{i}") for i in range(len(pairs))]
        distiller = VIDDistiller(teacher, student, pairs=pairs, heads=heads)
        return distiller, {"vid_weight": config.at_weight, "kd_weight": 0.0}
    if method in ("vid-i", "kd+vid-i"):
        options = config.pair_head_options(teacher, pairs)
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
        extra = kd if method == "kd+vid-i" else {"kd_weight": 0.0}
        return distiller, {"vid_weight": config.vid_weight, **extra, **task}
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
