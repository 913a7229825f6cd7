"""`DistillationSettings`: what `VIDDistiller.compile()` decides beyond Keras.

One object holds the distillation arguments of `compile()` (validated), what
they imply for the step (the task kind, which KD term, whether KD is
computed at all) and the config that `get_compile_config` saves. The
weights themselves (`vid_weights`, `kd_weight`, `task_weight`) are
variables of the distiller, so a `WeightSchedule` can change them between
epochs without re-tracing the step.
"""

import numbers
import warnings

from keras_vid import compat
from keras_vid.arguments import non_negative
from keras_vid.callbacks.weight_schedule import WeightSchedule
from keras_vid.task_kind import kd_kind, task_kind


class DistillationSettings:
    """The distillation settings of one `compile()` call.

    Args:
        num_pairs: the distiller's number of layer pairs.
        classes: the student's number of output classes (last logits axis).
        vid_weight, kd_weight, temperature, alpha_weight_decay, task_weight:
            `VIDDistiller.compile`'s arguments.
        loss: the compiled loss (decides the task kind and the KD term).
        jit_compile: `compile`'s `jit_compile` as the user gave it.
    """

    def __init__(
        self,
        num_pairs,
        classes,
        vid_weight=3.0,
        kd_weight=0.0,
        temperature=4.0,
        alpha_weight_decay=False,
        task_weight=1.0,
        loss=None,
        jit_compile="auto",
        compiled=True,
    ):
        if isinstance(vid_weight, (list, tuple)):
            if len(vid_weight) != num_pairs:
                raise ValueError(
                    f"`vid_weight` has {len(vid_weight)} values but there are "
                    f"{num_pairs} pairs: pass one float, or one per pair."
                )
            self.vid_weights = [
                non_negative(w, f"vid_weight[{i}]") for i, w in enumerate(vid_weight)
            ]
            self.vid_weight = list(vid_weight)
        else:
            self.vid_weights = [non_negative(vid_weight, "vid_weight")] * num_pairs
            self.vid_weight = vid_weight
        self.kd_weight = non_negative(kd_weight, "kd_weight")
        self.task_weight = non_negative(task_weight, "task_weight")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not (0 < temperature < float("inf"))
        ):
            raise ValueError(
                f"`temperature` must be a finite number > 0. Received: temperature={temperature!r}"
            )
        if compiled and not num_pairs and self.kd_weight == 0:
            raise ValueError(
                "The distiller has no layer pairs (`pairs=[]`), so it distils only "
                "through the KD term: pass `kd_weight` > 0 to `compile()`. Received: "
                "kd_weight=0."
            )
        self.temperature = float(temperature)
        self.alpha_weight_decay = bool(alpha_weight_decay)
        self.jit_compile = jit_compile
        self.use_task_loss = loss is not None
        self.task_kind = task_kind(loss)
        self.kd_kind = kd_kind(self.task_kind, classes)
        self.compiled = compiled
        # KD is computed when its weight can be non-zero: compiled with
        # `kd_weight > 0`, or later set by a schedule or by hand (`enable_kd_for_fit`).
        self.computes_kd = self.kd_weight > 0
        if self.computes_kd:
            self.check_kd_possible(loss, self.kd_weight)

    @classmethod
    def uncompiled(cls, num_pairs, classes):
        """The settings before `compile()`: the defaults, no config."""
        return cls(num_pairs, classes, compiled=False)

    def check_kd_possible(self, loss, received):
        """KD needs an output distribution: refuse it for a regression loss."""
        if self.kd_kind is None:
            raise ValueError(
                f"KD distils the teacher's output distribution, but the loss "
                f"{getattr(loss, 'name', loss)!r} trains a regression: there is no "
                f"distribution to soften. Received: kd_weight={received}. Use kd_weight=0 "
                "(the VID pairs need no labels and work for regression), or pair the "
                "teacher's and the student's outputs as a VID pair to distil them."
            )

    def enable_kd_for_fit(self, callbacks, kd_weight, check_logits):
        """Compute KD from this `fit` on when its weight can be non-zero though
        `compile()` had `kd_weight=0`: a `WeightSchedule` among `callbacks`
        sets it (a curriculum that starts KD later), or `kd_weight` (its
        current value) was assigned by hand. Checked as `compile` checks it
        (`check_logits(received)`); returns whether the step must be traced
        again."""
        if self.computes_kd:
            return False
        scheduled = any(isinstance(c, WeightSchedule) and c.schedules_kd for c in callbacks or ())
        if not (scheduled or kd_weight > 0):
            return False
        received = "scheduled" if scheduled else "assigned"
        if self.kd_kind is None:
            raise ValueError(
                f"`kd_weight` is {received} after `compile()`, but the compiled loss trains "
                "a regression, which has no output distribution to distil. Schedule "
                "`vid_weight` only."
            )
        check_logits(received)
        self.computes_kd = True
        return True

    def config(self):
        """The arguments `compile()` received beyond `keras.Model.compile`'s."""
        if not self.compiled:
            return {}
        return {
            "vid_weight": self.vid_weight,
            "kd_weight": self.kd_weight,
            "temperature": self.temperature,
            "alpha_weight_decay": self.alpha_weight_decay,
            "task_weight": self.task_weight,
        }


def check_kd_logits(teacher, student, teacher_shape, student_shape, received):
    """KD compares the two logits element by element: their shapes must agree."""
    if teacher_shape[-1] != student_shape[-1]:
        raise ValueError(
            f"KD compares the teacher's and the student's logits, but the teacher "
            f"'{teacher.name}' has {teacher_shape[-1]} output classes and the student "
            f"'{student.name}' {student_shape[-1]}. Received: kd_weight={received}. "
            "Use kd_weight=0 (VID pairs need no equal class counts) or give both "
            "models the same classes."
        )
    if len(teacher_shape) != len(student_shape) or not all(
        a is None or b is None or a == b for a, b in zip(teacher_shape[1:], student_shape[1:])
    ):
        raise ValueError(
            "KD compares the teacher's and the student's logits element by element, so "
            f"their shapes must agree. Received: teacher '{teacher.name}' logits "
            f"shape {teacher_shape}, student '{student.name}' logits shape {student_shape}, "
            f"kd_weight={received}."
        )


def exclude_from_weight_decay(optimizer, variables):
    """Keep `variables` (the heads' α: decay on α biases σ) out of the
    optimizer's weight decay; warn when the optimizer is already built."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(optimizer, "weight_decay", None) in (None, 0) or not variables:
        return
    if getattr(optimizer, "built", False):
        excluded, _ = compat.weight_decay_exclusions(optimizer)
        if not all(compat.optimizer_variable_key(optimizer, v) in excluded for v in variables):
            warnings.warn(
                "The optimizer was built before `compile`, so the heads' α could not "
                "be excluded from its weight decay. Pass a fresh optimizer.",
                stacklevel=4,
            )
        return
    compat.add_weight_decay_exclusions(optimizer, variables)
