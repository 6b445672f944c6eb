"""Weighted RSA models: component RDMs combined with fitted weights (rsatoolbox's ``ModelWeighted``).

``fit_weights`` fits the weights as rsatoolbox's ``fit_regress`` (least squares)
and ``fit_regress_nn`` (non-negative least squares, the active-set algorithm of
Bro & de Jong 1997) do, for the ``corr`` and ``cosine`` comparisons: the model
RDMs are centred for ``corr``, the target is the pooled brain RDM
(``pool_rdm``), the weights are normalised to unit length. Least squares runs
batched in torch over any leading axes (folds, resamples); the non-negative
fit is a short active-set loop per problem (few components).
"""
from __future__ import annotations

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro.rdm.interop import from_rsatoolbox

__all__ = ["FIT_METHODS", "fit_weights", "solve_weights", "fit_weighted_model", "predict_weighted"]

#: Comparison methods ``fit_weights`` fits for (rsatoolbox's ``fit_regress`` without a pattern covariance).
FIT_METHODS = ("corr", "cosine")


def _check_components(components: torch.Tensor) -> None:
    if components.ndim < 2:
        raise ValueError(f"components must have shape (..., n_components, n_pairs), got {tuple(components.shape)}")
    if components.shape[-2] < 2:
        raise ValueError(f"a weighted model needs at least 2 component RDMs, got {components.shape[-2]} "
                         "(a single RDM is a fixed model: evaluate it directly)")


def _nn_least_squares(ata: np.ndarray, aty: np.ndarray) -> np.ndarray:
    """rsatoolbox's ``_nn_least_squares`` (Bro & de Jong active set) from ``A^T A`` and ``A^T y``.

    One change: the next variable enters from the passive set only. rsatoolbox
    takes the largest gradient over all variables, and loops forever when
    rounding leaves that one in the active set already; where it ends, the
    two agree.
    """
    x = np.zeros(ata.shape[0])
    p = np.zeros(ata.shape[0], bool)
    w = aty.copy()
    tol = 100 * np.finfo(float).eps
    while not p.all() and np.max(np.where(p, -np.inf, w)) > tol:
        p[np.argmax(np.where(p, -np.inf, w))] = True
        s_p = np.linalg.solve(ata[p][:, p], aty[p])
        while np.any(s_p < 0):
            alphas = x[p] / (x[p] - s_p)
            alphas[s_p > 0] = 1
            i_alpha = int(np.argmin(alphas))
            x[p] = x[p] + alphas[i_alpha] * (s_p - x[p])
            i_alpha = np.where(p)[0][i_alpha]
            x[i_alpha] = 0
            p[i_alpha] = False
            s_p = np.linalg.solve(ata[p][:, p], aty[p])
        x[p] = s_p
        w = aty - ata @ x
    return x


def fit_weights(components: torch.Tensor, target: torch.Tensor, method: str = "corr", *, nonneg: bool = False,
                ridge_weight: float = 0.0, normalize: bool = True) -> torch.Tensor:
    """Weights of component RDMs that best predict a target RDM under ``method``.

    Parameters
    ----------
    components : Tensor ``(..., c, P)``
        ``c >= 2`` component RDMs (condensed), NaN-free.
    target : Tensor ``(..., P)``
        The pooled brain RDM (``pool_rdm(brain, method)``), same leading axes.
    method : "corr" or "cosine"
    nonneg : bool
        Non-negative weights (``fit_regress_nn``) instead of least squares
        (``fit_regress``).
    ridge_weight : float
        Ridge penalty on the normal equations, as rsatoolbox.
    normalize : bool
        Scale the weights to unit length (their scale changes neither
        comparison).

    Returns
    -------
    Tensor ``(..., c)`` float64

    Examples
    --------
    >>> comps = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [6.0, 1.0, 5.0, 2.0, 4.0, 3.0]])
    >>> fit_weights(comps, 2 * comps[0] + comps[1], "cosine", normalize=False)
    tensor([2., 1.], dtype=torch.float64)
    """
    if method not in FIT_METHODS:
        raise ValueError(f"weights are fitted for the comparisons {FIT_METHODS}, not {method!r}")
    _check_components(components)
    v = components.to(torch.float64)
    y = target.to(torch.float64)
    if bool(torch.isnan(v).any() or torch.isnan(y).any()):
        raise ValueError("components and target must be NaN-free to fit weights")
    if method == "corr":
        v = v - v.mean(-1, keepdim=True)
    c = v.shape[-2]
    ata = v @ v.transpose(-1, -2) + ridge_weight * torch.eye(c, dtype=torch.float64)
    aty = (v @ y.unsqueeze(-1)).squeeze(-1)
    return solve_weights(ata, aty, nonneg=nonneg, normalize=normalize)


