"""Loss terms: ``RDLLoss`` (Representational Distance Learning) and the peers KD, RKD, SP and CKA, plus cross-entropy.

Every term is a ``TransferLoss``: a small ``nn.Module`` whose ``forward``
takes tensors, and whose ``from_step(step)`` takes the ``StepOutputs`` a
trainer collects for one batch and returns ``(scalar total, {log name: value})``.
The attributes ``student_layers`` / ``teacher_layers`` /
``needs_teacher_logits`` tell the trainer what to record.

Log names: ``ce``, ``kd``, ``rdl/<student layer>``, ``rkd/<student layer>``,
``sp/<student layer>``, ``cka/<student layer>``.

RDMs come from ``rdl_neuro.rdm.calc.compute_rdm`` and RDM correlations from
``rdl_neuro.rdm.compare.compare_rdms``. One exception, for speed: the default
RDL term (euclidean RDM, ``mse``) runs as one autograd node,
``_EuclideanRDMMSE``, whose forward builds the euclidean RDM from the same
helpers ``compute_rdm`` uses (``square_squared_distances``, ``safe_sqrt``) and
whose backward is written out; the tests check that it equals
``compute_rdm`` followed by ``_weighted_mse``, values, gradients and second
derivatives.

``gather=True`` (``RDLLoss``, ``RKDLoss``, ``SPLoss``, ``CKALoss``: every loss
whose value couples the samples of a batch) builds the RDM (or Gram matrix)
over the global batch under ``torch.distributed`` (see
``rdl_neuro.train.distributed``): the loss value equals a single process on
the concatenated batch on every rank, and the all-reduce *mean* of the ranks'
gradients (what DDP does) equals the single-process gradient. The Trainer
sets ``gather=True`` on every such loss when it runs under torchrun.
Cross-entropy and KD are per-sample means and need no gather.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rdl_neuro.rdm.calc import (NORM_FLOOR, check_features, check_finite_rows, check_method, compute_rdm, safe_sqrt,
                                square_squared_distances, to_condensed)
from rdl_neuro.rdm.compare import compare_rdms
from rdl_neuro.train.distributed import gather_no_grad, gather_with_grad
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

__all__ = [
    "StepOutputs",
    "check_labels",
    "IGNORE_LABEL",
    "TransferLoss",
    "CELoss",
    "RDLLoss",
    "KDLoss",
    "RKDLoss",
    "SPLoss",
    "CKALoss",
    "CRITERIA",
    "rdm_criterion",
    "check_layer_pairs",
]

#: how :class:`RDLLoss` compares student and teacher RDMs
CRITERIA = ("mse", "scaled_mse", "corr", "cosine")


@dataclass
class StepOutputs:
    """What the trainer hands every loss term for one batch.

    logits : ``(b, n_classes)`` student output
    labels : ``(b,)`` long
    stimulus_ids : ``(b,)`` long; ``UNCOVERED`` (-1) for samples with no stimulus id
    student_features : layer name -> ``(b, f)``, recorded by ``LayerRecorder``
    teacher_logits : ``(b, n_classes)`` from a ``NetworkTeacher``, if any
    teacher_features : teacher layer name -> ``(b, f)``, if any
    """

    logits: Tensor
    labels: Tensor
    stimulus_ids: Tensor
    student_features: dict[str, Tensor]
    teacher_logits: Tensor | None = None
    teacher_features: dict[str, Tensor] | None = None


def _lookup(features: Mapping[str, Tensor] | None, name: str, side: str) -> Tensor:
    """``features[name]`` or a KeyError that names the layer, the side and close matches."""
    if features is None:
        raise ValueError(f"{side} features are needed for layer {name!r} but none were given")
    if name not in features:
        close = difflib.get_close_matches(name, list(features), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"{side} layer {name!r} was not recorded (recorded: {sorted(features)}){hint}")
    return features[name]


def _flat(x: Tensor, name: str, side: str) -> Tensor:
    """Features flattened to ``(b, f)``, with type checks that name the layer."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{side} layer {name!r}: features must be a tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{side} layer {name!r}: features are a scalar, expected (b, f)")
    if not x.is_floating_point():
        raise TypeError(f"{side} layer {name!r}: features must be floating point, got {x.dtype}")
    return x if x.ndim == 2 else x.reshape(x.shape[0], -1)


