"""Kendall tau-a / tau-b pattern bootstrap from entry weights, equal to the general path.

See the comment below for how a resample becomes a weighted count.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from rdl_neuro.inference.resampling import pair_weights
from rdl_neuro.rdm.ranks import count_discordant, sorted_dense, tau_from_counts

#
# A pattern resample with draw counts ``c`` holds ``w_u = c_a c_b`` copies of every original entry
# ``u = (a, b)`` (pairs of copies of one stimulus are NaN and dropped). Kendall's tau of two resampled
# RDMs therefore only needs the original entries and their weights:
#
# * order the original entries once by ``(x, y)`` (x, then y); the resampled vectors sorted by
#   ``(x, y)`` are that order with entry ``u`` repeated ``w_u`` times -- no sort per resample;
# * discordant pairs ``#{x_s < x_t, y_s > y_t}`` of that sequence are the inversions of its y
#   values, which scipy's compiled Fenwick count gives when every element is its own x group
#   (an increasing ramp for x): inside a run of tied x the y values ascend, so no pair there is
#   counted, and copies of one entry have equal y;
# * a model with a few distinct values (a categorical model RDM) needs no Fenwick count: along the
#   subject's value order, the weight of lower-valued model entries above each entry is a
#   cumulative sum;
# * tied pairs are ``sum_g W_g (W_g - 1) / 2`` over groups of equal x (of equal y, of equal x and y),
#   ``W_g`` the group's total weight; copies of one entry are tied in x, in y and jointly.
#
# The noise ceiling pools rank-transformed RDMs (rsatoolbox's ``pool_rdm``): the average rank of
# entry ``u`` in a resampled subject RDM is ``(weight of smaller values) + (W_tie + 1) / 2``, an
# O(P) cumulative sum along the subject's fixed value order. Pooled RDMs are compared through
# the integer keys ``sum of 2 * rank`` over the pooled subjects, ordered as rsatoolbox's means;
# they need one sort per pooled RDM and resample (of the entries present).
#
# tau-a (P <= _TAU_A_PRODUCT_MAX_P) needs no count per (model, subject) pair at all: the subjects'
# summed numerators are a quadratic form in the weights, ``w^T (G_x * Y) w``, evaluated for all
# resamples by one exact int8 matrix product per model (see ``_tau_a_bootstrap_sums``).
#
# Cost (92 images, P = 4186, 8 models, 8 subjects, 1000 resamples, one core): the tau-a products
# ~0.9 s; the noise ceiling ~2.7 s, half of it its Fenwick counts (16 per resample, 1.25 ms); tau-b
# adds one count per continuous (model, subject) pair and resample (~50 us each).

KENDALL_METHODS = ("kendall", "tau-b", "tau-a")
# models with at most this many distinct values count discordant pairs by cumulative sums
_FEW_VALUES = 4


def _self_ties(w: np.ndarray) -> int:
    """Tied pairs among the copies of each entry alone: ``sum_u w_u (w_u - 1) / 2``."""
    return int((w * (w - 1)).sum()) // 2


def _tied_pairs(groups: np.ndarray, w: np.ndarray) -> int:
    """``sum_g W_g (W_g - 1) / 2`` with ``W_g`` the total weight ``w`` of group ``g`` (ids ``groups``)."""
    total = np.bincount(groups, weights=w)  # float64, exact: integers far below 2**53
    return int((total * (total - 1)).sum()) // 2


@dataclass
class _Ties:
    """Ties among the distinct entries of an RDM (or of an RDM pair, jointly).

    ``members`` (M,) are the entries that share their value with another entry, ``group`` (M,) the
    value group of each. Under entry weights ``w`` the tied pairs are the copies' own ties plus,
    per group, ``W_g (W_g - 1) / 2`` in place of the members' own ``w (w - 1) / 2``.
    """

    members: np.ndarray
    group: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray) -> _Ties:
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        members = np.flatnonzero(counts[inverse] > 1)
        group = np.unique(inverse[members], return_inverse=True)[1]
        return cls(members, group.astype(np.intp))

    @classmethod
    def none(cls) -> _Ties:
        return cls(np.zeros(0, np.intp), np.zeros(0, np.intp))

    def pairs(self, limit: int = 100_000) -> tuple[np.ndarray, np.ndarray] | None:
        """The tied entry pairs ``(u, v)`` (two (T,) arrays), or None when there are over ``limit``."""
        sizes = np.bincount(self.group) if self.group.size else np.zeros(0, np.intp)
        if int((sizes * (sizes - 1) // 2).sum()) > limit:
            return None
        by_group = np.argsort(self.group, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        us, vs = [], []
        for g, size in enumerate(sizes):
            members = self.members[by_group[starts[g]:starts[g + 1]]]
            iu, iv = np.triu_indices(size, 1)
            us.append(members[iu])
            vs.append(members[iv])
        if not us:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        return np.concatenate(us), np.concatenate(vs)

    def count(self, w: np.ndarray, self_ties: int, split: np.ndarray | None = None) -> int:
        """Tied pairs under weights ``w`` (P,), given ``self_ties = _self_ties(w)``. ``split`` (M,),
        integer values at the members, refines the groups (joint ties with an RDM of those values)."""
        if self.members.size == 0:
            return self_ties
        if self.members.size == w.size and split is None:  # e.g. a categorical model: all entries tie
            return _tied_pairs(self.group, w)
        wm = w[self.members]
        if not wm.any():
            return self_ties
        group = self.group
        if split is not None:
            group = np.unique(group * (int(split.max()) + 1) + split, return_inverse=True)[1]
        return self_ties + _tied_pairs(group, wm) - _self_ties(wm)


@dataclass
class _RankedRDM:
    """One RDM's values as ranks: ``order`` (P,) ascending and its inverse ``position``, 1-based dense
    ranks ``dense`` (P,) (entry order) and ``dense_sorted`` (value order), the tie runs
    ``run_starts`` (None without ties) and the ``ties`` among distinct entries."""

    order: np.ndarray
    position: np.ndarray
    dense: np.ndarray
    dense_sorted: np.ndarray
    run_starts: np.ndarray | None
    ties: _Ties

    @classmethod
    def of(cls, values: np.ndarray) -> _RankedRDM:
        order, dense_sorted, n_ties = sorted_dense(values)
        dense = np.empty_like(dense_sorted)
        dense[order] = dense_sorted
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        if not n_ties:
            return cls(order, position, dense, dense_sorted, None, _Ties.none())
        starts = np.flatnonzero(np.r_[True, dense_sorted[1:] != dense_sorted[:-1]])
        return cls(order, position, dense, dense_sorted, starts, _Ties.of(dense))

    @property
    def n_values(self) -> int:
        return int(self.dense_sorted[-1])


class _WeightedTauPair:
    """Discordant pairs of one (x, y) RDM pair under entry weights, prepared once for all resamples.

    ``y`` is a subject RDM. A model ``x`` with at most ``_FEW_VALUES`` values and a ``y`` without ties
    use cumulative sums along y's order; otherwise the entries are ordered by ``(x, y)`` once and
    every resample is one ``np.repeat`` and one Fenwick count (see the section comment).
    """

    def __init__(self, x: _RankedRDM, y: _RankedRDM):
        p = x.dense.size
        self.few = x.n_values <= _FEW_VALUES
        if self.few:
            x_in_y_order = x.dense[y.order]
            # masks in y's order: entries of value h, and entries below h, for h = 2..G
            self.at = [(x_in_y_order == h).astype(np.intp) for h in range(2, x.n_values + 1)]
            self.below = [(x_in_y_order < h).astype(np.intp) for h in range(2, x.n_values + 1)]
            # last position of each entry's run of tied y (None: no ties, the entry itself)
            self.run_end = None
            if y.run_starts is not None:
                ends = np.append(y.run_starts[1:], p) - 1
                self.run_end = ends[y.dense_sorted - 1]
        else:
            self.order = np.lexsort((y.dense, x.dense))
            self.y_seq = y.dense[self.order]
        same = x.ties.members.size and y.ties.members.size
        self.joint = _Ties.of(x.dense * (p + 1) + y.dense) if same else _Ties.none()

    def discordant(self, w: np.ndarray, w_y: np.ndarray, ramp: np.ndarray) -> int:
        """``#{x_s < x_t, y_s > y_t}`` over the resample's ``w.sum()`` entries; ``w_y = w[y.order]``."""
        if self.few:
            # sum over entries t of value h: w_t * weight of entries below h with a larger y
            total = 0
            for at, below in zip(self.at, self.below):
                lower = w_y * below
                up_to = np.cumsum(lower)  # t itself is not below h: it adds nothing
                if self.run_end is not None:
                    up_to = up_to[self.run_end]  # entries tied with t in y are not above it
                above = int(up_to[-1]) - up_to
                total += int(np.dot(w_y * at, above))
            return total
        return _weighted_tau_a_pairs(self.y_seq, self.order, w, ramp)


