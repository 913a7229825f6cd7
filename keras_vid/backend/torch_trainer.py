"""`VIDDistiller` steps on PyTorch: the teacher runs under `torch.no_grad()`.

A step whose flags are raised (`keras_vid.step_guard`) applies no update and
puts back the BatchNorm statistics its forward pass changed.

Data parallel: when `torch.distributed` is initialised with more than one
process, the student's forward pass and the losses run through a
`torch.nn.parallel.DistributedDataParallel` wrapper (made on the first
training step, one per distiller), so the backward pass averages the
gradients of the student and the heads over the processes. Each process
feeds its own slice of every global batch (a `DistributedSampler`); the
local loss is the mean over that slice, so the averaged gradient is the
gradient of the global-batch mean when the slices are equal. The processes
agree on the step guard: a flag raised on any process skips the update on
all of them.
"""

import weakref

import torch
from keras import ops
from keras.utils import unpack_x_y_sample_weight

from keras_vid import step_guard

_DDP_WRAPPERS = weakref.WeakKeyDictionary()


class _StudentStep(torch.nn.Module):
    """The differentiated part of a training step, as a module for DDP."""

    def __init__(self, distiller):
        super().__init__()
        self.distiller = distiller

    def forward(self, x, y, sample_weight, teacher_outputs):
        return _student_step(self.distiller, x, y, sample_weight, teacher_outputs)


def _student_step(distiller, x, y, sample_weight, teacher_outputs):
    student_outputs = distiller.student_extractor(x, training=True)
    loss, terms = distiller.distillation_losses(
        x, y, sample_weight, student_outputs, teacher_outputs, training=True
    )
    return loss, terms, student_outputs


def _distributed():
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _ddp_step(distiller):
    """The DDP-wrapped step of `distiller`, or `None` outside a process group."""
    if not _distributed():
        return None
    wrapper = _DDP_WRAPPERS.get(distiller)
    if wrapper is None:
        # Parameters that get no gradient in a step (a student layer after
        # the last pair when training without labels) must not stall DDP.
        wrapper = torch.nn.parallel.DistributedDataParallel(
            _StudentStep(distiller), find_unused_parameters=True
        )
        _DDP_WRAPPERS[distiller] = wrapper
    return wrapper


def _finite_groups(groups):
    """`keras_vid.step_guard.finite_groups` in a few fused calls: the max-norm
    of every tensor at once (`torch._foreach_norm`, as `clip_grad_norm_`
    uses), which is NaN or Inf exactly when the tensor holds a NaN or an
    Inf. In eager mode this is cheaper than two ops per tensor."""
    tensors, sizes = [], []
    for group in groups:
        values = [ops.convert_to_tensor(v).detach() for v in step_guard.float_tensors(group)]
        tensors += values
        sizes.append(len(values))
    if not tensors:
        return torch.ones(len(groups), dtype=torch.bool)
    finite = torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf"))))
    checks, start = [], 0
    for size in sizes:
        checks.append(finite[start : start + size].all())
        start += size
    return torch.stack(checks)


def _agree(flags, ok):
    """Every process's flags raised on any process, and whether all are clear."""
    if not _distributed():
        return flags, ok
    total = flags.to(torch.int32).clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    flags = (total > 0).to(torch.int32)
    return flags, torch.logical_not(torch.any(flags > 0))


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    with torch.no_grad():
        teacher_outputs = distiller.teacher_extractor(x, training=False)
    state_variables = distiller.step_state_variables
    saved_state = [v.value.detach().clone() for v in state_variables]
    distiller.zero_grad()
    ddp = _ddp_step(distiller)
    if ddp is None:
        loss, terms, student_outputs = _student_step(
            distiller, x, y, sample_weight, teacher_outputs
        )
    else:
        loss, terms, student_outputs = ddp(x, y, sample_weight, teacher_outputs)
    distiller.optimizer.scale_loss(loss).backward()
    variables = distiller.trainable_variables[:]
    gradients = [v.value.grad for v in variables]
    with torch.no_grad():
        flags, ok = distiller.step_flags(
            x, y, teacher_outputs, student_outputs, loss, gradients, check_finite=_finite_groups
        )
        flags, ok = _agree(flags, ok)
        if bool(ok):
            distiller.optimizer.apply(gradients, variables)
        else:
            for variable, value in zip(state_variables, saved_state):
                variable.assign(value)
        distiller.record_step(flags, ok)
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    with torch.no_grad():
        teacher_outputs = distiller.teacher_extractor(x, training=False)
        student_outputs = distiller.student_extractor(x, training=False)
        loss, terms = distiller.distillation_losses(
            x, y, sample_weight, student_outputs, teacher_outputs, training=False
        )
    return distiller.log_step(x, y, sample_weight, student_outputs, loss, terms)