def _check_finite(x: Tensor, name: str, side: str) -> None:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite.all(dim=1)).squeeze(1)[:5].tolist()
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise ValueError(f"{side} layer {name!r} has {kind} features in batch samples {rows}")


def _checked_features(x: Tensor, name: str, side: str = "student") -> Tensor:
    """Features flattened to ``(b, f)``; NaN/inf raise a ValueError naming the layer and samples."""
    x = _flat(x, name, side)
    _check_finite(x, name, side)
    return x


# Norm floor for correlation/cosine RDMs inside losses: a pattern with zero variance (say an
# image whose ReLU layer is all zeros) counts as uncorrelated with the others instead of
# stopping training with an error (see compute_rdm's ``eps``). Relative to the batch's largest
# norm: the library's one floor, ``rdl_neuro.rdm.calc.NORM_FLOOR``.
RDM_EPS = NORM_FLOOR


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny


def rdm_criterion(student: Tensor, teacher: Tensor, criterion: str, mask: Tensor | None = None) -> Tensor:
    """Discrepancy between condensed RDMs ``student (P,)`` and ``teacher (P,)`` over usable pairs ``mask (P,)``.

    ``mse``         mean squared difference (the paper's squared error)
    ``scaled_mse``  each RDM divided by its mean over the usable pairs first
    ``corr``        1 - Pearson r (``compare_rdms(..., "corr")``)
    ``cosine``      1 - cosine similarity (``compare_rdms(..., "cosine")``)
    """
    check_method(criterion, CRITERIA, "RDL criterion")
    if criterion in ("corr", "cosine"):
        if mask is not None and not bool(mask.all()):
            nan = torch.full_like(student, float("nan"))
            # NaN marks unused pairs for compare_rdms; torch.where sends no gradient to them
            student = torch.where(mask, student, nan)
            teacher = torch.where(mask, teacher, nan.detach())
        return 1 - compare_rdms(student.unsqueeze(0), teacher.unsqueeze(0), criterion)[0, 0]
    if mask is not None and not bool(mask.all()):
        student, teacher = student[mask], teacher[mask]
    weights = student.new_full(student.shape, 1.0 / student.shape[-1])  # the mean over the usable pairs
    return _weighted_mse(student, teacher, weights, criterion == "scaled_mse")


