"""Hand-written PyTorch VID training loops, the comparison for the torch backend.

Two loops, both written from the formula of the paper (teacher under
`torch.no_grad()`, regressors and α in the optimizer, one student pass):

- `KerasModulesLoop`: the *same* Keras models (under the torch backend they
  are `torch.nn.Module`s) driven by a plain `torch.optim.SGD` loop. It
  isolates what keras_vid's trainer adds on top of the models' forward pass.
- `PureTorchLoop`: the same architectures rebuilt from `torch.nn` layers
  (NCHW, as the public reference implementations do). It includes the cost
  of Keras's layer machinery, so comparing it with `student.fit` shows what
  the Keras torch backend itself costs.

VID loss per pair k (as `keras_vid.losses.gaussian_nll`, reduction "mean"):

    σ_c = softplus(α_c) + ε
    nll_k = mean_{h,w,c} [ log σ_c + (t − μ_k(s))² / (2 σ_c²) ]
    loss = CE(logits, y) + Σ_k λ_k · mean_batch(nll_k)

with μ_k three 1×1 convolutions without bias and ReLU between them (hidden
width = teacher channels), and σ² initialised to 5.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INIT_VARIANCE = 5.0
EPSILON = 1e-5


def _alpha_init(channels):
    value = math.sqrt(INIT_VARIANCE) - EPSILON
    return torch.full((channels,), math.log(math.expm1(value)))


def vid_nll(teacher, mean, alpha, channel_axis):
    """Per-example Gaussian NLL, averaged over the non-batch elements."""
    std = F.softplus(alpha) + EPSILON
    shape = [1] * teacher.dim()
    shape[channel_axis] = -1
    std = std.reshape(shape)
    per_element = torch.log(std) + (teacher.float() - mean.float()) ** 2 / (2.0 * std**2)
    return per_element.flatten(1).mean(dim=1)


def pointwise_regressor(in_channels, out_channels, depth=3, channels_last=True):
    """μ(s): `depth` 1×1 convolutions without bias, ReLU between them.

    On channels-last maps a bias-free `Linear` over the last axis is exactly a
    1×1 convolution.
    """
    layers = []
    width = in_channels
    for i in range(depth):
        if channels_last:
            layers.append(nn.Linear(width, out_channels, bias=False))
        else:
            layers.append(nn.Conv2d(width, out_channels, 1, bias=False))
        if i < depth - 1:
            layers.append(nn.ReLU())
        width = out_channels
    return nn.Sequential(*layers)


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class KerasModulesLoop:
    """Hand-written loop over the Keras models' own forward passes."""

    def __init__(self, teacher, student, pairs, learning_rate=0.1, vid_weight=1.0, amp=False):
        import keras

        def extractor(model, names):
            outputs = {"logits": model.outputs[0]}
            outputs.update({n: model.get_layer(n).output for n in names})
            return keras.Model(model.inputs[0], outputs)

        self.pairs = pairs
        self.student_names = [s for s, _ in pairs]
        self.teacher_names = [t for _, t in pairs]
        self.student = extractor(student, self.student_names)
        self.teacher = extractor(teacher, self.teacher_names)
        device = _device()
        self.regressors = nn.ModuleList(
            pointwise_regressor(
                student.get_layer(s).output.shape[-1], teacher.get_layer(t).output.shape[-1]
            )
            for s, t in pairs
        ).to(device)
        self.alphas = nn.ParameterList(
            nn.Parameter(_alpha_init(teacher.get_layer(t).output.shape[-1]))
            for t in self.teacher_names
        ).to(device)
        params = [v.value for v in student.trainable_variables]
        params += list(self.regressors.parameters()) + list(self.alphas.parameters())
        self.optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=0.9)
        self.vid_weight = vid_weight
        self.amp = amp
        self.device = device

    def train_step(self, x, y):
        x = torch.as_tensor(x, device=self.device)
        y = torch.as_tensor(y, device=self.device).long()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            with torch.no_grad():
                t_out = self.teacher(x, training=False)
            s_out = self.student(x, training=True)
            loss = F.cross_entropy(s_out["logits"].float(), y)
            for (s, t), regressor, alpha in zip(self.pairs, self.regressors, self.alphas):
                nll = vid_nll(t_out[t], regressor(s_out[s]), alpha, channel_axis=-1)
                loss = loss + self.vid_weight * nll.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


# --------------------------------------------------------------- pure torch.nn


