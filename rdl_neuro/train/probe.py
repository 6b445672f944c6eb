"""``RDMProbe``: the student-teacher RDM correlation on a fixed stimulus set, logged every epoch."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rdl_neuro.data.ids import id_tensor
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.rdm.calc import compute_rdm, is_square_rdm, to_condensed
from rdl_neuro.rdm.compare import compare_rdms
from rdl_neuro.train.losses import RDM_EPS
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher


@dataclass
class RDMProbe:
    """Student-teacher RDM correlation on a fixed stimulus set, logged every epoch.

    Attributes
    ----------
    stimuli : Tensor ``(n, ...)``
        The teacher's stimuli, in the order of ``stimulus_ids``.
    stimulus_ids : Tensor or sequence ``(n,)``
    teacher : Tensor, RDMTeacher or NetworkTeacher
        Condensed teacher RDMs ``(n(n-1)/2,)`` or ``(k, n(n-1)/2)`` (or a square
        ``(n, n)``) over the stimuli in this order; an ``RDMTeacher`` (its RDMs
        over these ids, missing pairs as NaN); or a ``NetworkTeacher`` whose
        layer RDMs are computed on the stimuli.
    layers : str, sequence of str, or mapping student layer -> teacher layer
        The mapping form is needed with a ``NetworkTeacher``; a fixed RDM is
        compared with every listed student layer.
    method : str
        RDM method for the student (and network teacher) features (``rdl_neuro.rdm``).
    compare : str
        ``compare_rdms`` method; the history holds the mean over teacher RDMs
        in column ``rdm_<compare>_<student layer>``.
    """

    stimuli: torch.Tensor
    stimulus_ids: Any
    teacher: Any
    layers: str | Sequence[str] | Mapping[str, str]
    method: str = "euclidean"
    compare: str = "corr"
    _teacher_cache: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def layer_map(self) -> dict[str, str | None]:
        """Student layer -> teacher layer (``None`` for a fixed RDM teacher)."""
        if isinstance(self.layers, str):
            return {self.layers: None}
        if isinstance(self.layers, Mapping):
            return dict(self.layers)
        return {layer: None for layer in self.layers}

    def teacher_rdms(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Condensed teacher RDMs ``(k, n_pairs)`` per student layer of the probe."""
        probe = self
        ids = id_tensor(probe.stimulus_ids, "rdm_probe stimulus_ids")
        layers = probe.layer_map()
        teacher = probe.teacher
        n = int(ids.shape[0])
        if isinstance(teacher, (torch.Tensor, np.ndarray)):
            t = torch.as_tensor(teacher, dtype=torch.float64)
            # (n, n) is one square RDM; for n = 3 it could also be 3 condensed RDMs: square when it reads as one
            if t.ndim == 2 and t.shape == (n, n) and (n * (n - 1) // 2 != n or is_square_rdm(t)):
                t = to_condensed(t)
            t = t.reshape(-1, t.shape[-1])
            if t.shape[-1] != n * (n - 1) // 2:
                raise ValueError(f"rdm_probe: teacher RDMs have {t.shape[-1]} entries, but {n} stimuli "
                                 f"need {n * (n - 1) // 2}")
            return {s: t for s in layers}
        if isinstance(teacher, RDMTeacher):
            # every stored RDM (all subjects with combine="per_rdm"), named explicitly so the
            # probe neither draws one at random nor advances the generator the loss draws from
            conds = []
            for k in range(teacher.n_rdms):
                target, mask = teacher.batch_target(ids, rdm_index=k)
                cond = to_condensed(torch.as_tensor(target, dtype=torch.float64))
                conds.append(cond.masked_fill(~to_condensed(torch.as_tensor(mask).to(torch.bool)), float("nan")))
            cond = torch.stack(conds)
            return {s: cond for s in layers}
        if not isinstance(teacher, NetworkTeacher):
            raise TypeError("rdm_probe: teacher must be a tensor or array of RDMs, an RDMTeacher or a NetworkTeacher, "
                            f"got {type(teacher).__name__}")
        if any(t is None for t in layers.values()):
            raise ValueError("rdm_probe: with a network teacher, layers must map student layer -> teacher layer")
        with torch.no_grad():
            _, feats = teacher(probe.stimuli.to(device), stimulus_ids=ids.to(device))
        # the loss's floor: a probe stimulus with a constant teacher pattern must not stop training
        return {s: compute_rdm(feats[t].flatten(1).double().cpu(), probe.method, eps=RDM_EPS).unsqueeze(0)
                for s, t in layers.items()}

    @torch.no_grad()
    def measure(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """``{"rdm_<compare>_<layer>": mean comparison over teacher RDMs}`` for the model as it is now."""
        probe = self
        if self._teacher_cache is None:
            # teachers are fixed (a NetworkTeacher is frozen): their RDMs are computed once
            self._teacher_cache = self.teacher_rdms(device)
        teacher_rdms = self._teacher_cache
        model.eval()
        layers = list(probe.layer_map())
        with LayerRecorder(model, layers, detach=True) as rec:
            model(probe.stimuli.to(device))
            feats = rec.features
        out = {}
        for layer in layers:
            # eps: a probe stimulus with an all-zero layer must not stop training (see compute_rdm)
            student = compute_rdm(feats[layer].double().cpu(), probe.method, eps=RDM_EPS)
            r = compare_rdms(student, teacher_rdms[layer], probe.compare)
            out[f"rdm_{probe.compare}_{layer}"] = float(torch.nanmean(r))
        return out