@dataclass
class _BatchTarget:
    """An RDMTeacher's target for one batch, restricted to the stimuli that have a usable pair.

    square : ``(n, n)`` target in the student's dtype (0 where unusable)
    mask : ``(n, n)`` bool usable pairs
    weights : ``(n, n)`` mask / number of usable ordered pairs (so a weighted sum is the mean over pairs),
        or that number's reciprocal as a float when every off-diagonal pair is usable (an RDM's
        diagonal is 0, so it needs no weight of 0)
    rows : indices of the kept batch rows, or None when every row is kept
    n_pairs : usable unordered pairs
    """

    square: Tensor
    mask: Tensor
    weights: Tensor
    rows: Tensor | None
    n_pairs: int

    @classmethod
    def from_teacher(cls, teacher: RDMTeacher, stimulus_ids: Tensor, dtype: torch.dtype) -> _BatchTarget:
        target, mask = teacher.batch_target(stimulus_ids, dtype=dtype)
        n_ordered = int(mask.sum())
        b = mask.shape[0]
        rows = None
        if 0 < n_ordered < b * (b - 1):  # else every pair is usable or none is: nothing to drop
            keep = mask.any(dim=1)
            if not bool(keep.all()):
                rows = torch.nonzero(keep).squeeze(1)
                target, mask = target[rows][:, rows], mask[rows][:, rows]
        if 0 < n_ordered == b * (b - 1):  # every off-diagonal pair: one weight for all (the common training case)
            weights: Tensor | float = 1.0 / n_ordered
        else:
            weights = mask.to(dtype).mul_(1.0 / max(n_ordered, 1))
        return cls(target, mask, weights, rows, n_ordered // 2)

    def to(self, dtype: torch.dtype) -> _BatchTarget:
        weights = self.weights.to(dtype) if isinstance(self.weights, Tensor) else self.weights
        return _BatchTarget(self.square.to(dtype), self.mask, weights, self.rows, self.n_pairs)


class _TargetCache:
    """The ``_BatchTarget`` of each RDMTeacher for one ``RDLLoss`` call, shared by the layers paired with it.

    ``batch_target`` runs (and, for a teacher with several RDMs, draws) once per teacher per call; a
    layer with another dtype gets a converted copy of the same target, not a new draw.
    """

    def __init__(self, stimulus_ids: Tensor | None) -> None:
        self.stimulus_ids = stimulus_ids
        self._targets: dict[tuple[int, torch.dtype], _BatchTarget] = {}

    def get(self, teacher: RDMTeacher, x: Tensor) -> _BatchTarget:
        """The target of ``teacher`` for student features ``x (b, f)`` (their dtype and device)."""
        key = (id(teacher), x.dtype)
        if key not in self._targets:
            same = [v for k, v in self._targets.items() if k[0] == id(teacher)]
            assert self.stimulus_ids is not None  # RDLLoss checks them when there is an RDMTeacher
            self._targets[key] = (same[0].to(x.dtype) if same
                                  else _BatchTarget.from_teacher(teacher, self.stimulus_ids.to(x.device), x.dtype))
        return self._targets[key]


class _EuclideanRDMMSE(torch.autograd.Function):
    """``sum W (D - T)^2``, ``D`` the euclidean RDM ``(n, n)`` of ``x (n, p)``, in one autograd node.

    The loss the composed ops give (``compute_rdm(x, "euclidean", square=True)`` then
    ``_weighted_mse``), with the backward written out: a training step's RDL term is a few
    small elementwise ops around two matrix products, and every op and autograd node costs
    dispatch time comparable to the products, so the ops are as few as the formula allows.
    With ``B = dL/d(D^2) = W (D - T) / D`` (0 where ``D = 0``, the subgradient ``safe_sqrt``
    gives) and ``S = B + B^T``, ``D_ij^2 = g_ii + g_jj - 2 g_ij`` and ``G = X X^T`` give
    ``dL/dX = 2 (diag(S 1) - S) X``: one product with ``M = diag(S 1) - S``.

    ``weights`` is an ``(n, n)`` tensor, or a float when every off-diagonal pair weighs the
    same (``D`` and ``T`` are 0 on the diagonal, so the diagonal's weight does not matter).
    """

    @staticmethod
    def _distances(x: Tensor, differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """Euclidean RDM ``(n, n)`` of ``x`` and the squared norms ``(n,)``; ``differentiable``
        keeps the derivatives finite where ``D = 0`` (``safe_sqrt``), for a second derivative."""
        d2, sq_norms = square_squared_distances(x @ x.transpose(-1, -2))
        if differentiable:
            return safe_sqrt(d2), sq_norms
        return d2.clamp_min_(0).sqrt_(), sq_norms  # rounding can make coinciding rows slightly negative

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, weights: Tensor | float) -> Tensor:  # type: ignore[override]
        dist, sq_norms = _EuclideanRDMMSE._distances(x)
        diff = dist - target
        weighted_diff = diff * weights
        loss = torch.dot(weighted_diff.view(-1), diff.view(-1))
        # NaN/inf features or overflowing norms make the loss non-finite: only then name the rows
        if not math.isfinite(loss.item()):
            check_finite_rows(x, sq_norms)
        matrix = weights if isinstance(weights, Tensor) else None
        ctx.weight = weights if matrix is None else None  # a float weight is kept as it is
        ctx.save_for_backward(x, target, matrix, dist, weighted_diff)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        x, target, matrix, dist, weighted_diff = ctx.saved_tensors
        # dL/dD = 2 W (D - T) and dD/d(D^2) = 1 / (2 D); 0 where D = 0
        if torch.is_grad_enabled():  # create_graph=True: the same formula, differentiable in x
            positive = dist > 0
            dist = _EuclideanRDMMSE._distances(x, differentiable=True)[0]
            weighted_diff = (ctx.weight if matrix is None else matrix) * (dist - target)
            # divided by 1 where D = 0, so that no inf enters a second derivative
            b = torch.where(positive, weighted_diff / torch.where(positive, dist, 1.0), 0.0) * (2 * grad)
            s = b + b.transpose(-1, -2)
            return torch.addmm(s.sum(1, keepdim=True) * x, s, x, alpha=-1), None, None
        # W, D and T are symmetric, so S = 2 B. W (D - T) / D is inf or NaN where D = 0 (the pair
        # coincides, and on the diagonal), where the subgradient is 0
        m = torch.div(weighted_diff, dist).nan_to_num_(0.0, 0.0, 0.0).mul_(grad * -4)  # -S, 0 on the diagonal
        m.diagonal().sub_(m.sum(1))  # M = diag(S 1) - S
        return m @ x, None, None


def _euclidean_rdm_mse(x: Tensor, target: Tensor, weights: Tensor | float) -> Tensor:
    """``_weighted_mse(compute_rdm(x, "euclidean", square=True), target, weights, False)`` for
    ``x (n, p)``, ``target (n, n)`` and ``weights`` ``(n, n)`` (symmetric) or a float (every
    off-diagonal pair alike), in one autograd node."""
    check_features(x)
    return _EuclideanRDMMSE.apply(x, target, weights)


def _weighted_mse(student: Tensor, teacher: Tensor, weights: Tensor | float, scaled: bool) -> Tensor:
    """``sum w (S - T)^2`` over RDMs (square ``(n, n)`` or condensed ``(P,)``) with weights summing to 1
    over the usable pairs (a float: the same weight for every pair, which for square RDMs needs their
    diagonals to be 0): the one home of the ``mse`` and ``scaled_mse`` criteria. With ``scaled`` each
    RDM is first divided by its weighted mean (clamped, so that a collapsed all-zero RDM stays 0
    instead of 0/0)."""
    if scaled:
        student = student / (student * weights).sum().clamp_min(_tiny(student))
        teacher = teacher / (teacher * weights).sum().clamp_min(_tiny(teacher))
    return ((student - teacher).pow(2) * weights).sum()


class TransferLoss(nn.Module):
    """Base of every loss term. Subclasses set the layer attributes and implement ``from_step``.

    A term whose value couples the samples of a batch (an RDM, a Gram matrix, a batch mean)
    has a boolean attribute ``gather``: the Trainer sets it to True under torchrun so that the
    term spans the global batch (see the module docstring). Per-sample terms have none.
    """

    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()
    needs_teacher_logits: bool = False

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar loss and detached per-term logs for one batch."""
        raise NotImplementedError


#: cross-entropy's ``ignore_index``: the label of an unlabelled sample
IGNORE_LABEL = -100


def check_labels(logits: Tensor, labels: Tensor) -> None:
    """Raise a ValueError naming a label outside ``0..n_classes-1`` (``IGNORE_LABEL`` is allowed).

    ``logits (b, n_classes)``, ``labels (b,)``. Cross-entropy would otherwise
    fail with a bare index error (or a device-side assert on CUDA).
    """
    n_classes = logits.shape[-1]
    bad = (labels >= n_classes) | ((labels < 0) & (labels != IGNORE_LABEL))
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise ValueError(f"label {int(labels[rows[0]])} (samples {rows} of the batch) is outside the model's "
                         f"{n_classes} classes 0..{n_classes - 1} (use {IGNORE_LABEL} for unlabelled samples)")


class CELoss(TransferLoss):
    """Cross-entropy of the student logits (optionally label-smoothed)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``logits (b, n_classes)``, ``labels (b,)`` -> scalar; labels outside the classes raise (``check_labels``)."""
        check_labels(logits, labels)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self(step.logits, step.labels)
        return loss, {"ce": loss.detach()}


def check_layer_pairs(
    pairs: Mapping[str, Union[str, RDMTeacher]], weights: float | Mapping[str, float] | None = None
) -> tuple[dict[str, Union[str, RDMTeacher]], dict[str, float]]:
    """Checked ``{student layer: teacher}`` pairs and per-layer weights of a loss that pairs layers with teachers.

    A teacher is a ``NetworkTeacher``'s layer name (str) or an ``RDMTeacher``;
    ``weights`` is one non-negative float for every pair, a mapping student
    layer -> float (missing layers get 1), or None (1 for every pair).
    Used by ``RDLLoss`` and the alignment losses of ``rdl_neuro.train.alignment``.
    """
    if not isinstance(pairs, Mapping) or not pairs:
        raise ValueError("pairs must be a non-empty mapping of student layer -> teacher layer or RDMTeacher")
    for student, teacher in pairs.items():
        if not isinstance(student, str):
            raise TypeError(f"student layer names must be strings, got {student!r}")
        if isinstance(teacher, NetworkTeacher):
            raise TypeError(
                f"pair {student!r}: give the NetworkTeacher's layer name (one of {list(teacher.layers)}), "
                "not the teacher object; the trainer passes its features as teacher_features"
            )
        if not isinstance(teacher, (str, RDMTeacher)):
            raise TypeError(f"pair {student!r}: teacher must be a layer name or an RDMTeacher, got {type(teacher).__name__}")
    pairs_out: dict[str, Union[str, RDMTeacher]] = dict(pairs)
    if weights is None:
        weights = 1.0
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(pairs_out)
        if unknown:
            raise KeyError(f"weights for layers that are not paired: {sorted(unknown)} (pairs: {list(pairs_out)})")
        weights_out = {s: float(weights.get(s, 1.0)) for s in pairs_out}
    else:
        weights_out = {s: float(weights) for s in pairs_out}
    negative = [s for s, w in weights_out.items() if w < 0]
    if negative:
        raise ValueError(f"negative weights for {negative}")
    return pairs_out, weights_out


class RDLLoss(TransferLoss):
    """Representational Distance Learning (McClure & Kriegeskorte 2016).

    ``L = sum_m w_m * D(RDM(student layer m), teacher RDM m)`` over the usable
    stimulus pairs of the batch.

    Parameters
    ----------
    pairs : mapping student layer name -> teacher
        A teacher is a teacher layer name (str) of a ``NetworkTeacher``, whose
        features are computed on the same batch (all pairs of samples are
        usable), or an ``RDMTeacher`` (pairs usable per ``batch_target``).
    weights : float or mapping student layer -> float, optional
        ``lambda_m``; default 1 for every pair.
    method : str
        RDM method of the student (and network-teacher) RDMs, see ``rdl_neuro.rdm``.
        For an ``RDMTeacher`` choose the method its RDM was computed with (or
        use ``scaled_mse``/``corr`` when units differ).
    criterion : {"mse", "scaled_mse", "corr", "cosine"}
        See ``rdm_criterion``.
    gather : bool
        Span the global batch under ``torch.distributed``.

    The default ``euclidean`` / ``mse`` term runs as one autograd node with its
    gradient written out (``_EuclideanRDMMSE``, which stays twice differentiable).

    Batches with too few usable pairs (fewer than 2 usable stimuli, i.e. no
    pair; ``corr``/``cosine`` also need 2 pairs) contribute an exact 0 that
    keeps the graph connected; they are counted in ``skipped_batches`` (forward
    calls with at least one skipped term) and ``skipped_terms`` (per layer).
    ``last_usable_pairs`` holds the number of usable pairs of each term of the
    last call.

    Examples
    --------
    Student features whose Euclidean RDM equals the teacher's cost nothing; doubling
    them doubles every distance:

    >>> import numpy as np, torch
    >>> from rdl_neuro.train import RDLLoss, RDMTeacher
    >>> teacher = RDMTeacher.from_array(np.array([5., 10., 5.]), ids=[0, 1, 2], method="euclidean")
    >>> loss = RDLLoss({"hidden1": teacher}, method="euclidean", criterion="mse")
    >>> x = torch.tensor([[0., 0.], [3., 4.], [6., 8.]], requires_grad=True)
    >>> total, terms = loss({"hidden1": x}, torch.tensor([0, 1, 2]))
    >>> total.item(), sorted(terms)
    (0.0, ['rdl/hidden1'])
    >>> total, _ = loss({"hidden1": 2 * x}, torch.tensor([0, 1, 2]))
    >>> round(total.item(), 4)                     # mean of (10-5)^2, (20-10)^2, (10-5)^2
    50.0
    """

    def __init__(
        self,
        pairs: Mapping[str, Union[str, RDMTeacher]],
        weights: float | Mapping[str, float] | None = None,
        method: str = "euclidean",
        criterion: str = "mse",
        gather: bool = False,
    ):
        super().__init__()
        self.pairs, self.weights = check_layer_pairs(pairs, weights)
        self.method = check_method(method)
        self.criterion = check_method(criterion, CRITERIA, "RDL criterion")
        self.gather = gather
        self.student_layers = tuple(self.pairs)
        self.teacher_layers = tuple(dict.fromkeys(t for t in self.pairs.values() if isinstance(t, str)))
        self.needs_teacher_logits = False
        self._min_pairs = 2 if criterion in ("corr", "cosine") else 1
        # the default term has a hand-written one-node version (``_EuclideanRDMMSE``)
        self._fused_term = self.method == "euclidean" and self.criterion == "mse"
        self.skipped_batches = 0
        self.skipped_terms = {s: 0 for s in self.pairs}
        self.last_usable_pairs: dict[str, int] = {}

    @property
    def rdm_teachers(self) -> list[RDMTeacher]:
        """The distinct ``RDMTeacher`` objects among the pairs."""
        seen: dict[int, RDMTeacher] = {}
        for t in self.pairs.values():
            if isinstance(t, RDMTeacher):
                seen.setdefault(id(t), t)
        return list(seen.values())

    def forward(
        self,
        student_features: Mapping[str, Tensor],
        stimulus_ids: Tensor | None = None,
        teacher_features: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted RDL loss of one batch.

        Parameters
        ----------
        student_features : layer -> Tensor ``(b, f)`` (other shapes are flattened per sample)
        stimulus_ids : Tensor ``(b,)`` long, needed when any teacher is an ``RDMTeacher``
        teacher_features : teacher layer -> Tensor ``(b, g)``, needed for network-teacher pairs

        Returns
        -------
        total : scalar Tensor
        terms : ``{"rdl/<student layer>": detached scalar}`` (unweighted)
        """
        feats, tfeats, stimulus_ids = self._batch_inputs(student_features, stimulus_ids, teacher_features)
        targets = _TargetCache(stimulus_ids)
        total: Tensor | None = None
        terms: dict[str, Tensor] = {}
        skipped = False
        for s, teacher in self.pairs.items():
            x = feats[s]
            if isinstance(teacher, RDMTeacher):
                term, n_pairs = self._fixed_term(x, targets.get(teacher, x), s)
            else:
                term, n_pairs = self._network_term(x, tfeats[teacher], s, teacher)
            self.last_usable_pairs[s] = n_pairs
            if term is None:
                skipped = True
                self.skipped_terms[s] += 1
                _check_finite(x, s, "student")  # a skipped term must not hide NaN features
                term = x.sum() * 0.0  # exact 0 that keeps every parameter in the graph (DDP)
            terms[f"rdl/{s}"] = term.detach()
            weighted = term if self.weights[s] == 1.0 else self.weights[s] * term
            total = weighted if total is None else total + weighted
        self.skipped_batches += int(skipped)
        assert total is not None
        return total, terms

    def _batch_inputs(
        self,
        student_features: Mapping[str, Tensor],
        stimulus_ids: Tensor | None,
        teacher_features: Mapping[str, Tensor] | None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None]:
        """The paired layers' features flattened to ``(b, f)``, checked for one batch size, and the
        stimulus ids ``(b,)``; all of them over the global batch with ``gather``."""
        # NaN/inf are caught by compute_rdm (re-raised with the layer name) or, for skipped terms, in
        # forward: checking here as well would scan every feature tensor twice per step
        feats = {s: _flat(_lookup(student_features, s, "student"), s, "student") for s in self.pairs}
        sizes = {s: x.shape[0] for s, x in feats.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"student layers disagree on the batch size: {sizes}")
        b = next(iter(sizes.values()))
        tfeats: dict[str, Tensor] = {}
        for t in self.teacher_layers:
            tf = _flat(_lookup(teacher_features, t, "teacher"), t, "teacher").detach()
            if tf.shape[0] != b:
                raise ValueError(f"teacher layer {t!r} has {tf.shape[0]} samples, the student batch {b}")
            tfeats[t] = tf
        if self.rdm_teachers:
            if stimulus_ids is None:
                raise ValueError("stimulus_ids are needed: some layers are paired with an RDMTeacher")
            stimulus_ids = torch.as_tensor(stimulus_ids)
            if stimulus_ids.shape != (b,):
                raise ValueError(f"stimulus_ids must have shape ({b},) like the features, got {tuple(stimulus_ids.shape)}")
        if self.gather:
            feats = {s: gather_with_grad(x) for s, x in feats.items()}
            tfeats = {t: gather_no_grad(x) for t, x in tfeats.items()}
            if stimulus_ids is not None and self.rdm_teachers:
                stimulus_ids = gather_no_grad(stimulus_ids.to(next(iter(feats.values())).device))
        return feats, tfeats, stimulus_ids

    @staticmethod
    def _naming_layer(side: str, name: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()``, with the layer named in its ValueErrors (bad features)."""
        try:
            return compute()
        except ValueError as err:
            raise ValueError(f"{side} layer {name!r}: {err}") from None

    def _rdm(self, x: Tensor, name: str, side: str, square: bool) -> Tensor:
        return self._naming_layer(side, name, lambda: compute_rdm(x, self.method, square=square, eps=RDM_EPS))

    def _square_mse_term(self, x: Tensor, target: Tensor, weights: Tensor | float, name: str) -> Tensor:
        """``mse`` / ``scaled_mse`` of the student's square RDM of ``x (n, f)`` against ``target (n, n)``
        with pair ``weights (n, n)`` (or one float for every off-diagonal pair): the square form needs no
        triangle gathers/scatters in forward and backward, and the default term runs fused
        (``_EuclideanRDMMSE``)."""
        if self._fused_term:
            return self._naming_layer("student", name, lambda: _euclidean_rdm_mse(x, target, weights))
        student = self._rdm(x, name, "student", square=True)
        return _weighted_mse(student, target, weights, self.criterion == "scaled_mse")

    def _fixed_term(self, x: Tensor, target: _BatchTarget, name: str) -> tuple[Tensor | None, int]:
        """Term against an RDMTeacher's batch target; only stimuli with a usable pair enter the RDM."""
        if target.n_pairs < self._min_pairs:
            return None, target.n_pairs
        if target.rows is not None:
            x = x[target.rows]
        if self.criterion in ("mse", "scaled_mse"):
            return self._square_mse_term(x, target.square, target.weights, name), target.n_pairs
        s_vec = self._rdm(x, name, "student", square=False)
        return rdm_criterion(s_vec, to_condensed(target.square), self.criterion, to_condensed(target.mask)), target.n_pairs

    def _network_term(self, x: Tensor, t: Tensor, name: str, teacher_layer: str) -> tuple[Tensor | None, int]:
        """Term against a network teacher's features ``t (b, g)`` of the same batch: every pair is usable."""
        b = x.shape[0]
        n_pairs = b * (b - 1) // 2
        if n_pairs < self._min_pairs:
            return None, n_pairs
        t = t.to(x.dtype)
        if self.criterion in ("mse", "scaled_mse"):
            teacher = self._rdm(t, teacher_layer, "teacher", square=True)
            # diagonal entries are 0 in both RDMs, so a plain mean over b^2 rescaled to the b(b-1) off-diagonal ones
            return self._square_mse_term(x, teacher, 1.0 / (b * (b - 1)), name), n_pairs
        s_vec = self._rdm(x, name, "student", square=False)
        t_vec = self._rdm(t, teacher_layer, "teacher", square=False)
        return rdm_criterion(s_vec, t_vec, self.criterion), n_pairs

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        return self(step.student_features, step.stimulus_ids, step.teacher_features)

    def extra_repr(self) -> str:
        pairs = {s: (t if isinstance(t, str) else repr(t)) for s, t in self.pairs.items()}
        return f"pairs={pairs}, weights={self.weights}, method={self.method!r}, criterion={self.criterion!r}, gather={self.gather}"


class KDLoss(TransferLoss):
    """Knowledge distillation (Hinton et al. 2015): ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""

    needs_teacher_logits = True

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """``student_logits (b, c)``, ``teacher_logits (b, c)`` -> scalar."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in shape"
            )
        T = self.temperature
        log_p_s = F.log_softmax(student_logits / T, dim=-1)
        log_p_t = F.log_softmax(teacher_logits.to(student_logits.dtype) / T, dim=-1)
        loss = T * T * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        if not bool(torch.isfinite(loss)):
            # name the side and the samples, as the feature losses do (one check of the scalar per step)
            for side, logits in (("student", student_logits), ("teacher", teacher_logits)):
                bad = ~torch.isfinite(logits).all(dim=-1)
                if bool(bad.any()):
                    raise ValueError(f"KDLoss: the {side} logits have NaN or infinite values in batch samples "
                                     f"{torch.nonzero(bad).flatten()[:5].tolist()}")
            raise ValueError(f"KDLoss is {loss.item()} (temperature {T}): the logits overflow after scaling")
        return loss

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        if step.teacher_logits is None:
            raise ValueError("KDLoss needs teacher_logits (a NetworkTeacher) in the step outputs")
        loss = self(step.logits, step.teacher_logits)
        return loss, {"kd": loss.detach()}


class _PairedFeatureLoss(TransferLoss):
    """A peer loss between one student layer and one teacher layer."""

    log_name = ""

    def __init__(self, student_layer: str, teacher_layer: str, gather: bool = False):
        super().__init__()
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.student_layers, self.teacher_layers = (student_layer,), (teacher_layer,)
        self.gather = gather

    def _prepare(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        s = _checked_features(s, self.student_layer, "student")
        t = _checked_features(t, self.teacher_layer, "teacher").to(s.dtype)
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"student batch {s.shape[0]} and teacher batch {t.shape[0]} differ")
        if self.gather:
            s, t = gather_with_grad(s), gather_no_grad(t)
        if s.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples in the batch, got {s.shape[0]}")
        return s, t

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        s = _lookup(step.student_features, self.student_layer, "student")
        t = _lookup(step.teacher_features, self.teacher_layer, "teacher")
        loss = self(s, t)
        return loss, {f"{self.log_name}/{self.student_layer}": loss.detach()}

    def extra_repr(self) -> str:
        return f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}"