def solve_weights(ata: torch.Tensor, aty: torch.Tensor, *, nonneg: bool = False, normalize: bool = True) -> torch.Tensor:
    """Weights from the normal equations ``ata theta = aty``, batched; the one solver of ``fit_weights``.

    Parameters
    ----------
    ata : Tensor ``(..., c, c)``
        ``A^T A`` (plus any ridge term) of the (centred, for ``corr``) components.
    aty : Tensor ``(..., c)``
        ``A^T y`` with the pooled target ``y``.
    nonneg : bool
        Non-negative least squares (Bro & de Jong's active set, per problem);
        else ``torch.linalg.solve`` (the minimum-norm solution where ``ata``
        is exactly singular).
    normalize : bool
        Scale each weight vector to unit length (zero vectors stay zero).

    Returns
    -------
    Tensor ``(..., c)`` float64

    Examples
    --------
    >>> solve_weights(torch.eye(2, dtype=torch.float64), torch.tensor([3.0, -4.0], dtype=torch.float64))
    tensor([ 0.6000, -0.8000], dtype=torch.float64)
    """
    ata, aty = ata.to(torch.float64), aty.to(torch.float64)
    c = ata.shape[-1]
    if nonneg:
        flat_a, flat_y = ata.reshape(-1, c, c).numpy(), aty.reshape(-1, c).numpy()
        theta = torch.from_numpy(np.stack([_nn_least_squares(a, b) for a, b in zip(flat_a, flat_y)]))
        theta = theta.reshape(aty.shape)
    else:
        theta, info = torch.linalg.solve_ex(ata, aty.unsqueeze(-1))
        theta = theta.squeeze(-1)
        if bool((info != 0).any()):
            # exactly singular (e.g. a fold with fewer distinct pairs than components): minimum-norm solution
            bad = info != 0
            theta[bad] = (torch.linalg.pinv(ata[bad]) @ aty[bad].unsqueeze(-1)).squeeze(-1)
    if normalize:
        norm = torch.sqrt((theta**2).sum(-1, keepdim=True))
        theta = torch.where(norm > 0, theta / torch.where(norm > 0, norm, 1.0), theta)
    return theta


def predict_weighted(components: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The weighted model's RDM ``(..., P)`` = ``theta @ components`` (rsatoolbox ``ModelWeighted.predict``)."""
    _check_components(components)
    return (theta.to(torch.float64).unsqueeze(-2) @ components.to(torch.float64)).squeeze(-2)


def fit_weighted_model(components: RDMs, brain: RDMs, method: str = "corr", *, nonneg: bool = False,
                       ridge_weight: float = 0.0, normalize: bool = True,
                       descriptor: str | None = None) -> tuple[np.ndarray, RDMs]:
    """Fit a weighted model of component RDMs to brain RDMs (all stimuli); rsatoolbox ``fit_regress[_nn]``.

    Parameters
    ----------
    components : rsatoolbox RDMs
        ``c >= 2`` component RDMs over the brain's stimuli.
    brain : rsatoolbox RDMs
        ``m`` brain RDMs; the target is their pool (``pool_rdm``).
    method, nonneg, ridge_weight, normalize
        As ``fit_weights``.
    descriptor : str, optional
        The pattern descriptor that names stimuli (``None`` reads ``stimulus``, else ``index`` with a warning (``rdl_neuro.rdm.stimulus_ids_of``)); components and brain must
        list the same stimuli in the same order.

    Returns
    -------
    theta : ndarray ``(c,)``
        The fitted weights (rsatoolbox issue 313 asks for them).
    prediction : rsatoolbox RDMs
        The weighted model's RDM, with the components' pattern descriptors.
    """
    comps, comp_ids = from_rsatoolbox(components, descriptor)
    data, data_ids = from_rsatoolbox(brain, descriptor)
    if list(comp_ids) != list(data_ids):
        diff = [a for a, b in zip(comp_ids, data_ids) if a != b][:5]
        raise ValueError(f"the components and the brain RDMs cover other stimuli (or another order): "
                         f"{len(comp_ids)} vs {len(data_ids)} stimuli, first differing ids {diff}")
    # imported here: rdl_neuro.inference (crossvalidation) imports this package
    from rdl_neuro.inference.noise_ceiling import pool_rdm

    theta = fit_weights(comps, pool_rdm(data.to(torch.float64), method)[0], method, nonneg=nonneg,
                        ridge_weight=ridge_weight, normalize=normalize)
    pred = predict_weighted(comps, theta).numpy()[None]
    return theta.numpy(), RDMs(pred, dissimilarity_measure=components.dissimilarity_measure,
                               pattern_descriptors=dict(components.pattern_descriptors))
