"""RSA models with and without fitted parameters, as rsatoolbox's ``rsatoolbox.model``.

=====================  ==========================================  ======================
class                  prediction                                  fitters (``FITTERS``)
=====================  ==========================================  ======================
``FixedModel``         one RDM (the mean of the RDMs given)        none
``WeightedModel``      ``theta @ components`` (``c >= 2``)         ``regress`` (least squares), ``regress_nn``
                                                                   (non-negative), ``optimize``,
                                                                   ``optimize_positive`` (maximise the comparison)
``SelectModel``        the RDM ``theta`` of a set                  ``select``
``InterpolateModel``   ``w * rdm_i + (1 - w) * rdm_{i+1}``         ``interpolate``
=====================  ==========================================  ======================

Each fitter returns the parameters (``theta``) as rsatoolbox's fitter of the
same name does (``fit_regress``, ``fit_regress_nn``, ``fit_optimize``,
``fit_optimize_positive``, ``fit_select``, ``fit_interpolate``): least squares
from the normal equations (``rdl_neuro.model.fitted``), selection by the mean
comparison, interpolation by scipy's bounded scalar minimiser, and the
``optimize`` fitters by L-BFGS on torch gradients of the comparison
(``DIFFERENTIABLE_METHODS``) or Powell's method (rank comparisons). Unlike
rsatoolbox's ``fit_optimize`` the starting points are fixed (the uniform
weights and each component), so a fit is reproducible.

rsatoolbox ``Model`` objects are accepted wherever these are (``as_models``);
``fit_model`` is the one fitting routine, on tensors that may hold NaN for
the pairs of a stimulus drawn twice (bootstrap resamples), as rsatoolbox's.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from rsatoolbox.rdm import RDMs

from rdl_neuro.model.fitted import FIT_METHODS, fit_weights
from rdl_neuro.rdm.compare import COMPARE_METHODS, DIFFERENTIABLE_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names

__all__ = ["FITTERS", "RSAModel", "FixedModel", "WeightedModel", "SelectModel", "InterpolateModel", "as_models",
           "as_fitter", "fit_model"]

#: Fitters of the models (rsatoolbox's ``fit_<name>``); ``None`` is the fixed model's (nothing to fit).
FITTERS = ("regress", "regress_nn", "optimize", "optimize_positive", "select", "interpolate")

_KIND_FITTERS = {"fixed": (None,), "weighted": ("regress", "regress_nn", "optimize", "optimize_positive"),
                 "select": ("select",), "interpolate": ("interpolate",)}


class RSAModel:
    """A named RSA model over a set of RDMs (base of the four kinds; see the module docstring).

    Parameters
    ----------
    name : str
    rdms : rsatoolbox RDMs
        The model's RDMs (``c`` of them) with their stimulus descriptor.
    fitter : str or callable, optional
        One of ``FITTERS`` valid for the kind, or an rsatoolbox fitter
        (``fit_regress``, ``Fitter(fit_regress, ridge_weight=1)``, ...);
        default: the kind's ``default_fitter``.
    **options
        Fitter options (``ridge_weight``, ``normalize``), as rsatoolbox's.

    Attributes
    ----------
    kind : str
        ``fixed``, ``weighted``, ``select`` or ``interpolate``.
    rdms : rsatoolbox RDMs
    fitter : str or None
    options : dict
    """

    kind = "fixed"
    default_fitter: str | None = None

    def __init__(self, name: str, rdms: RDMs, fitter: Any = None, **options: Any) -> None:
        if not isinstance(rdms, RDMs):
            raise TypeError(f"model {name!r}: rdms must be rsatoolbox.rdm.RDMs, got {type(rdms).__name__}")
        self.name = str(name)
        self.rdms = rdms
        fit_name, fit_options = as_fitter(self.default_fitter if fitter is None else fitter)
        if fit_name not in _KIND_FITTERS[self.kind]:
            raise ValueError(f"model {self.name!r} ({self.kind}) is fitted by {_KIND_FITTERS[self.kind]}, "
                             f"not {fit_name!r}")
        self.fitter = fit_name
        self.options = {**fit_options, **options}
        self._check()

    def _check(self) -> None:
        pass

    @property
    def n_rdm(self) -> int:
        """Number of RDMs the model holds (``c``)."""
        return self.rdms.n_rdm

    def components(self, descriptor: str | None = None) -> torch.Tensor:
        """The model's RDMs as a tensor ``(c, P)`` float64 (stimulus order of ``rdms``)."""
        return from_rsatoolbox(self.rdms, descriptor)[0].to(torch.float64)

    def predict(self, theta: Any = None, components: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted RDM ``(P,)`` for parameters ``theta`` (rsatoolbox ``Model.predict``).

        ``components ((..., c, P))`` replaces the model's own RDMs (e.g. cut to
        a fold's stimuli).
        """
        comps = self.components() if components is None else components
        return predict_with(self.kind, comps, theta)

    def predict_rdm(self, theta: Any = None) -> RDMs:
        """The predicted RDM as rsatoolbox ``RDMs`` with the model's stimulus descriptors."""
        return RDMs(self.predict(theta).numpy()[None], dissimilarity_measure=self.rdms.dissimilarity_measure,
                    pattern_descriptors=dict(self.rdms.pattern_descriptors))

    def fit(self, brain: RDMs, method: str = "corr", descriptor: str | None = None) -> np.ndarray:
        """Fit to brain RDMs on all stimuli; returns ``theta`` (see ``fit_model``).

        The brain RDMs must cover the model's stimuli (matched by id, cut to them).
        """
        from rdl_neuro.inference.evaluate import prepare_rdms

        comps, data, _ = prepare_rdms(self.rdms, brain, method, descriptor)
        return fit_model(self.kind, comps, data, method, self.fitter, **self.options)

    def to_rsatoolbox(self):
        """The rsatoolbox ``Model`` of the same kind, with the fitter as its ``default_fitter``."""
        from rsatoolbox import model as rsm
        from rsatoolbox.model import fitter as rsf

        cls = {"fixed": rsm.ModelFixed, "weighted": rsm.ModelWeighted, "select": rsm.ModelSelect,
               "interpolate": rsm.ModelInterpolate}[self.kind]
        out = cls(self.name, self.rdms)
        if self.fitter is not None:
            func = getattr(rsf, f"fit_{self.fitter}")
            out.default_fitter = rsf.Fitter(func, **self.options) if self.options else func
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.n_rdm} RDMs, fitter={self.fitter!r})"