class RKDLoss(_PairedFeatureLoss):
    """Relational KD (Park et al. 2019): distance term, optional angle term.

    Distance: Euclidean RDMs, each divided by its mean over the ``b(b-1)/2``
    pairs, compared with smooth-L1 (beta 1) averaged over the pairs. Angle:
    cosines of the angles ``(s_i - s_j, s_k - s_j)`` over all ``b^3`` triplets
    (as the authors' code), smooth-L1 averaged over them.
    """

    log_name = "rkd"

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        distance_weight: float = 1.0,
        angle_weight: float = 0.0,
        gather: bool = False,
    ):
        super().__init__(student_layer, teacher_layer, gather)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    @staticmethod
    def _normalised_distances(x: Tensor) -> Tensor:
        d = compute_rdm(x, "euclidean")
        return d / d.mean().clamp_min(_tiny(d))

    @staticmethod
    def _angles(x: Tensor) -> Tensor:
        diff = x.unsqueeze(0) - x.unsqueeze(1)  # (b, b, f): diff[j, i] = x_i - x_j
        unit = F.normalize(diff, p=2, dim=2)
        return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        """``s (b, f)`` student, ``t (b, g)`` teacher features -> scalar."""
        s, t = self._prepare(s, t)
        loss = s.new_zeros(())
        if self.distance_weight:
            loss = loss + self.distance_weight * F.smooth_l1_loss(
                self._normalised_distances(s), self._normalised_distances(t)
            )
        if self.angle_weight:
            loss = loss + self.angle_weight * F.smooth_l1_loss(self._angles(s), self._angles(t))
        return loss


