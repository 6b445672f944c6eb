"""The students of ``brain92.py``: the small CNN and the stronger candidates, all with batch augmentation inside.

``small``
    The original student: ``build_model`` cnn (3 conv blocks 16-32-64, a
    128-unit ``hidden1``, 6-way readout), no normalisation layers.
``bn`` / ``bn+flags``
    The stronger candidates: the same three conv blocks, each with batch
    normalisation, then global average pooling to 2x2 (fewer weights in the
    first fully connected layer: 256 x 128 instead of 1024 x 128), the same
    128-unit ``hidden1`` and readout. ``bn+flags`` adds a second head on
    ``hidden1``, ``flags``: the 9 semantic category flags that ship with the
    images (animate, inanimate, human, non-human, body, face, natural object,
    artificial object, monkey/ape) as extra training labels (``FlagLoss``,
    binary cross-entropy). The random flags (rand24, rand48, other48) are left
    out: they are arbitrary groupings, not properties of the objects.
``wide+flags``
    ``bn+flags`` with twice the channels (32-64-128).
``gabor+flags``
    ``wide+flags`` whose first convolution is a fixed V1-like stage
    (``GaborFrontEnd``, after VOneNet, Dapello et al. 2020): quadrature pairs of
    Gabor filters at 8 orientations and periods of 1/10 and 1/5 of the image
    width on the luminance, as complex cells (energy) and rectified simple
    cells, plus the colour channels, mixed by a learned 1x1 convolution.

Every student starts with ``augment`` (``BatchAugment``): in training mode a
random zoom-crop (75-100%), horizontal flip and colour jitter of each image of
the batch in one vectorised call, then the fixed input scaling; in eval mode
only the scaling. Layer names (``pool1`` ... ``hidden1``, ``out``) are the
same in every student, so the same layers are pulled and evaluated.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdl_neuro.model.networks import build_model
from rdl_neuro.train.losses import StepOutputs, TransferLoss

FLAGS = ["animate", "inanim", "human", "nonhumani", "body", "face", "natObj", "artiObj", "monkeyape"]
STUDENTS = ("small", "bn", "bn+flags", "wide+flags", "gabor+flags")
LAYERS = ["pool1", "pool2", "pool3", "hidden1", "out"]


class BatchAugment(nn.Module):
    """Random zoom-crop, flip and colour jitter of every image of a batch ``(b, 3, S, S)`` (training mode only),
    then the fixed input scaling ``(x - 0.5) / 0.25`` (no statistics of any image set)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            x = self.jitter(x)
        return (x - 0.5) / 0.25

    @staticmethod
    def jitter(x: Tensor) -> Tensor:
        b = x.shape[0]
        u = torch.rand(b, 7, dtype=x.dtype)
        scale = 0.75 + 0.25 * u[:, 0]  # 75-100% of the image, anywhere inside it
        tx, ty = (2 * u[:, 1] - 1) * (1 - scale), (2 * u[:, 2] - 1) * (1 - scale)
        flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0).to(x.dtype)
        theta = torch.zeros(b, 2, 3, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = scale * flip, tx, scale, ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, align_corners=False, padding_mode="border")
        mean = out.mean((1, 2, 3), keepdim=True)
        contrast, brightness, saturation = (0.75 + 0.5 * u[:, 4], 0.8 + 0.4 * u[:, 5], 0.7 + 0.6 * u[:, 6])
        out = (out - mean) * contrast.view(b, 1, 1, 1) + mean * brightness.view(b, 1, 1, 1)
        gray = out.mean(1, keepdim=True)
        out = (out - gray) * saturation.view(b, 1, 1, 1) + gray
        return out.clamp(0.0, 1.0)