class FixedModel(RSAModel):
    """A model without parameters: one RDM (several are averaged, as rsatoolbox's ``ModelFixed``).

    Examples
    --------
    >>> import numpy as np
    >>> rdm = RDMs(np.arange(6.0)[None], pattern_descriptors={"stimulus": np.arange(4)})
    >>> FixedModel("ramp", rdm).predict()
    tensor([0., 1., 2., 3., 4., 5.], dtype=torch.float64)
    """

    kind = "fixed"
    default_fitter = None

    def __init__(self, name: str, rdms: RDMs, fitter: Any = None, **options: Any) -> None:
        if isinstance(rdms, RDMs) and rdms.n_rdm > 1:
            rdms = RDMs(rdms.get_vectors().mean(0, keepdims=True), dissimilarity_measure=rdms.dissimilarity_measure,
                        pattern_descriptors=dict(rdms.pattern_descriptors))
        super().__init__(name, rdms, fitter, **options)


class WeightedModel(RSAModel):
    """A weighted sum of ``c >= 2`` component RDMs (rsatoolbox's ``ModelWeighted``); default fitter ``regress``.

    Examples
    --------
    >>> import numpy as np
    >>> comps = RDMs(np.array([[1.0, 2, 3, 4, 5, 6], [6, 1, 5, 2, 4, 3]]),
    ...              pattern_descriptors={"stimulus": np.arange(4)})
    >>> brain = RDMs(np.array([[8.0, 5, 11, 10, 14, 15], [8, 5, 11, 10, 14, 15]]),
    ...              pattern_descriptors={"stimulus": np.arange(4)})
    >>> theta = WeightedModel("w", comps).fit(brain, "cosine")
    >>> np.round(theta / theta[1], 6)
    array([2., 1.])
    """

    kind = "weighted"
    default_fitter = "regress"

    def _check(self) -> None:
        if self.rdms.n_rdm < 2:
            raise ValueError(f"weighted model {self.name!r} has {self.rdms.n_rdm} component RDM; a weighted model "
                             "needs at least 2 (a single RDM is a FixedModel)")


class SelectModel(RSAModel):
    """The best of a set of RDMs, chosen on the training data (rsatoolbox's ``ModelSelect``); ``theta`` is its index."""

    kind = "select"
    default_fitter = "select"


class InterpolateModel(RSAModel):
    """Linear interpolation between neighbouring RDMs of a sequence (rsatoolbox's ``ModelInterpolate``).

    ``theta (c,)`` has two neighbouring non-zero entries ``w, 1 - w``.
    """

    kind = "interpolate"
    default_fitter = "interpolate"

    def _check(self) -> None:
        if self.rdms.n_rdm < 2:
            raise ValueError(f"interpolation model {self.name!r} needs at least 2 RDMs, got {self.rdms.n_rdm}")


