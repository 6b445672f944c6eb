"""Alignment criteria beyond RDL's squared error: kernel CKA (and its log) and Li et al.'s similarity loss.

Both pull a student layer toward a teacher given as an ``RDMTeacher`` (a fixed
RDM over stimulus ids, e.g. a brain's) or as a ``NetworkTeacher``'s layer,
exactly as ``RDLLoss`` pairs them (``{student layer: teacher layer name or
RDMTeacher}``), and they use the same usable pairs: a pair is left out when a
sample's stimulus is not covered by the teacher, when the teacher's entry is
missing (NaN), or when both samples show the same stimulus.

``CKAAlignmentLoss``
    Linear CKA (Kornblith et al. 2019) between the student's centred Gram
    matrix ``K = H X X^T H`` and the teacher's kernel obtained from its RDM by
    double centring, ``L = -1/2 H D H`` (classical MDS; ``D`` squared for a
    ``euclidean`` RDM, as is for squared-distance-like RDMs: ``sqeuclidean``,
    ``correlation``, ``cosine``, categorical), ``H = I - 11^T / n``:
    ``CKA = <K, L>_F / (||K||_F ||L||_F)``. The loss is ``1 - CKA``, or
    ``-log CKA`` with ``log=True`` (the form Dapello et al. 2023 used to pull
    CORnet-S toward macaque IT). A kernel needs every pair of its stimuli, so
    the term is computed over the largest set the teacher fully covers: one
    sample per stimulus (the first), covered stimuli only, and stimuli with a
    missing teacher entry dropped (most missing first). A network teacher's
    RDM (method ``teacher_method``, default ``sqeuclidean``) gives
    ``L = H T T^T H / g``: then the loss is ``CKALoss``'s linear CKA.
``SimilarityLoss``
    Li et al. (2019, "Learning from brains how to regularize machines"): the
    mean over usable pairs of ``(arctanh S_ij - arctanh T_ij)^2``, with
    ``S_ij`` the cosine similarity of the student's features centred over the
    batch's stimuli and ``T_ij`` the teacher's similarity: ``1 - d_ij`` for a
    ``correlation`` or ``cosine`` RDM, the same centred cosine for a network
    teacher. Similarities are clipped to ``[-1 + clip, 1 - clip]`` before
    ``arctanh`` (which is infinite at +-1).

The functional forms (``double_centre``, ``rdm_kernel``, ``kernel_cka``,
``similarity_loss``) are public and tested against loop implementations of
their formulas.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Union

import torch
from torch import Tensor

from rdl_neuro.rdm.calc import compute_rdm
from rdl_neuro.train.losses import StepOutputs, TransferLoss, check_layer_pairs
from rdl_neuro.train.teachers import RDMTeacher

__all__ = ["double_centre", "rdm_kernel", "kernel_cka", "centred_cosine", "similarity_loss", "complete_rows",
           "CKAAlignmentLoss", "SimilarityLoss"]

# RDM methods whose entries are distances (not squared distances): squared before double centring
_DISTANCE_METHODS = ("euclidean",)
# RDM methods whose entries are 1 - a similarity
_SIMILARITY_METHODS = ("correlation", "cosine")


def double_centre(m: Tensor) -> Tensor:
    """``H M H`` for a square ``m (..., n, n)``, ``H = I - 11^T / n``: rows and columns centred."""
    return m - m.mean(-1, keepdim=True) - m.mean(-2, keepdim=True) + m.mean((-2, -1), keepdim=True)


def rdm_kernel(rdm: Tensor, method: str = "correlation") -> Tensor:
    """The kernel ``-1/2 H D H`` of a square RDM ``(n, n)`` (classical MDS).

    ``D`` is the RDM squared for ``euclidean`` (true distances) and the RDM as
    it is otherwise (squared distances, or dissimilarities that behave like
    them: correlation/cosine distances are squared distances between
    normalised patterns, up to a factor).
    """
    d = rdm * rdm if method in _DISTANCE_METHODS else rdm
    return -0.5 * double_centre(d)


def kernel_cka(k: Tensor, l: Tensor) -> Tensor:
    """``<K, L>_F / (||K||_F ||L||_F)`` of two centred kernels ``(n, n)``; 0 when either is all zero."""
    denom = (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)).clamp_min(torch.finfo(k.dtype).tiny)
    return (k * l).sum() / denom


def centred_cosine(x: Tensor) -> Tensor:
    """Cosine similarities ``(n, n)`` of the rows of ``x (n, f)`` after subtracting their mean over the ``n`` rows."""
    x = x - x.mean(0, keepdim=True)
    norms = torch.linalg.vector_norm(x, dim=1).clamp_min(torch.finfo(x.dtype).tiny)
    unit = x / norms[:, None]
    return unit @ unit.T


def similarity_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, clip: float = 1e-3) -> Tensor:
    """Li et al.'s ``mean (arctanh S - arctanh T)^2`` over the pairs ``i < j`` usable in ``mask``.

    Parameters
    ----------
    student, teacher : Tensor ``(n, n)``
        Similarity matrices (symmetric).
    mask : Tensor ``(n, n)`` bool, optional
        Usable pairs (symmetric); default every pair ``i != j``.
    clip : float
        Similarities are clipped to ``[-1 + clip, 1 - clip]``.
    """
    n = student.shape[0]
    iu = torch.triu_indices(n, n, 1, device=student.device)
    keep = torch.ones(iu.shape[1], dtype=torch.bool, device=student.device) if mask is None else mask[iu[0], iu[1]]
    s = student[iu[0], iu[1]][keep].clamp(-1 + clip, 1 - clip)
    t = teacher[iu[0], iu[1]][keep].clamp(-1 + clip, 1 - clip).to(s.dtype)
    return (torch.atanh(s) - torch.atanh(t)).pow(2).mean()


def complete_rows(mask: Tensor, rows: Tensor) -> Tensor:
    """The subset of ``rows`` whose pairs are all usable in ``mask (b, b)``, dropping the row with most gaps first."""
    rows = rows.clone()
    while rows.numel() > 1:
        sub = mask[rows][:, rows]
        gaps = (~sub).sum(1) - 1  # the diagonal is never usable
        if int(gaps.max()) == 0:
            break
        rows = torch.cat([rows[: int(gaps.argmax())], rows[int(gaps.argmax()) + 1:]])
    return rows


def _features(features: Mapping[str, Tensor] | None, name: str, side: str) -> Tensor:
    """``features[name]`` flattened to ``(b, f)``; errors name the layer and the side."""
    if features is None or name not in features:
        known = sorted(features) if features is not None else []
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"{side} layer {name!r} was not recorded (recorded: {known}){hint}")
    x = features[name]
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim == 0:
        raise TypeError(f"{side} layer {name!r}: features must be a floating tensor (b, f), got {type(x).__name__}")
    x = x if x.ndim == 2 else x.reshape(x.shape[0], -1)
    if not bool(torch.isfinite(x).all()):
        rows = torch.nonzero(~torch.isfinite(x).all(1)).squeeze(1)[:5].tolist()
        raise ValueError(f"{side} layer {name!r} has NaN or infinite features in batch samples {rows}")
    return x


class _RDMAlignmentLoss(TransferLoss):
    """Pairs student layers with teachers as ``RDLLoss`` does; subclasses define the per-pair term."""

    log_name = ""

    def __init__(self, pairs: Mapping[str, Union[str, RDMTeacher]], weights: float | Mapping[str, float] | None = None,
                 teacher_method: str = "sqeuclidean"):
        super().__init__()
        self.pairs, self.weights = check_layer_pairs(pairs, weights)
        self.teacher_method = teacher_method
        self.student_layers = tuple(self.pairs)
        self.teacher_layers = tuple(dict.fromkeys(t for t in self.pairs.values() if isinstance(t, str)))
        self.skipped_terms = {s: 0 for s in self.pairs}

    def forward(self, student_features: Mapping[str, Tensor], stimulus_ids: Tensor | None = None,
                teacher_features: Mapping[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted loss of one batch: ``(total, {"<log name>/<student layer>": detached term})``.

        ``student_features``: layer -> ``(b, f)``; ``stimulus_ids (b,)`` long, needed for ``RDMTeacher`` pairs;
        ``teacher_features``: teacher layer -> ``(b, g)``, needed for network-teacher pairs.
        """
        total: Tensor | None = None
        terms: dict[str, Tensor] = {}
        for s, teacher in self.pairs.items():
            x = _features(student_features, s, "student")
            if isinstance(teacher, RDMTeacher):
                if stimulus_ids is None:
                    raise ValueError("stimulus_ids are needed: some layers are paired with an RDMTeacher")
                ids = torch.as_tensor(stimulus_ids).to(x.device)
                if ids.shape != (x.shape[0],):
                    raise ValueError(f"stimulus_ids must have shape ({x.shape[0]},) like the features, got {tuple(ids.shape)}")
                term = self._rdm_term(x, teacher, ids)
            else:
                t = _features(teacher_features, teacher, "teacher").detach().to(x.dtype)
                if t.shape[0] != x.shape[0]:
                    raise ValueError(f"teacher layer {teacher!r} has {t.shape[0]} samples, the student batch {x.shape[0]}")
                term = self._network_term(x, t) if x.shape[0] >= 3 else None
            if term is None:  # too few usable stimuli: an exact 0 that keeps the graph connected
                self.skipped_terms[s] += 1
                term = x.sum() * 0.0
            terms[f"{self.log_name}/{s}"] = term.detach()
            weighted = self.weights[s] * term
            total = weighted if total is None else total + weighted
        assert total is not None
        return total, terms

    def from_step(self, step: StepOutputs) -> tuple[Tensor, dict[str, Tensor]]:
        return self(step.student_features, step.stimulus_ids, step.teacher_features)

    def _rdm_term(self, x: Tensor, teacher: RDMTeacher, ids: Tensor) -> Tensor | None:
        raise NotImplementedError

    def _network_term(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        pairs = {s: (t if isinstance(t, str) else repr(t)) for s, t in self.pairs.items()}
        return f"pairs={pairs}, weights={self.weights}, teacher_method={self.teacher_method!r}"


class CKAAlignmentLoss(_RDMAlignmentLoss):
    """``1 - CKA`` (or ``-log CKA``) between the student's centred Gram matrix and the teacher's RDM kernel.

    See the module docstring for the kernel and the stimuli used.

    Parameters
    ----------
    pairs : mapping student layer -> teacher layer name (``NetworkTeacher``) or ``RDMTeacher``
    weights : float or mapping student layer -> float, optional
        Per-layer factors (default 1).
    log : bool
        ``-log CKA`` instead of ``1 - CKA`` (CKA clamped at 1e-12: a teacher kernel that is not
        positive semi-definite can give CKA <= 0).
    teacher_method : str
        RDM method of a network teacher's features.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.train import RDMTeacher
    >>> x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> teacher = RDMTeacher(torch.cdist(x, x) ** 2, list(range(6)), method="sqeuclidean")
    >>> loss, terms = CKAAlignmentLoss({"fc": teacher})({"fc": x}, torch.arange(6))
    >>> abs(float(loss)) < 1e-12  # the teacher's kernel is the student's own centred Gram matrix
    True
    """

    def __init__(self, pairs: Mapping[str, Union[str, RDMTeacher]], weights: float | Mapping[str, float] | None = None,
                 log: bool = False, teacher_method: str = "sqeuclidean"):
        super().__init__(pairs, weights, teacher_method)
        self.log = bool(log)
        self.log_name = "logcka" if self.log else "cka"

    def _loss(self, x: Tensor, kernel: Tensor) -> Tensor:
        centred = x - x.mean(0, keepdim=True)
        cka = kernel_cka(centred @ centred.T, kernel)
        return -torch.log(cka.clamp_min(1e-12)) if self.log else 1 - cka

    def _rdm_term(self, x: Tensor, teacher: RDMTeacher, ids: Tensor) -> Tensor | None:
        target, mask = teacher.batch_target(ids, dtype=x.dtype)
        seen: set[int] = set()
        first = []  # one sample per covered stimulus: its first in the batch
        for k, r in enumerate(teacher.rows_of(ids).tolist()):
            if r >= 0 and r not in seen:
                seen.add(r)
                first.append(k)
        first_t = torch.tensor(first, dtype=torch.long, device=x.device)
        rows_used = complete_rows(mask, first_t)
        if rows_used.numel() < 3:  # two stimuli have a one-dimensional centred kernel: CKA is 1 whatever they are
            return None
        kernel = rdm_kernel(target[rows_used][:, rows_used], teacher.method)
        return self._loss(x[rows_used], kernel)

    def _network_term(self, x: Tensor, t: Tensor) -> Tensor:
        return self._loss(x, rdm_kernel(compute_rdm(t, self.teacher_method, square=True), self.teacher_method))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", log={self.log}"


class SimilarityLoss(_RDMAlignmentLoss):
    """Li et al. (2019)'s similarity loss: ``mean (arctanh S - arctanh T)^2`` over the usable pairs.

    Parameters
    ----------
    pairs : mapping student layer -> teacher layer name (``NetworkTeacher``) or ``RDMTeacher``
        An ``RDMTeacher`` must hold ``correlation`` or ``cosine`` distances (similarity ``1 - d``).
    weights : float or mapping student layer -> float, optional
    clip : float
        Similarities are clipped to ``[-1 + clip, 1 - clip]`` before ``arctanh``.

    Examples
    --------
    >>> import torch
    >>> from rdl_neuro.train import RDMTeacher
    >>> x = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> teacher = RDMTeacher((1 - centred_cosine(x)).clamp_min(0), list(range(5)), method="cosine")
    >>> loss, _ = SimilarityLoss({"fc": teacher})({"fc": x}, torch.arange(5))
    >>> float(loss) < 1e-20
    True
    """

    log_name = "sim"

    def __init__(self, pairs: Mapping[str, Union[str, RDMTeacher]], weights: float | Mapping[str, float] | None = None,
                 clip: float = 1e-3):
        super().__init__(pairs, weights, teacher_method="cosine")
        for s, t in self.pairs.items():
            if isinstance(t, RDMTeacher) and t.method not in _SIMILARITY_METHODS:
                raise ValueError(f"pair {s!r}: SimilarityLoss needs a correlation or cosine RDM teacher "
                                 f"(similarity = 1 - d), got method {t.method!r}")
        if not 0 < clip < 1:
            raise ValueError(f"clip must be in (0, 1), got {clip}")
        self.clip = float(clip)

    def _rdm_term(self, x: Tensor, teacher: RDMTeacher, ids: Tensor) -> Tensor | None:
        target, mask = teacher.batch_target(ids, dtype=x.dtype)
        keep = torch.nonzero(mask.any(1)).squeeze(1)
        if keep.numel() < 2:
            return None
        sub_mask = mask[keep][:, keep]
        return similarity_loss(centred_cosine(x[keep]), 1 - target[keep][:, keep], sub_mask, self.clip)

    def _network_term(self, x: Tensor, t: Tensor) -> Tensor:
        return similarity_loss(centred_cosine(x), centred_cosine(t), None, self.clip)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", clip={self.clip}"

