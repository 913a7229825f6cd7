"""`VIDDistiller` steps on PyTorch: the teacher runs under `torch.no_grad()`.

A step whose flags are raised (`keras_vid.StepGuard`) applies no update and
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

from keras_vid import compat
from keras_vid.finiteness import float_tensors

_DDP_WRAPPERS = weakref.WeakKeyDictionary()


class _StudentStep(torch.nn.Module):
    """The differentiated part of a training step, as a module for DDP."""

    def __init__(self, distiller):
        super().__init__()
        self.distiller = distiller

    def forward(self, x, y, sample_weight, teacher_outputs):
        return self.distiller._forward_loss(x, y, sample_weight, teacher_outputs, training=True)


def _distributed():
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def process_mean(value):
    """The mean of `value` over the processes of a `torch.distributed` group
    (the teacher statistics each process measured on its slice), or `value`
    outside one."""
    if not _distributed():
        return value
    total = ops.convert_to_tensor(value).clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total / torch.distributed.get_world_size()


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


def finite_groups(groups):
    """`keras_vid.finiteness.finite_groups` in a few fused calls: the max-norm
    of every tensor at once, which is NaN or Inf exactly when the tensor holds
    a NaN or an Inf. In eager mode this is cheaper than two ops per tensor."""
    tensors, sizes = [], []
    for group in groups:
        values = [ops.convert_to_tensor(v).detach() for v in float_tensors(group)]
        tensors += values
        sizes.append(len(values))
    if not tensors:
        return torch.ones(len(groups), dtype=torch.bool)
    finite = torch.isfinite(compat.torch_max_norms(tensors))
    checks, start = [], 0
    for size in sizes:
        checks.append(finite[start : start + size].all())
        start += size
    return torch.stack(checks)


def _sum_over_processes(flags):
    total = flags.to(torch.int32).clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
    return total


def train_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    guard, optimizer = distiller.step_guard, distiller.optimizer
    with torch.no_grad():
        teacher_outputs = distiller._teacher_features(x)
        saved = guard.snapshot()
    distiller.zero_grad()
    ddp = _ddp_step(distiller)
    if ddp is None:
        loss, student_outputs, labels_ok = distiller._forward_loss(
            x, y, sample_weight, teacher_outputs, training=True
        )
    else:
        loss, student_outputs, labels_ok = ddp(x, y, sample_weight, teacher_outputs)
    optimizer.scale_loss(loss).backward()
    variables = distiller.trainable_variables[:]
    gradients = [v.value.grad for v in variables]
    with torch.no_grad():
        flags, ok = guard.check(x, teacher_outputs, labels_ok, loss, gradients, optimizer)
        if _distributed():
            flags, ok = guard.agree(flags, _sum_over_processes)
        if bool(ok):
            optimizer.apply(gradients, variables)
        else:
            guard.restore(saved)
        guard.record(flags, ok, optimizer.iterations)
    return distiller._log_step(x, y, sample_weight, student_outputs, loss)


def test_step(distiller, data):
    x, y, sample_weight = unpack_x_y_sample_weight(data)
    with torch.no_grad():
        teacher_outputs = distiller._teacher_features(x)
        loss, student_outputs, _ = distiller._forward_loss(
            x, y, sample_weight, teacher_outputs, training=False
        )
    return distiller._log_step(x, y, sample_weight, student_outputs, loss)