class BNStudent(nn.Module):
    """Conv blocks with batch norm, global average pooling to 2x2, ``hidden1``, readout ``out`` (and ``flags``).

    Input ``(b, 3, S, S)`` in [0, 1]; output logits ``(b, n_classes)``. With
    ``n_flags > 0`` the ``flags`` head runs on ``hidden1`` in every forward
    pass (its output is recorded by the trainer for ``FlagLoss``).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), hidden: int = 128, n_classes: int = 6,
                 n_flags: int = 0, gabor_periods: tuple[float, ...] | None = None):
        super().__init__()
        self.augment = BatchAugment()
        c = 3
        for k, ch in enumerate(channels, 1):
            if k == 1 and gabor_periods:  # fixed Gabor stage, then a learned 1x1 mixing of its channels
                front = GaborFrontEnd(gabor_periods)
                conv: nn.Module = nn.Sequential(front, nn.Conv2d(3 * front.q + 3, ch, 1))
            else:
                conv = nn.Conv2d(c, ch, 3, padding=1)
            self.add_module(f"conv{k}", conv)
            self.add_module(f"bn{k}", nn.BatchNorm2d(ch))
            self.add_module(f"act{k}", nn.ReLU())
            self.add_module(f"pool{k}", nn.MaxPool2d(2))
            c = ch
        self.n_blocks = len(channels)
        self.gap = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(4 * c, hidden)
        self.hidden1 = nn.ReLU()
        self.out = nn.Linear(hidden, n_classes)
        self.flags = nn.Linear(hidden, n_flags) if n_flags else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.augment(x)
        for k in range(1, self.n_blocks + 1):
            for part in ("conv", "bn", "act", "pool"):
                x = getattr(self, f"{part}{k}")(x)
        h = self.hidden1(self.fc1(self.gap(x).flatten(1)))
        if self.flags is not None:
            self.flags(h)
        return self.out(h)


def gabor_bank(periods: tuple[float, ...], n_orientations: int = 8) -> Tensor:
    """Quadrature pairs of Gabor filters ``(2 * len(periods) * n_orientations, 1, k, k)``: even then odd phase.

    One octave of bandwidth (envelope sigma = 0.56 x period); each filter has
    zero mean and unit norm, so responses do not depend on mean luminance.
    The kernel is odd-sized and covers +-2 sigma of the largest period.
    """
    k = int(2 * math.ceil(2 * 0.56 * max(periods)) + 1)
    r = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    even, odd = [], []
    for period in periods:
        sigma = 0.56 * period
        envelope = torch.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
        for o in range(n_orientations):
            theta = math.pi * o / n_orientations
            phase = 2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period
            even.append(envelope * torch.cos(phase))
            odd.append(envelope * torch.sin(phase))
    bank = torch.stack(even + odd)
    bank = bank - bank.mean((1, 2), keepdim=True)
    bank = bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1)
    return bank.unsqueeze(1).float()


class GaborFrontEnd(nn.Module):
    """A fixed V1-like first stage (after VOneNet, Dapello et al. 2020): Gabor simple and complex cells.

    Input ``(b, 3, S, S)`` (scaled RGB); output ``(b, 3 * q + 3, S, S)``: for
    each of the ``q`` Gabor filters on the luminance, a complex cell (the
    energy of the quadrature pair) and two simple cells (the rectified even
    response of either sign), plus the 3 colour channels, so colour is not lost.
    Nothing here is learned.
    """

    def __init__(self, periods: tuple[float, ...], n_orientations: int = 8):
        super().__init__()
        self.register_buffer("bank", gabor_bank(periods, n_orientations))
        self.q = self.bank.shape[0] // 2

    def forward(self, x: Tensor) -> Tensor:
        lum = x.mean(1, keepdim=True)
        resp = F.conv2d(lum, self.bank, padding=self.bank.shape[-1] // 2)
        even, odd = resp[:, : self.q], resp[:, self.q:]
        complex_cells = torch.sqrt(even ** 2 + odd ** 2 + 1e-6)
        return torch.cat([complex_cells, F.relu(even), F.relu(-even), x], 1)


def build_student(name: str, image_size: int, n_classes: int = 6) -> nn.Module:
    """One of ``STUDENTS``, for ``(b, 3, image_size, image_size)`` inputs, its weights in channels-last memory
    format: on the CPU, max pooling and the convolutions then take ~30% less time per student (the same maths,
    rounded differently)."""
    return _student(name, image_size, n_classes).to(memory_format=torch.channels_last)


def _student(name: str, image_size: int, n_classes: int) -> nn.Module:
    if name == "small":
        cnn = build_model({"type": "cnn", "input_shape": [3, image_size, image_size], "n_classes": n_classes,
                           "channels": [16, 32, 64], "hidden": [128]})
        return nn.Sequential(OrderedDict([("augment", BatchAugment()), *cnn.named_children()]))
    flags = len(FLAGS) if has_flags(name) else 0
    if name in ("bn", "bn+flags"):
        return BNStudent(n_classes=n_classes, n_flags=flags)
    if name == "wide+flags":
        return BNStudent(channels=(32, 64, 128), n_classes=n_classes, n_flags=flags)
    if name == "gabor+flags":  # periods of S/10 and S/5 pixels (3.2 and 6.4 at 32 px), at least 3 and 6
        return BNStudent(channels=(32, 64, 128), n_classes=n_classes, n_flags=flags,
                         gabor_periods=(max(3.0, image_size / 10), max(6.0, image_size / 5)))
    raise ValueError(f"unknown student {name!r}; students: {STUDENTS}")


def has_flags(name: str) -> bool:
    """Whether student ``name`` learns the category flags."""
    return name.endswith("+flags")


class FlagLoss(TransferLoss):
    """Binary cross-entropy of the ``flags`` head against each sample's flags, looked up by stimulus id.

    ``table (n_stimuli, n_flags)`` holds the 0/1 flags of stimulus ids ``0..n_stimuli-1``.
    """

    student_layers = ("flags",)

    def __init__(self, table: Tensor):
        super().__init__()
        self.register_buffer("table", table.float())

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        logits = step.student_features["flags"]
        target = self.table[step.stimulus_ids].to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss, {"flags": loss.detach()}