def _weighted_tau_a_pairs(y_seq: np.ndarray, order: np.ndarray, w: np.ndarray, ramp: np.ndarray) -> int:
    """Discordant pairs of a resampled RDM pair, from the original entries and their weights.

    Parameters
    ----------
    y_seq : intp array ``(P,)``
        y's 1-based dense ranks with the original entries ordered by ``(x, y)``.
    order : intp array ``(P,)``
        That ``(x, y)`` order of the original entries.
    w : intp array ``(P,)``
        Copies of every original entry in the resample (``c_a c_b``; 0 drops the entry).
    ramp : intp array ``(>= w.sum(),)``, strictly increasing
        Stands in for x: in the ``(x, y)`` order tied x need no x values (see the section comment).

    Returns
    -------
    int: ``#{(s, t): x_s < x_t, y_s > y_t}`` over the ``w.sum()`` resampled entries; the tau
    numerator is then ``tot - ties_x - ties_y + ties_xy - 2 * discordant``.
    """
    y_rep = np.repeat(y_seq, w[order])
    return count_discordant(ramp[: y_rep.size], y_rep)


# Largest RDM (entries P) whose tau-a bootstrap takes the matrix-product path below: it costs
# B k P^2 integer multiply-adds and P^2 bytes per model, against B k m P log P for Fenwick counts.
_TAU_A_PRODUCT_MAX_P = 8192