_CLASSES = {"ModelFixed": FixedModel, "ModelWeighted": WeightedModel, "ModelSelect": SelectModel,
            "ModelInterpolate": InterpolateModel}


def as_fitter(fitter: Any) -> tuple[str | None, dict]:
    """``(name, options)`` of a fitter given by name, by rsatoolbox function or ``Fitter`` object.

    Examples
    --------
    >>> from rsatoolbox.model.fitter import Fitter, fit_regress
    >>> as_fitter(Fitter(fit_regress, ridge_weight=1.0))
    ('regress', {'ridge_weight': 1.0})
    """
    if fitter is None or isinstance(fitter, str):
        if fitter is not None and fitter not in FITTERS:
            raise ValueError(f"unknown fitter {fitter!r}; known: {FITTERS}")
        return fitter, {}
    options: dict = {}
    if hasattr(fitter, "fit_fun") and hasattr(fitter, "kwargs"):  # rsatoolbox.model.Fitter
        fitter, options = fitter.fit_fun, dict(fitter.kwargs)
    name = getattr(fitter, "__name__", "")
    if name == "fit_mock":
        return None, options
    if name.startswith("fit_") and name[4:] in FITTERS and getattr(fitter, "__module__", "").startswith("rsatoolbox"):
        return name[4:], options
    raise ValueError(f"fitter {fitter!r} is not one of rsatoolbox's fit_{{{', '.join(FITTERS)}}} or a name in "
                     f"{FITTERS}")


def as_models(models: Any, fitter: Any = None) -> list[RSAModel]:
    """A list of ``RSAModel`` from ours, rsatoolbox ``Model`` objects or ``RDMs`` (one ``FixedModel`` per RDM).

    Parameters
    ----------
    models : RSAModel, rsatoolbox Model or RDMs, or a sequence of them
    fitter : str, callable or sequence, optional
        Overrides the models' fitters: one for all, or one per model
        (rsatoolbox's ``fitter`` argument).

    Returns
    -------
    list of RSAModel
    """
    from rsatoolbox.model import Model

    items = [models] if isinstance(models, (RSAModel, Model, RDMs)) else list(models)
    out: list[RSAModel] = []
    for i, item in enumerate(items):
        if isinstance(item, RSAModel):
            out.append(item)
        elif isinstance(item, RDMs):
            out += [FixedModel(name, item[j]) for j, name in enumerate(rdm_names(item))]
        elif isinstance(item, Model):
            cls = _CLASSES.get(type(item).__name__)
            if cls is None or item.rdm_obj is None:
                raise TypeError(f"models[{i}]: rsatoolbox {type(item).__name__} is not convertible (ModelFixed, "
                                "ModelWeighted, ModelSelect, ModelInterpolate are)")
            default = item.default_fitter
            out.append(cls(item.name, item.rdm_obj, fitter=None if cls is FixedModel else default))
        else:
            raise TypeError(f"models[{i}] must be an RSAModel, an rsatoolbox Model or RDMs, got {type(item).__name__}")
    if fitter is not None:
        fitters = list(fitter) if isinstance(fitter, (list, tuple)) else [fitter] * len(out)
        if len(fitters) != len(out):
            raise ValueError(f"{len(fitters)} fitters given for {len(out)} models")
        out = [m if f is None or m.kind == "fixed" else type(m)(m.name, m.rdms, f) for m, f in zip(out, fitters)]
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        warnings.warn(f"model names repeat: {names}", UserWarning, stacklevel=2)
    return out


def predict_with(kind: str, components: torch.Tensor, theta: Any) -> torch.Tensor:
    """The prediction ``(..., P)`` of a model ``kind`` from its RDMs ``(..., c, P)`` and ``theta``."""
    if kind == "fixed":
        return components.mean(-2)
    if kind == "select":
        return components[..., int(0 if theta is None else theta), :]
    if theta is None:
        theta = np.ones(components.shape[-2])
        if kind == "interpolate":
            theta = np.zeros(components.shape[-2])
            theta[:2] = 0.5
    theta = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    return (theta.unsqueeze(-2) @ components).squeeze(-2)