class _Block(nn.Module):
    """Pre-activation basic block, as `keras_vid.experiments.models.wide_resnet._block`."""

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-3, momentum=0.01)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.equal = in_channels == channels and stride == 1
        self.shortcut = (
            None if self.equal else nn.Conv2d(in_channels, channels, 1, stride, bias=False)
        )

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        shortcut = x if self.equal else self.shortcut(pre)
        y = self.conv1(pre)
        y = self.conv2(F.relu(self.bn2(y)))
        return shortcut + y


class TorchWideResNet(nn.Module):
    """WRN-depth-width in `torch.nn`; returns `(logits, [group1, group2, group3])`."""

    def __init__(self, depth, width, num_classes=10, in_channels=3):
        super().__init__()
        blocks = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        groups, channels_in = [], 16
        for channels, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            group = []
            for b in range(blocks):
                group.append(_Block(channels_in, channels, stride if b == 0 else 1))
                channels_in = channels
            groups.append(nn.Sequential(*group))
        self.groups = nn.ModuleList(groups)
        self.final_bn = nn.BatchNorm2d(channels_in, eps=1e-3, momentum=0.01)
        self.fc = nn.Linear(channels_in, num_classes)
        self.group_channels = [16 * width, 32 * width, 64 * width]

    def forward(self, x):
        x = self.stem(x)
        features = []
        for group in self.groups:
            x = group(x)
            features.append(x)
        x = F.relu(self.final_bn(x)).mean(dim=(2, 3))
        return self.fc(x), features


class TorchTinyCNN(nn.Module):
    """`bench_step.tiny_cnn` in `torch.nn` (smoke runs only)."""

    def __init__(self, width, num_classes=10, in_channels=3):
        super().__init__()
        self.group_channels = [4 * width, 8 * width, 16 * width]
        convs, channels_in = [], in_channels
        for channels, stride in zip(self.group_channels, (1, 2, 2)):
            convs.append(nn.Conv2d(channels_in, channels, 3, stride, 1))
            channels_in = channels
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(channels_in, num_classes)

    def forward(self, x):
        features = []
        for conv in self.convs:
            x = conv(x)
            features.append(x)
        return self.fc(x.mean(dim=(2, 3))), features


def build_torch_model(depth, width, num_classes):
    """`TorchWideResNet`, or `TorchTinyCNN` when `depth` is 0."""
    if depth == 0:
        return TorchTinyCNN(width, num_classes)
    return TorchWideResNet(depth, width, num_classes)


class PureTorchLoop:
    """Reference-style loop on `torch.nn` WRNs (NCHW); VID on the group ends."""

    def __init__(self, teacher_spec, student_spec, learning_rate=0.1, vid_weight=1.0, amp=False):
        device = _device()
        self.teacher = None
        if teacher_spec is not None:
            self.teacher = build_torch_model(*teacher_spec).to(device).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.student = build_torch_model(*student_spec).to(device).train()
        s_ch = self.student.group_channels
        t_ch = self.teacher.group_channels if self.teacher is not None else s_ch
        self.regressors = nn.ModuleList(
            pointwise_regressor(s, t, channels_last=False) for s, t in zip(s_ch, t_ch)
        ).to(device)
        self.alphas = nn.ParameterList(nn.Parameter(_alpha_init(t)) for t in t_ch).to(device)
        params = list(self.student.parameters()) + list(self.regressors.parameters())
        params += list(self.alphas.parameters())
        self.optimizer = torch.optim.SGD(params, lr=learning_rate, momentum=0.9)
        self.student_optimizer = torch.optim.SGD(
            self.student.parameters(), lr=learning_rate, momentum=0.9
        )
        self.vid_weight = vid_weight
        self.amp = amp
        self.device = device

    def prepare(self, x, y):
        """NHWC NumPy batch → NCHW tensors, as a reference DataLoader yields them."""
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
        return x.to(self.device), torch.from_numpy(y).long().to(self.device)

    def train_step(self, x, y):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            with torch.no_grad():
                _, t_features = self.teacher(x)
            logits, s_features = self.student(x)
            loss = F.cross_entropy(logits.float(), y)
            for s, t, regressor, alpha in zip(
                s_features, t_features, self.regressors, self.alphas
            ):
                loss = loss + self.vid_weight * vid_nll(t, regressor(s), alpha, 1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def student_step(self, x, y):
        """Student-only training step: the pure-torch counterpart of `student.fit`."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, _ = self.student(x)
            loss = F.cross_entropy(logits.float(), y)
        self.student_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.student_optimizer.step()
        return loss.item()