def _greater_matrix(ranks: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``r_u > r_v`` as 0/1 int8 ``(P, P)`` for integer ranks ``r`` ``(P,)`` below 2**15, into the
    bool buffer ``out`` (reused: fresh 17 MB arrays cost more in page faults than the comparison)."""
    r = ranks.astype(np.int16)
    # the comparison's bools are 0/1 bytes: viewed as int8, no widening and no float temporaries
    return np.greater.outer(r, r, out=out).view(np.int8)


def _exact_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (r, P) @ b (P, q)`` of int8 tensors as exact int32: oneDNN's int8 kernel, or float64
    products (exact below 2**53) on a torch build without it."""
    try:
        return torch._int_mm(a, b)
    except (RuntimeError, AttributeError, NotImplementedError):
        return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


def _tau_a_bootstrap_sums(x_ranks: Sequence[np.ndarray], y_ranks: Sequence[np.ndarray], weights: torch.Tensor,
                          chunk: int = 256) -> np.ndarray:
    """Sum over subjects of the tau-a numerators (concordant - discordant pairs) of every resample.

    The numerator of resampled RDMs x and y is ``sum_{u<v} w_u w_v sign(x_u - x_v) sign(y_u - y_v)
    = w^T (S_x * S_y) w / 2`` (``S`` the sign matrices of the original entries, ``w`` the entry
    weights; copies of one entry tie and add 0). Summed over the subjects, ``S_y`` becomes
    ``Y = sum_j S_yj``, and as ``S_x = G_x - G_x^T`` with ``G_x = [x_u > x_v]`` and Y is
    antisymmetric, the sum is ``w^T (G_x * Y) w``: one ``(B, P) @ (P, P)`` product per model,
    exact in integers (int8 inputs and int32 sums, on oneDNN's VNNI kernels where the CPU has them).

    Parameters
    ----------
    x_ranks, y_ranks : k and m int arrays ``(P,)``: dense ranks of the model and subject RDMs.
    weights : ``(B, P)`` float64 entry weights ``c_a c_b`` of the resamples (``pair_weights``).

    Returns
    -------
    ``(B, k)`` float64: ``sum_j (con - dis)(x_i, y_j)`` of resample b in row b.
    """
    # int8 needs |Y| <= m and the weights below 128; otherwise float64 (exact below 2**53)
    small = len(y_ranks) <= 127 and float(weights.max()) <= 127
    p = weights.shape[1]
    greater = np.empty((p, p), dtype=bool)
    subjects = np.zeros((p, p), dtype=np.int8 if small else np.int32)
    for y in y_ranks:  # Y = sum_j (G_yj - G_yj^T); G^T is the "less" comparison (no slow transpose)
        subjects += _greater_matrix(y, greater)
        subjects -= _greater_matrix(-y, greater)
    dtype = torch.int8 if small else torch.float64
    w_all = weights.to(dtype)
    w_exact = weights.to(torch.int32 if small else torch.float64)
    out = np.empty((weights.shape[0], len(x_ranks)))
    product = np.empty((p, p), dtype=subjects.dtype)
    for i, x in enumerate(x_ranks):
        np.multiply(_greater_matrix(x, greater), subjects, out=product)
        product_t = torch.from_numpy(product).to(dtype)  # (P, P)
        for start in range(0, weights.shape[0], chunk):
            rows = slice(start, start + chunk)
            if small:  # |w^T G| <= 127 m sum(w) and its products with w fit int32; the sums take int64
                sums = (_exact_int_mm(w_all[rows], product_t) * w_exact[rows]).sum(1, dtype=torch.int64)
            else:
                sums = ((w_all[rows] @ product_t) * w_exact[rows]).sum(1)
            out[rows, i] = sums.numpy()
    return out


class _PooledBounds:
    """The bootstrapped noise ceiling of Kendall's tau, for chunks of resamples at once.

    In a resample with entry weights ``w``, the average rank of entry ``u`` in subject j's resampled
    RDM is ``(weight of smaller values) + (W_run + 1) / 2`` over its run of tied values: twice that
    is ``cs[s_u] + cs[e_u + 1] + 1`` with ``cs`` the cumulative weights along j's value order (0
    first) and ``[s_u, e_u]`` the run's sorted positions. ``pool_rdm`` averages these ranks over the
    subjects (all for the upper bound, all but j for the lower one); their integer sums order the
    pooled entries exactly as rsatoolbox's means. Each (pooled, subject) comparison then needs one
    sort of the kept entries and one Fenwick count of the resampled entries.
    """

    def __init__(self, ys: Sequence[_RankedRDM]):
        self.ys = ys
        p = ys[0].dense.size
        self.order = np.stack([y.order for y in ys])  # (m, P)
        self.dense_flat = np.concatenate([y.dense for y in ys])  # (m P,)
        starts, ends = [], []
        for y in ys:
            if y.run_starts is None:
                starts.append(y.position)
                ends.append(y.position + 1)
            else:
                run_ends = np.append(y.run_starts[1:], p)
                starts.append(y.run_starts[y.dense - 1])
                ends.append(run_ends[y.dense - 1])
        self.run_start, self.run_end = np.stack(starts), np.stack(ends)  # (m, P), entry order
        # each subject's tied entry pairs (None: too many to list, counted per resample instead)
        self.tie_pairs = [y.ties.pairs() for y in ys]

    def bounds(self, w: np.ndarray, variant: str) -> np.ndarray:
        """``(2, R)`` lower and upper noise ceilings of R resamples with intp entry weights ``w (R, P)``."""
        n_res, m = w.shape[0], len(self.ys)
        n_total = w.sum(1)
        tot = n_total * (n_total - 1) // 2
        self_ties = (w * (w - 1)).sum(1) // 2
        # the kept entries of each resample first, in entry order (K: the most kept; the rest of a
        # shorter row are absent entries, which weigh 0 and so drop out of every count)
        present = w > 0
        keep = np.argsort(~present, axis=1, kind="stable")[:, :int(present.sum(1).max())]  # (R, K)
        pooled = self._pooled(w, keep)
        w_keep = np.broadcast_to(np.take_along_axis(w, keep, 1)[:, None, :], pooled.shape)
        order, dense, w_sorted, ties_pooled = _sorted_rows(pooled.reshape(-1, keep.shape[1]),
                                                           w_keep.reshape(-1, keep.shape[1]))
        order, dense, w_sorted = (a.reshape(pooled.shape) for a in (order, dense, w_sorted))
        ties_pooled = ties_pooled.reshape(n_res, m + 1)
        ties_x = np.stack([ties_pooled[:, :m], np.repeat(ties_pooled[:, m:], m, axis=1)], axis=1)  # (R, 2, m)
        discordant = self._discordant(keep, order, dense, w_sorted, n_total, variant)
        ties_y, joint = self._subject_ties(w, self_ties, keep, pooled)
        con_minus_dis = tot[:, None, None] - ties_x - ties_y[:, None, :] + joint - 2 * discordant
        if variant == "a":
            return (con_minus_dis.sum(2) / (m * tot[:, None])).T
        with np.errstate(divide="ignore", invalid="ignore"):
            taus = con_minus_dis / np.sqrt(tot[:, None, None] - ties_x) / np.sqrt(tot[:, None] - ties_y)[:, None, :]
        constant = (ties_x == tot[:, None, None]) | (ties_y == tot[:, None])[:, None, :]
        taus = np.where(constant, np.nan, np.clip(taus, -1.0, 1.0))  # scipy's NaN for a constant vector
        return taus.mean(2).T

    def _pooled(self, w: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Integer pooled RDMs ``(R, m + 1, K)`` on the kept entries: row j sums twice the average
        ranks of all subjects but j, row m of all of them (see the class docstring)."""
        n_res, p = w.shape
        m = len(self.ys)
        cs = np.zeros((n_res, m, p + 1), dtype=np.intp)
        np.cumsum(w[:, self.order], axis=2, out=cs[:, :, 1:])
        base = (np.arange(n_res * m) * (p + 1)).reshape(n_res, m, 1)
        cs = cs.ravel()
        twice = (cs[base + self.run_start[:, keep].transpose(1, 0, 2)]
                 + cs[base + self.run_end[:, keep].transpose(1, 0, 2)] + 1)  # (R, m, K)
        pooled_all = twice.sum(1, keepdims=True)
        return np.concatenate([pooled_all - twice, pooled_all], axis=1)

    def _discordant(self, keep: np.ndarray, order: np.ndarray, dense: np.ndarray, w_sorted: np.ndarray,
                    n_total: np.ndarray, variant: str) -> np.ndarray:
        """Discordant pairs ``(R, 2, m)`` of subject j with the pooled RDM of bound 0 (all but j) and
        1 (all), from the pooled rows' ``order``, ``dense`` ranks and ``w_sorted`` weights ``(R, m + 1, K)``.

        The resampled sequences, each entry repeated by its weight, are laid end to end, block j
        shifted above block j - 1 in x and y so that no pair across two blocks is discordant: for
        tau-a, whose subject mean needs only the sum, one Fenwick count per bound and resample
        (returned in column 0, the others 0); for tau-b one per block.
        """
        n_res, n_keep = keep.shape
        m, p = len(self.ys), self.order.shape[1]
        subject = np.arange(m)[None, None, :, None]
        x = np.empty((n_res, 2, m, n_keep), dtype=np.intp)  # pooled ranks, along the pooled order
        x[:, 0], x[:, 1] = dense[:, :m], dense[:, m:]
        x += subject * (n_keep + 1)
        entries = np.take_along_axis(keep[:, None, :], order, 2)  # (R, m + 1, K)
        y = np.empty((n_res, 2, m, n_keep), dtype=np.intp)  # subject j's dense ranks, along the same order
        y[:, 0], y[:, 1] = entries[:, :m], entries[:, m:]
        y = self.dense_flat[y + subject * p] + subject * (p + 1)
        weights = np.empty((n_res, 2, m, n_keep), dtype=np.intp)
        weights[:, 0], weights[:, 1] = w_sorted[:, :m], w_sorted[:, m:]
        x_rep = np.repeat(x.ravel(), weights.ravel())
        y_rep = np.repeat(y.ravel(), weights.ravel())
        discordant = np.zeros((n_res, 2, m), dtype=np.int64)
        at = 0
        for r in range(n_res):
            block = int(n_total[r])
            for bound in range(2):
                if variant == "a":
                    span = slice(at, at + m * block)
                    discordant[r, bound, 0] = count_discordant(x_rep[span], y_rep[span])
                else:
                    for j in range(m):
                        span = slice(at + j * block, at + (j + 1) * block)
                        discordant[r, bound, j] = count_discordant(x_rep[span], y_rep[span])
                at += m * block
        return discordant

    def _subject_ties(self, w: np.ndarray, self_ties: np.ndarray, keep: np.ndarray,
                      pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tied pairs of every resampled subject ``(R, m)`` and joint ties with its pooled RDMs
        ``(R, 2, m)``: the copies' own ties plus ``w_u w_v`` for each pair of tied entries (u, v)
        (that also tie in the pooled RDM, for the joint ties)."""
        n_res, m = w.shape[0], len(self.ys)
        ties_y = np.repeat(self_ties[:, None], m, axis=1)
        joint = np.repeat(ties_y[:, None, :], 2, axis=1)
        # position of every entry among the kept ones (absent entries weigh 0: any position will do)
        position = np.zeros(w.shape, dtype=np.intp)
        np.put_along_axis(position, keep, np.arange(keep.shape[1])[None, :], 1)
        resamples = np.arange(n_res)[:, None]
        for j, (y, pairs) in enumerate(zip(self.ys, self.tie_pairs)):
            rows = (j, m)  # the pooled rows of bound 0 and 1
            if pairs is None:  # too many tied pairs to list: count them per resample
                for r in range(n_res):
                    ties_y[r, j] = y.ties.count(w[r], int(self_ties[r]))
                    at = position[r, y.ties.members]
                    for bound, row in enumerate(rows):
                        joint[r, bound, j] = y.ties.count(w[r], int(self_ties[r]), split=pooled[r, row, at])
                continue
            u, v = pairs
            if not u.size:
                continue
            both = w[:, u] * w[:, v]  # (R, T)
            ties_y[:, j] += both.sum(1)
            for bound, row in enumerate(rows):
                same = pooled[resamples, row, position[:, u]] == pooled[resamples, row, position[:, v]]
                joint[:, bound, j] += (both * same).sum(1)
        return ties_y, joint


def _sorted_rows(keys: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-negative integer ``keys`` (r, P') of entries with weights ``w`` (r, P') -> per row, the
    order by key, 1-based dense ranks and weights in that order (each (r, P')) and the tied pairs (r,)."""
    # sort (key, position) packed in one int64: numpy's vectorised sort beats its stable argsort
    bits = max(1, int(keys.shape[1] - 1).bit_length())
    if int(keys.max()).bit_length() + bits < 63:
        packed = np.sort((keys << bits) | np.arange(keys.shape[1]), axis=1)
        order = packed & ((1 << bits) - 1)
        ordered = packed >> bits
    else:
        order = np.argsort(keys, axis=1, kind="stable")
        ordered = np.take_along_axis(keys, order, 1)
    new = np.ones(ordered.shape, dtype=bool)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new[:, 1:])
    dense = np.cumsum(new, axis=1, dtype=np.intp)
    w_sorted = np.take_along_axis(w, order, 1)
    # total weight of every (row, value) group; float64 sums of integers are exact below 2**53
    width = keys.shape[1] + 1
    groups = (dense + np.arange(keys.shape[0])[:, None] * width).ravel()
    total = np.bincount(groups, weights=w_sorted.ravel(), minlength=keys.shape[0] * width).reshape(-1, width)
    ties = (total * (total - 1)).sum(1).astype(np.int64) // 2
    return order, dense, w_sorted, ties


def bootstrap_kendall(models: torch.Tensor, brain: torch.Tensor, method: str, pat_idx: np.ndarray,
                       boot_nc: bool, chunk: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-a / tau-b pattern bootstrap from entry weights (see the section comment).

    Equal to ``bootstrap_general`` resample by resample. Resamples run in chunks on
    ``torch.get_num_threads()`` threads (scipy's Fenwick count releases the GIL).
    """
    variant = "a" if method == "tau-a" else "b"
    k, m = models.shape[0], brain.shape[0]
    n_boot, n = pat_idx.shape
    xs = [_RankedRDM.of(v) for v in models.detach().cpu().to(torch.float64).numpy()]
    ys = [_RankedRDM.of(v) for v in brain.detach().cpu().to(torch.float64).numpy()]
    ramp = np.arange(xs[0].dense.size, dtype=np.intp)
    evals = np.full((n_boot, k), np.nan)
    nc = np.full((2, n_boot), np.nan)
    valid = np.array([len(np.unique(p)) >= 3 for p in pat_idx], dtype=bool)  # else NaN, as rsatoolbox
    by_product = variant == "a" and ramp.size <= _TAU_A_PRODUCT_MAX_P
    ceiling = _PooledBounds(ys) if boot_nc else None
    # the product needs every resample's weights at once (at most B x 8192 entries); the
    # per-resample paths make them chunk by chunk (an RDM of n stimuli has n^2 / 2 entries)
    all_weights = pair_weights(pat_idx, n) if by_product else None
    if not by_product:
        pairs = [[_WeightedTauPair(x, y) for y in ys] for x in xs]

    def product_evals() -> None:
        n_total = all_weights.sum(1).numpy()
        tot = n_total * (n_total - 1) / 2
        sums = _tau_a_bootstrap_sums([x.dense for x in xs], [y.dense for y in ys], all_weights)
        evals[valid] = (sums / (m * tot[:, None]))[valid]

    def one_resample(w: np.ndarray) -> np.ndarray:
        """The models' mean tau with the subjects ``(k,)`` in the resample of weights ``w (P,)``."""
        n_total = int(w.sum())
        tot = n_total * (n_total - 1) // 2
        self_ties = _self_ties(w)
        ties_y = [y.ties.count(w, self_ties) for y in ys]
        w_y = [w[y.order] for y in ys]
        ties_x = [x.ties.count(w, self_ties) for x in xs]
        taus = np.empty((k, m))
        for i in range(k):
            for j in range(m):
                pair = pairs[i][j]
                num = (tot - ties_x[i] - ties_y[j] + pair.joint.count(w, self_ties)
                       - 2 * pair.discordant(w, w_y[j], ramp))
                taus[i, j] = tau_from_counts(num, tot, ties_x[i], ties_y[j], variant)
        return taus.mean(1)

    def run(start: int) -> None:
        stop = min(start + chunk, n_boot)
        ok = np.flatnonzero(valid[start:stop]) + start
        if not ok.size:
            return
        w = (all_weights[ok] if by_product else pair_weights(pat_idx[ok], n)).numpy().astype(np.intp)
        if not by_product:
            for b, w_b in zip(ok, w):
                evals[b] = one_resample(w_b)
        if ceiling is not None:
            nc[:, ok] = ceiling.bounds(w, variant)

    starts = list(range(0, n_boot, chunk)) if boot_nc or not by_product else []
    n_threads = min(torch.get_num_threads(), len(starts) + by_product)
    if n_threads <= 1:
        if by_product:
            product_evals()
        for start in starts:
            run(start)
    else:
        # the product's numpy set-up is single-threaded: the noise-ceiling chunks fill the other cores
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            product = pool.submit(product_evals) if by_product else None
            list(pool.map(run, starts))
            if product is not None:
                product.result()
    return evals, nc
