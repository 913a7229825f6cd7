"""The compared methods as named recipes on one training loop.

Every recipe returns a model to `fit` and the extra `compile` arguments, so
all methods share the optimizer, schedule, data and epochs; only the loss
differs:

- `student`: the student alone on the task loss (plain `student.fit`; no
  teacher forward pass is needed, so none is paid for).
- `kd`: Hinton's KD at temperature T on the logits. `VIDDistiller` needs a
  pair, so it carries one logits → logits `VIDHead` with weight 0 (its term
  is computed and multiplied by 0, which leaves the student untouched).
- `fitnet`: the VID-I regressors with σ fixed at 1 (`learn_variance=False`,
  `init_variance=1`), i.e. half the MSE: the paper's special case.
- `at`: attention transfer on the same stage pairs (`AttentionTransferHead`,
  weight β = 1000 per pair).
- `vid-i`: VID on one pair at the end of each stage / WRN group.
- `vid-lp`: VID from the student's penultimate vector to the teacher's logits.
- `kd+vid-i`: `kd` and `vid-i` together.
"""

import dataclasses

from keras_vid.distiller import VIDDistiller
from keras_vid.experiments.attention import AttentionTransferHead

METHODS = ("student", "kd", "fitnet", "at", "vid-i", "vid-lp", "kd+vid-i")


@dataclasses.dataclass
class MethodConfig:
    """Loss weights and head options shared by the recipes.

    `vid_weight` is λ per VID pair (mean reduction); `fitnet_weight` the
    weight per FitNet pair (default: λ); `at_weight` β per AT pair;
    `kd_weight` the weight of T²·KL next to the task loss (weight 1).
    `stages` keeps only these stage pairs (1-based, e.g. `(2, 3)`) for
    `fitnet`, `at` and `vid-i`; `None` uses them all.
    """

    vid_weight: float = 1.0
    fitnet_weight: float | None = None
    at_weight: float = 1000.0
    kd_weight: float = 1.0
    temperature: float = 4.0
    init_variance: float = 5.0
    hidden_width: int | None = None
    head_depth: int | None = None
    use_batch_norm: bool = False
    stages: tuple | None = None

    def head_options(self, **overrides):
        options = {
            "init_variance": self.init_variance,
            "hidden_width": self.hidden_width,
            "depth": self.head_depth,
            "use_batch_norm": self.use_batch_norm,
        }
        options.update(overrides)
        return options


def stage_pairs(student_arch, teacher_arch):
    """(student, teacher) layer pairs at the ends of stages, aligned from the end.

    A CNN or WRN student pairs its stages with the teacher's; an MLP student
    pairs its hidden layers with the teacher's last stages (CNN → MLP).
    """
    student_layers = student_arch.stages or student_arch.hidden
    teacher_layers = teacher_arch.stages
    if not student_layers or not teacher_layers:
        raise ValueError(
            f"No stage layers to pair between student {student_arch.name!r} and "
            f"teacher {teacher_arch.name!r}."
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
    logits_pair = [(student_arch.logits, teacher_arch.logits)]
    kd = {"kd_weight": config.kd_weight, "temperature": config.temperature}
    if method == "kd":
        distiller = VIDDistiller(teacher, student, pairs=logits_pair)
        return distiller, {"vid_weight": 0.0, **kd}
    if method == "vid-lp":
        pairs = [(student_arch.penultimate, teacher_arch.logits)]
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=config.head_options())
        return distiller, {"vid_weight": config.vid_weight, "kd_weight": 0.0}
    pairs = stage_pairs(student_arch, teacher_arch)
    if config.stages:
        pairs = [pairs[i - 1] for i in config.stages]
    if method == "fitnet":
        options = config.head_options(init_variance=1.0, learn_variance=False)
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=options)
        weight = config.vid_weight if config.fitnet_weight is None else config.fitnet_weight
        return distiller, {"vid_weight": weight, "kd_weight": 0.0}
    if method == "at":
        heads = [AttentionTransferHead(name=f"at_head_{i}") for i in range(len(pairs))]
        distiller = VIDDistiller(teacher, student, pairs=pairs, heads=heads)
        return distiller, {"vid_weight": config.at_weight, "kd_weight": 0.0}
    if method in ("vid-i", "kd+vid-i"):
        distiller = VIDDistiller(teacher, student, pairs=pairs, head_options=config.head_options())
        extra = kd if method == "kd+vid-i" else {"kd_weight": 0.0}
        return distiller, {"vid_weight": config.vid_weight, **extra}
    raise ValueError(f"Unknown method {method!r}; choose from {METHODS}.")