def fit_model(kind: str, components: torch.Tensor, brain: torch.Tensor, method: str, fitter: str | None,
              ridge_weight: float = 0.0, normalize: bool = True) -> np.ndarray | int:
    """Fit a model's parameters to brain RDMs, as rsatoolbox's fitter of the same name.

    Parameters
    ----------
    kind : str
        ``fixed``, ``weighted``, ``select`` or ``interpolate``.
    components : Tensor ``(c, P)``
        The model's RDMs over the training stimuli.
    brain : Tensor ``(m, P)``
        The training brain RDMs over the same stimuli; NaN entries (pairs of
        a stimulus drawn twice) are left out, as rsatoolbox does.
    method : str
        The comparison maximised (``regress`` fitters: ``corr`` or ``cosine``).
    fitter : str or None
        One of ``FITTERS`` (None: fixed, nothing to fit).
    ridge_weight, normalize
        As rsatoolbox's fitters (weighted models).

    Returns
    -------
    ndarray ``(c,)`` (weighted, interpolate), int (select) or an empty array (fixed)
    """
    if method not in COMPARE_METHODS:
        raise ValueError(f"unknown comparison method {method!r}; known: {COMPARE_METHODS}")
    components, brain = components.to(torch.float64), brain.to(torch.float64)
    if fitter is None:
        return np.zeros(0)
    if fitter == "select":
        return int(np.argmax(compare_rdms(components, brain, method).mean(1).numpy()))
    if fitter in ("regress", "regress_nn"):
        if method not in FIT_METHODS:
            raise ValueError(f"the {fitter!r} fitter maximises {FIT_METHODS}, not {method!r}; use 'optimize'")
        # imported here: rdl_neuro.inference (crossvalidation) imports this package
        from rdl_neuro.inference.noise_ceiling import pool_rdm

        target = pool_rdm(brain, method)[0]
        keep = ~torch.isnan(target) & ~torch.isnan(components).any(0)
        return fit_weights(components[:, keep], target[keep], method, nonneg=fitter == "regress_nn",
                           ridge_weight=ridge_weight, normalize=normalize).numpy()
    if fitter == "interpolate":
        return _fit_interpolate(components, brain, method)
    if fitter in ("optimize", "optimize_positive"):
        return _fit_optimize(components, brain, method, fitter == "optimize_positive", ridge_weight, normalize)
    raise ValueError(f"unknown fitter {fitter!r}; known: {FITTERS}")


def _fit_interpolate(components: torch.Tensor, brain: torch.Tensor, method: str) -> np.ndarray:
    """rsatoolbox's ``fit_interpolate``: a bounded scalar search per neighbouring pair, the best pair kept."""
    from scipy.optimize import minimize_scalar

    results = []
    for i in range(components.shape[0] - 1):
        pair = components[i:i + 2]

        def loss(w: float, pair: torch.Tensor = pair) -> float:
            pred = (w * pair[0] + (1 - w) * pair[1])[None]
            return -float(compare_rdms(pred, brain, method).mean())

        results.append(minimize_scalar(loss, np.array([0.5]), method="bounded", bounds=(0, 1)))
    best = int(np.argmin([r.fun for r in results]))
    theta = np.zeros(components.shape[0])
    theta[best], theta[best + 1] = results[best].x, 1 - results[best].x
    return theta


def _fit_optimize(components: torch.Tensor, brain: torch.Tensor, method: str, positive: bool, ridge_weight: float,
                  normalize: bool) -> np.ndarray:
    """Weights maximising the mean comparison (minus a ridge term), from fixed starting points; the best kept."""
    c = components.shape[0]

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        w = theta**2 if positive else theta
        return -compare_rdms((w @ components)[None], brain, method).mean() + ridge_weight * (w * w).sum()

    starts = [np.full(c, 1.0)] + [np.where(np.arange(c) == i, 1.0, 1e-3) for i in range(c)]
    best, best_loss = None, np.inf
    for start in starts:
        theta = torch.tensor(start, dtype=torch.float64, requires_grad=method in DIFFERENTIABLE_METHODS)
        if method in DIFFERENTIABLE_METHODS:
            opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                                    line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = loss_of(theta)
                loss.backward()
                return loss

            opt.step(closure)
            value, found = float(loss_of(theta.detach())), theta.detach().numpy()
        else:  # rank comparisons are piecewise constant: no gradient, a direction-set search
            from scipy.optimize import minimize

            res = minimize(lambda t: float(loss_of(torch.as_tensor(t))), start, method="Powell",
                           options={"xtol": 1e-8, "ftol": 1e-12})
            value, found = float(res.fun), res.x
        if value < best_loss:
            best, best_loss = found, value
    theta = best**2 if positive else best
    norm = np.sqrt(np.sum(theta**2))
    return theta / norm if normalize and norm > 0 else theta