class SPLoss(_PairedFeatureLoss):
    """Similarity-preserving KD (Tung & Mori 2019): ``||norm(s s^T) - norm(t t^T)||_F^2 / b^2`` (rows L2-normalised)."""

    log_name = "sp"

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        """``s (b, f)`` student, ``t (b, g)`` teacher features -> scalar."""
        s, t = self._prepare(s, t)
        b = s.shape[0]
        g_s = F.normalize(s @ s.T, p=2, dim=1)
        g_t = F.normalize(t @ t.T, p=2, dim=1)
        return (g_s - g_t).pow(2).sum() / (b * b)


class CKALoss(_PairedFeatureLoss):
    """``1 - linear CKA`` (Kornblith et al. 2019) between student and teacher features of the batch.

    CKA centres the features over the batch, so it couples the samples like an RDM does:
    with ``gather=True`` (which the Trainer sets under torchrun, as for RDL, RKD and SP) it is
    computed over the global batch and equals one process on the concatenated batch.
    """

    log_name = "cka"

    def __init__(self, student_layer: str, teacher_layer: str, gather: bool = False):
        super().__init__(student_layer, teacher_layer, gather)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        """``s (b, f)`` student, ``t (b, g)`` teacher features -> scalar."""
        s, t = self._prepare(s, t)
        s = s - s.mean(dim=0, keepdim=True)
        t = t - t.mean(dim=0, keepdim=True)
        # Gram form <K, L> / (||K|| ||L||) equals ||t^T s||_F^2 / (||s^T s||_F ||t^T t||_F)
        k, l = s @ s.T, t @ t.T
        denom = (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)).clamp_min(_tiny(s))
        return 1 - (k * l).sum() / denom
