"""Probes the Trainer runs after every epoch; their numbers go into the history.

``RDMProbe``
    The student-teacher RDM correlation on a fixed stimulus set: how well the
    student fits its teacher.
``HeldOutProbe``
    The student-brain comparison on stimuli held out from the teacher (and on
    subjects held out, where the brain RDMs hold several): whether what the
    student learns from the teacher generalises to new images and new people.

A probe must not change training: it runs without gradients, in eval mode,
puts the model back in the mode it found it in and leaves every random
number generator as it was.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rsatoolbox.rdm import RDMs

from rdl_neuro.data.ids import check_id_kinds, duplicate_ids, id_tensor, plain_ids
from rdl_neuro.model.layer_rdms import layer_rdms
from rdl_neuro.model.recorder import LayerRecorder
from rdl_neuro.rdm.calc import check_method, compute_rdm, is_square_rdm, subset_rdms, to_condensed
from rdl_neuro.rdm.compare import COMPARE_METHODS, compare_rdms
from rdl_neuro.rdm.interop import from_rsatoolbox, rdm_names
from rdl_neuro.train.losses import RDM_EPS
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

__all__ = ["RDMProbe", "HeldOutProbe"]


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


@dataclass
class HeldOutProbe:
    """Student-brain comparison on stimuli (and subjects) held out from the teacher, logged every epoch.

    After every epoch the student's RDM of each probed layer over the held-out
    stimuli (``rdl_neuro.model.layer_rdms``) is compared
    (``rdl_neuro.rdm.compare_rdms``) with every brain RDM over the same
    stimuli. The history gets, per layer,

    ``heldout_<compare>_<layer>``
        the mean over the held-out subjects: new stimuli *and* new people;
    ``heldout_stim_<compare>_<layer>``
        (only when ``heldout_subjects`` leaves some brain RDMs out) the mean
        over the other brain RDMs -- the teacher's subjects -- on the same
        held-out stimuli: new stimuli only.

    The probe does not change training: the layer RDMs are computed without
    gradients in eval mode (dropout off, batch-norm statistics frozen), the
    model goes back to the mode it was in, and the random number generators
    are restored (``torch.random.fork_rng``), so a run with the probe gives
    bit-identical weights to one without.

    Attributes
    ----------
    stimuli : Tensor ``(n, ...)``
        The held-out inputs (floats, scaled as in training), in the order of ``stimulus_ids``.
    stimulus_ids : sequence or Tensor ``(n,)``
        Their ids (unique; at least 3); every one must be a stimulus of ``brain_rdms``.
        The Trainer refuses ids that a loss's RDM teacher covers: those are not held out.
    brain_rdms : rsatoolbox.rdm.RDMs
        One RDM per subject (or session) over at least the held-out stimuli,
        ids in the pattern descriptor ``descriptor``.
    layers : str or sequence of str
        Student layers (names from ``model.named_modules()``).
    method : str
        RDM method of the student's features (``rdl_neuro.rdm.METHODS``);
        default ``correlation``, the usual measure of brain RDMs.
    compare : str
        Comparison method (``rdl_neuro.rdm.COMPARE_METHODS``).
    heldout_subjects : sequence, optional
        The held-out subjects: values of ``rdm_descriptors[subject_descriptor]``
        of ``brain_rdms``. Default: every brain RDM counts as held out.
    subject_descriptor : str
        The rdm descriptor that names subjects (rsatoolbox's ``index``, the
        positions 0..m-1, by default).
    descriptor : str, optional
        The pattern descriptor of ``brain_rdms`` holding the stimulus ids
        (default ``stimulus``, else ``index`` with a warning).
    batch_size : int
        Stimuli per forward pass.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from rdl_neuro.model import build_model
    >>> from rdl_neuro.rdm import to_rsatoolbox
    >>> from rdl_neuro.train import HeldOutProbe
    >>> brain = to_rsatoolbox(np.random.default_rng(0).random((3, 15)), stimulus_ids=[10, 11, 12, 13, 14, 15],
    ...                       rdm_descriptors={"subject": ["A", "B", "C"]})
    >>> probe = HeldOutProbe(torch.randn(4, 1, 2, 2), [12, 13, 14, 15], brain, "hidden1",
    ...                      heldout_subjects=["C"], subject_descriptor="subject")
    >>> net = build_model({"type": "mlp", "input_shape": [1, 2, 2], "hidden": [8], "n_classes": 3})
    >>> sorted(probe.measure(net, torch.device("cpu")))
    ['heldout_corr_hidden1', 'heldout_stim_corr_hidden1']
    """

    stimuli: torch.Tensor
    stimulus_ids: Any
    brain_rdms: RDMs
    layers: str | Sequence[str]
    method: str = "correlation"
    compare: str = "corr"
    heldout_subjects: Sequence[Any] | None = None
    subject_descriptor: str = "index"
    descriptor: str | None = None
    batch_size: int = 256
    _brain: torch.Tensor = field(init=False, repr=False, compare=False)
    _held: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_method(self.method)
        check_method(self.compare, COMPARE_METHODS, "comparison method")
        if isinstance(self.layers, str):
            self.layers = [self.layers]
        self.layers = list(self.layers)
        if not isinstance(self.stimuli, torch.Tensor):
            raise TypeError(f"held-out probe: stimuli must be a tensor (n, ...) of inputs, "
                            f"got {type(self.stimuli).__name__}")
        if not isinstance(self.brain_rdms, RDMs):
            raise TypeError(f"held-out probe: brain_rdms must be rsatoolbox.rdm.RDMs, "
                            f"got {type(self.brain_rdms).__name__}")
        ids = plain_ids(self.stimulus_ids)
        if len(ids) != self.stimuli.shape[0]:
            raise ValueError(f"held-out probe: {len(ids)} stimulus ids for {self.stimuli.shape[0]} stimuli")
        if duplicate_ids(ids):
            raise ValueError(f"held-out probe: duplicate stimulus ids {duplicate_ids(ids)[:5]}")
        if len(ids) < 3:
            raise ValueError(f"held-out probe: an RDM comparison needs at least 3 stimuli, got {len(ids)}")
        self.stimulus_ids = ids
        brain, brain_ids = from_rsatoolbox(self.brain_rdms, self.descriptor)
        check_id_kinds(ids, brain_ids, "the held-out stimuli", "brain_rdms")
        index = {sid: k for k, sid in enumerate(brain_ids)}
        missing = [sid for sid in ids if sid not in index]
        if missing:
            raise ValueError(f"held-out probe: {len(missing)} held-out stimulus ids are not in brain_rdms: "
                             f"{missing[:10]}{' ...' if len(missing) > 10 else ''} (brain ids start "
                             f"{brain_ids[:5]})")
        self._brain = subset_rdms(brain, [index[sid] for sid in ids])  # (m, P) in the held-out order
        valid = (~torch.isnan(self._brain)).sum(1)
        if bool((valid < 3).any()):
            bad = [name for name, v in zip(rdm_names(self.brain_rdms), valid.tolist()) if v < 3]
            raise ValueError(f"held-out probe: brain RDM(s) {bad[:5]} have fewer than 3 dissimilarities (not NaN) "
                             "among the held-out stimuli; a comparison needs at least 3")
        self._held = self._subject_mask()

    def _subject_mask(self) -> torch.Tensor:
        """``(m,)`` bool: which brain RDMs belong to held-out subjects."""
        m = self.brain_rdms.n_rdm
        if self.heldout_subjects is None:
            return torch.ones(m, dtype=torch.bool)
        descriptors = self.brain_rdms.rdm_descriptors
        if self.subject_descriptor not in descriptors:
            raise KeyError(f"held-out probe: brain_rdms have no rdm descriptor {self.subject_descriptor!r} "
                           f"(they have {sorted(descriptors)})")
        subjects = list(descriptors[self.subject_descriptor])
        wanted = list(self.heldout_subjects)
        unknown = [s for s in wanted if s not in subjects]
        if unknown or not wanted:
            raise ValueError(f"held-out probe: heldout_subjects {unknown or wanted} are not among the brain "
                             f"RDMs' {self.subject_descriptor!r} values {list(dict.fromkeys(subjects))}")
        return torch.tensor([s in wanted for s in subjects])

    @property
    def columns(self) -> list[str]:
        """The history columns this probe writes."""
        out = [f"heldout_{self.compare}_{layer}" for layer in self.layers]
        if not bool(self._held.all()):
            out += [f"heldout_stim_{self.compare}_{layer}" for layer in self.layers]
        return out

    def measure(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """The probe's history columns (see the class docstring) for the model as it is now."""
        devices = [device] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # whatever the model's forward draws, training will not see
            rdms = layer_rdms(model, self.stimuli, self.layers, self.method, batch_size=self.batch_size,
                              stimulus_ids=self.stimulus_ids, progress=False, device=device)
        student = torch.as_tensor(rdms.get_vectors(), dtype=torch.float64)
        r = compare_rdms(student, self._brain, self.compare)  # (layers, m)
        out = {}
        for layer, row in zip(self.layers, r):
            out[f"heldout_{self.compare}_{layer}"] = float(torch.nanmean(row[self._held]))
            if not bool(self._held.all()):
                out[f"heldout_stim_{self.compare}_{layer}"] = float(torch.nanmean(row[~self._held]))
        return out
