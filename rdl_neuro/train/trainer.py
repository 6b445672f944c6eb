"""``Trainer``: the RDL training loop -- loss terms with weight schedules, history, checkpoints, torchrun.

The loss is ``sum_name weight_name(epoch) * term_name(step)`` over the terms
given as ``{name: loss}`` or ``{name: (loss, weight)}``, each a
``rdl_neuro.train.losses.TransferLoss`` (cross-entropy, RDL, KD, RKD, SP, CKA) that
reads a :class:`~rdl_neuro.train.losses.StepOutputs`. A weight is a float or a
callable ``epoch -> float`` (epochs count from 0; see :func:`linear_warmup`).

Reproducibility
    Every source of randomness is derived from ``(seed, epoch)``: the order of
    the training samples (or the ``CoverageBatchSampler`` epoch) and the torch
    generator that drives dropout, reseeded at the start of every epoch. So a
    run resumed at an epoch boundary replays exactly what the uninterrupted
    run did; the RNG states saved in the checkpoint are restored too, for code
    outside the trainer that draws from the global generators. Two runs with
    the same seed (and a model built after :func:`seed_everything`) give
    bit-identical weights on CPU.

Files (``out_dir``; only rank 0 writes)
    ``history.csv``                  one row per epoch, rewritten atomically every epoch
    ``checkpoints/epoch-XXXX.pt``    after every epoch; the last ``keep_checkpoints`` (2) are kept
    ``final.pt``                     the same dict after the last epoch
    Every file is written to a temporary file and renamed (``rdl_neuro.io``),
    so a kill at any moment leaves only complete files (plus, at worst, a
    hidden ``.name.tmp-*`` file that the next run removes).

Checkpoint format (``torch.load(path, weights_only=True)`` reads it)
    ``model_state``, ``model_config`` (dict for ``rdl_neuro.model.networks.build_model``
    or None), ``optimizer_state``, ``scheduler_state`` (None without a
    scheduler), ``rng_state``, ``history`` (list of per-epoch records),
    ``epoch`` (number of completed epochs), ``seed``, ``format``.

Resume policy
    ``resume=True`` loads the newest ``epoch-*.pt``. Should it be unreadable
    (it cannot be half-written by this code, but disks and people damage
    files) the trainer warns with a :class:`CorruptCheckpointWarning` naming
    it and falls back to the previous good checkpoint; only when no checkpoint
    can be read does it raise :class:`CheckpointError`, naming every file
    tried. No checkpoint at all starts a fresh run. ``resume=False`` starts
    over and removes earlier ``epoch-*.pt`` files of ``out_dir`` (with a warning).

Distributed (``torchrun``)
    When launched with ``WORLD_SIZE > 1`` the trainer joins (or creates) the
    process group -- NCCL where CUDA exists, gloo otherwise -- wraps the model
    in ``DistributedDataParallel``, gives every rank an equal contiguous slice
    of each *global* batch of ``batch_size`` samples, switches the RDM losses
    to ``gather=True`` (their RDMs span the global batch) and writes files on
    rank 0 only. The result equals the single-process run on the same global
    batches up to floating-point summation order. ``batch_size`` must be a
    multiple of the world size; the samples of a last global batch that do not
    divide evenly are skipped in that epoch (at most ``world_size - 1``).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rdl_neuro.train.batches import GlobalBatchSampler, coverage_sampler, skip_reason, unpack_batch
from rdl_neuro.train.checkpoints import CHECKPOINT_FORMAT, RunFiles, rng_state, set_rng_state
from rdl_neuro.train.distributed import pick_device, setup_process_group, wrap_data_parallel
from rdl_neuro.train.probe import HeldOutProbe, RDMProbe
from rdl_neuro.train.seeds import derive_seed

if TYPE_CHECKING:  # pragma: no cover
    from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

__all__ = ["Trainer", "Schedule", "linear_warmup"]

#: a loss weight: a constant, or a function of the epoch (0-based) such as :func:`linear_warmup`'s
Schedule = Union[float, Callable[[int], float]]

# --------------------------------------------------------------------------- #
# seeds and schedules
# --------------------------------------------------------------------------- #
def linear_warmup(weight: float, epochs: int, start: float = 0.0) -> Callable[[int], float]:
    """Schedule rising linearly from ``start`` to ``weight`` over the first ``epochs`` epochs.

    Epoch ``e`` (from 0) gets ``start + (weight - start) * min(1, (e + 1) / epochs)``,
    so the first epoch already trains with a non-zero weight.

    Examples
    --------
    >>> from rdl_neuro.train import linear_warmup
    >>> weight = linear_warmup(1.0, 4)
    >>> [weight(epoch) for epoch in range(6)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """
    if epochs < 1:
        raise ValueError(f"warm-up needs at least 1 epoch, got {epochs}")

    def schedule(epoch: int) -> float:
        return start + (weight - start) * min(1.0, (epoch + 1) / epochs)

    schedule.__qualname__ = f"linear_warmup({weight}, {epochs})"
    return schedule


def _weight_at(schedule: Schedule, epoch: int, name: str) -> float:
    value = schedule(epoch) if callable(schedule) else schedule
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"weight of loss term {name!r} at epoch {epoch} is {value!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"weight of loss term {name!r} at epoch {epoch} is {value}")
    return value


class _EpochSums:
    """Per-epoch sums of the logged values (each weighted by its batch size) and of the accuracy counts."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n_labelled = self.correct = self.n = 0

    def add(self, key: str, value: torch.Tensor, b: int) -> None:
        """Add ``value`` (a scalar) times the batch size ``b`` to ``key``."""
        self.sums[key] = self.sums.get(key, 0.0) + float(value.detach()) * b

    def count(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch's correct predictions; negative labels (cross-entropy's ignore_index -100) mark
        unlabelled samples, which count for the loss means only."""
        labelled = labels >= 0
        self.correct += int((logits.detach().argmax(1) == labels)[labelled].sum())
        self.n += int(labels.shape[0])
        self.n_labelled += int(labelled.sum())

    def means(self, world: int, device: torch.device) -> dict[str, float]:
        """``loss``, the other keys in sorted order, then ``train_acc``: means over the epoch's samples of
        every rank (so under torchrun the history holds the single-process numbers)."""
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys] + [float(self.n_labelled), float(self.correct),
                                                             float(self.n)], dtype=torch.float64)
        if world > 1:
            totals = totals.to(device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        n = float(totals[-1])
        out = {"loss": float(totals[keys.index("loss")]) / n}
        out.update({k: v / n for k, v in zip(keys, totals[:-3].tolist()) if k != "loss"})
        out["train_acc"] = float(totals[-2]) / max(float(totals[-3]), 1.0)
        return out


# --------------------------------------------------------------------------- #
# the trainer
# --------------------------------------------------------------------------- #
class Trainer:
    """Train a student with cross-entropy plus any weighted transfer losses.

    Parameters
    ----------
    model : nn.Module
        The student; maps ``(b, ...)`` inputs to logits ``(b, n_classes)``.
        Layers named by the losses are recorded with ``LayerRecorder``.
    train_data : Dataset
        Items ``(x, y)`` or ``(x, y, stimulus_id)`` (``StimulusDataset``);
        stimulus id ``-1`` (``UNCOVERED``) marks samples outside the teacher RDM.
        Label ``-100`` (cross-entropy's ``ignore_index``) marks unlabelled
        samples: they feed the transfer losses only, and ``train_acc`` skips them.
    losses : mapping name -> TransferLoss or (TransferLoss, weight)
        ``weight`` is a float or a callable ``epoch -> float`` (default 1).
    optimizer : torch.optim.Optimizer, optional
        Over ``model.parameters()``; default ``Adam(lr=1e-3)``.
    scheduler : LR scheduler, optional
        Stepped once per epoch.
    val_data : Dataset, optional
        Items like ``train_data``; gives ``val_loss`` (cross-entropy) and ``val_acc``.
    teacher : NetworkTeacher, optional
        Run on every batch when a loss needs teacher features or logits.
    batch_size : int
        Global batch size (split over ranks under torchrun).
    epochs : int
    seed : int
    out_dir : path, optional
        Where history and checkpoints go; None keeps everything in memory.
    resume : bool
        Continue from the newest checkpoint in ``out_dir`` (see the module docstring).
    quiet : bool
        No progress bars (they are off anyway when stderr is neither a terminal nor a notebook's).
    rdm_probe : RDMProbe, optional
        Student-teacher RDM correlation logged per epoch.
    heldout_probe : HeldOutProbe, optional
        Student-brain comparison on stimuli (and subjects) held out from the
        teacher, logged per epoch (``heldout_<compare>_<layer>``); its
        stimuli must not be covered by a loss's RDM teacher. It does not
        change training (same weights with and without it).
    min_covered : int
        With ``> 0``, batches come from ``CoverageBatchSampler``: at least
        this many samples per (global) batch whose stimulus id is covered;
        under torchrun each rank gets ``ceil(min_covered / world_size)``.
    coverage : RDMTeacher, optional
        Decides which ids are covered (``coverage.covers``); default: the
        RDM teacher of the losses when there is exactly one, else ids ``!= -1``.
    model_config : dict, optional
        Stored in checkpoints; default ``model.config`` if present.
    keep_checkpoints : int
        How many ``epoch-*.pt`` files to keep.
    device : str or torch.device, optional
        Default CUDA when available, else CPU (under torchrun with CUDA: ``cuda:LOCAL_RANK``).
    distributed : "auto", True or False
        "auto" joins torchrun when ``WORLD_SIZE > 1``.
    max_grad_norm : float, optional
        Clip the gradients' total 2-norm to this value before every optimizer
        step (``torch.nn.utils.clip_grad_norm_``); the history then holds the
        epoch's mean norm before clipping as ``grad_norm``.
    allow_skipped_terms : bool
        A transfer term that has no usable pair in *any* batch of an epoch
        (an RDL term whose teacher covers no two stimuli of any batch) would
        train without it, silently. By default the trainer then stops with a
        ValueError saying why (the data's ids and the teacher's do not
        overlap, or no batch held two covered stimuli); True lets such epochs
        pass (config key ``allow_skipped_terms``). Terms skipped in only some
        batches are always fine (counted in the loss's ``skipped_terms``).
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        *,
        losses: Mapping[str, Any],
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        val_data: Dataset | None = None,
        teacher: NetworkTeacher | None = None,
        batch_size: int = 32,
        epochs: int = 10,
        seed: int = 0,
        out_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        quiet: bool = False,
        rdm_probe: RDMProbe | None = None,
        heldout_probe: HeldOutProbe | None = None,
        min_covered: int = 0,
        coverage: RDMTeacher | None = None,
        model_config: Mapping[str, Any] | None = None,
        keep_checkpoints: int = 2,
        device: str | torch.device | None = None,
        distributed: bool | str = "auto",
        eval_batch_size: int = 1024,
        max_grad_norm: float | None = None,
        allow_skipped_terms: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive (or None for no clipping), got {max_grad_norm!r}")
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}")
        if len(train_data) == 0:  # type: ignore[arg-type]
            raise ValueError("train_data is empty")
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.teacher = teacher
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = int(seed)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.files = RunFiles(out_dir, keep_checkpoints) if out_dir is not None else None
        self.resume = resume
        self.quiet = quiet
        self.rdm_probe = rdm_probe
        self.heldout_probe = heldout_probe
        self.min_covered = int(min_covered)
        self.coverage = coverage
        self.keep_checkpoints = keep_checkpoints
        self.eval_batch_size = eval_batch_size
        self.max_grad_norm = max_grad_norm
        self.allow_skipped_terms = bool(allow_skipped_terms)
        cfg = model_config if model_config is not None else getattr(model, "config", None)
        self.model_config = dict(cfg) if cfg is not None else None

        self.world, self.rank, self._owns_group = setup_process_group(distributed)
        if self.world > 1 and batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} is not a multiple of the world size {self.world}")
        self.device = pick_device(device, self.world)
        self.model.to(self.device)

        self.terms = self._parse_losses(losses)
        self._check_heldout_probe()
        self.student_layers = tuple(dict.fromkeys(l for loss, _ in self.terms.values() for l in loss.student_layers))
        self._needs_teacher = any(loss.needs_teacher_logits or loss.teacher_layers for loss, _ in self.terms.values())
        if self._needs_teacher and teacher is None:
            names = [n for n, (l, _) in self.terms.items() if l.needs_teacher_logits or l.teacher_layers]
            raise ValueError(f"loss terms {names} need a network teacher, but teacher=None")
        if self.world > 1:
            for loss, _ in self.terms.values():
                # losses that couple the samples of a batch (RDL, RKD, SP, CKA: those with a ``gather``
                # attribute) must see the global batch, or DDP would average per-rank losses
                if hasattr(loss, "gather"):
                    loss.gather = True

        self.optimizer = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=1e-3)
        self.scheduler = scheduler
        self._records: list[dict[str, Any]] = []
        self.epoch = 0  # completed epochs
        self.ddp_model = wrap_data_parallel(self.model, self.device, self.world)

    # ----------------------------------------------------------------- setup
    def _parse_losses(self, losses: Mapping[str, Any]) -> dict[str, tuple[Any, Schedule]]:
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError("losses must be a non-empty mapping {name: loss or (loss, weight)}")
        from rdl_neuro.model.recorder import resolve_layers

        terms: dict[str, tuple[Any, Schedule]] = {}
        for name, spec in losses.items():
            loss, weight = (spec if isinstance(spec, tuple) else (spec, 1.0))
            if not hasattr(loss, "from_step"):
                raise TypeError(f"loss term {name!r} is a {type(loss).__name__}, not a rdl_neuro TransferLoss")
            if not callable(weight):
                _weight_at(weight, 0, name)
            if loss.student_layers:
                resolve_layers(self.model, list(loss.student_layers), what=f"student layer of loss {name!r}")
            if self.teacher is not None and getattr(loss, "teacher_layers", ()):
                known = set(getattr(self.teacher, "layers", ()) or ())
                missing = [l for l in loss.teacher_layers if known and l not in known]
                if missing:
                    raise KeyError(f"loss {name!r} needs teacher layers {missing}, but the teacher records "
                                   f"only {sorted(known)}")
            loss.to(self.device)
            terms[name] = (loss, weight)
        return terms

    def _check_heldout_probe(self) -> None:
        """The held-out probe's layers exist and its stimuli are held out from every RDM teacher of the losses."""
        probe = self.heldout_probe
        if probe is None:
            return
        if not isinstance(probe, HeldOutProbe):
            raise TypeError(f"heldout_probe must be a HeldOutProbe, got {type(probe).__name__}")
        from rdl_neuro.model.recorder import resolve_layers

        resolve_layers(self.model, probe.layers, what="layer of the held-out probe")
        for name, (loss, _) in self.terms.items():
            for teacher in getattr(loss, "rdm_teachers", []):
                known = set(teacher.ids)
                covered = [i for i in probe.stimulus_ids if i in known]
                if covered:
                    raise ValueError(f"heldout_probe: {len(covered)} of its stimuli are in the RDM teacher of loss "
                                     f"{name!r}, so they are not held out: {covered[:10]}"
                                     f"{' ...' if len(covered) > 10 else ''}")

    def _train_loader(self) -> DataLoader:
        if self.min_covered > 0:
            coverage = self.coverage
            if coverage is None:
                found = [t for loss, _ in self.terms.values() for t in getattr(loss, "rdm_teachers", [])]
                coverage = found[0] if len(found) == 1 else None
            sampler: Any = coverage_sampler(self.train_data, coverage, self.batch_size, self.min_covered,
                                            self.seed, self.world, self.rank)
        else:
            sampler = GlobalBatchSampler(len(self.train_data), self.batch_size, self.seed, True,  # type: ignore[arg-type]
                                         self.world, self.rank)
        return DataLoader(self.train_data, batch_sampler=sampler, num_workers=0)

    # ------------------------------------------------------------ properties
    @property
    def history(self) -> pd.DataFrame:
        """One row per completed epoch: every loss term, accuracies, RDM correlations."""
        return pd.DataFrame.from_records(self._records)

    @property
    def checkpoint_dir(self) -> Path | None:
        """``out_dir / "checkpoints"``, or ``None`` when the trainer writes no files."""
        return self.files.checkpoint_dir if self.files is not None else None

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes files and shows progress."""
        return self.rank == 0

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict (see the module docstring)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_config": self.model_config,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng_state": rng_state(),
            "history": [dict(r) for r in self._records],
            "epoch": self.epoch,
            "seed": self.seed,
        }

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore model, optimiser, scheduler, RNG states, history and epoch from a checkpoint dict."""
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        if self.scheduler is not None and ckpt.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler_state"])
        set_rng_state(ckpt["rng_state"])
        self._records = [dict(r) for r in ckpt["history"]]
        self.epoch = int(ckpt["epoch"])

    def _save(self) -> None:
        if self.is_main and self.files is not None:
            self.files.save_epoch(self.state_dict(), self.history)

    def _prepare_out_dir(self) -> None:
        if self.files is None:
            return
        if self.is_main:
            self.files.prepare(self.resume)
        self._barrier()
        if self.resume:
            ckpt = self.files.load_newest()
            if ckpt is not None:
                self.load_state_dict(ckpt)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # --------------------------------------------------------------- training
    def fit(self) -> pd.DataFrame:
        """Train up to ``epochs`` epochs (continuing after a resume); returns the history."""
        from rdl_neuro.model.recorder import LayerRecorder

        self._prepare_out_dir()
        loader = self._train_loader()
        recorder = LayerRecorder(self.model, self.student_layers) if self.student_layers else None
        try:
            while self.epoch < self.epochs:
                record = self._train_epoch(loader, recorder)
                record.update(self._validate())
                record.update(self.rdm_probe.measure(self.model, self.device) if self.rdm_probe else {})
                record.update(self.heldout_probe.measure(self.model, self.device) if self.heldout_probe else {})
                if self.scheduler is not None:
                    self.scheduler.step()
                self._records.append(record)
                self.epoch += 1
                self._save()
            if self.is_main and self.files is not None:
                self.files.save_final(self.state_dict(), self.history)
        finally:
            if recorder is not None:
                recorder.close()
            if self._owns_group:
                self._barrier()
                dist.destroy_process_group()
                self._owns_group = False
        return self.history

    def _progress(self, iterable: Any, total: int, desc: str) -> Any:
        from rdl_neuro._progress import progress_bar, shows_progress

        if self.quiet or not self.is_main or not shows_progress():  # no bars in logs of batch jobs
            return iterable

        return progress_bar(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)

    def _after_step(self, epoch: int, batch_index: int) -> None:
        """Hook called after every optimiser step (subclasses: logging, tests that kill mid-epoch)."""

    def _train_epoch(self, loader: DataLoader, recorder: Any) -> dict[str, Any]:
        epoch = self.epoch
        start = time.perf_counter()
        sampler = loader.batch_sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        # dropout & co. draw from the global generator: reseed it per (epoch, rank) so resuming replays exactly
        torch.manual_seed(derive_seed(self.seed, 2, epoch, self.rank))
        weights = {name: _weight_at(w, epoch, name) for name, (_, w) in self.terms.items()}
        self.ddp_model.train()
        if self.teacher is not None and hasattr(self.teacher, "model"):
            self.teacher.model.eval()
        sums = _EpochSums()
        skipped_before = self._skipped_counts()
        n_batches = 0
        bar = self._progress(loader, len(loader), f"epoch {epoch + 1}/{self.epochs}")
        for i, batch in enumerate(bar):
            total = self._step(batch, recorder, weights, sums, f"at epoch {epoch + 1}, batch {i + 1}")
            n_batches += 1
            if bar is not loader:
                bar.set_postfix(loss=f"{total:.4f}")
            self._after_step(epoch, i)
        self._check_skipped(skipped_before, n_batches)
        record: dict[str, Any] = {"epoch": epoch + 1, **sums.means(self.world, self.device)}
        for name, w in weights.items():
            record[f"weight_{name}"] = w
        record["train_acc"] = record.pop("train_acc")
        record["lr"] = float(self.optimizer.param_groups[0]["lr"])
        record["time_s"] = time.perf_counter() - start
        return record

    def _step(self, batch: Any, recorder: Any, weights: Mapping[str, float], sums: _EpochSums, where: str) -> float:
        """One optimiser step on ``batch``; adds its loss terms and accuracy to ``sums``; returns the total loss."""
        from rdl_neuro.train.losses import StepOutputs

        x, y, sid = unpack_batch(batch)
        x, y, sid = x.to(self.device), y.to(self.device), sid.to(self.device)
        t_logits = t_feats = None
        if self._needs_teacher:
            with torch.no_grad():
                t_logits, t_feats = self.teacher(x, stimulus_ids=sid)  # type: ignore[misc]
        logits = self.ddp_model(x)
        feats = recorder.features if recorder is not None else {}
        step = StepOutputs(logits=logits, labels=y, stimulus_ids=sid, student_features=feats,
                           teacher_logits=t_logits, teacher_features=t_feats)
        total = logits.new_zeros(())
        b = int(y.shape[0])
        for name, (loss, _) in self.terms.items():
            value, logs = loss.from_step(step)
            if not torch.isfinite(value):
                raise FloatingPointError(f"loss term {name!r} is {value.item()} {where}")
            total = total + weights[name] * value
            sums.add(f"loss_{name}", value, b)
            for key, v in logs.items():
                # the term itself is loss_<name>; sub-terms keep the loss's own names ("rdl/hidden1")
                if isinstance(v, torch.Tensor) and v.numel() == 1 and key != name:
                    sums.add(key if key.startswith(f"{name}/") else f"{name}/{key}", v, b)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.max_grad_norm is not None:
            sums.add("grad_norm", torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm), b)
        self.optimizer.step()
        if recorder is not None:
            recorder.clear()  # free the graph held by the recorded features
        sums.add("loss", total, b)
        sums.count(logits, y)
        return float(total.detach())

    def _skipped_counts(self) -> dict[tuple[str, str], int]:
        """``(term, layer) -> batches skipped so far`` of the terms that count them (``RDLLoss.skipped_terms``)."""
        return {(name, layer): count for name, (loss, _) in self.terms.items()
                for layer, count in getattr(loss, "skipped_terms", {}).items()}

    def _check_skipped(self, before: dict[tuple[str, str], int], n_batches: int) -> None:
        """Stop when a term skipped every batch of the epoch (see ``allow_skipped_terms``)."""
        if self.allow_skipped_terms or n_batches == 0:
            return
        for (name, layer), count in self._skipped_counts().items():
            if count - before.get((name, layer), 0) >= n_batches:
                reason = skip_reason(self.terms[name][0], layer, self.train_data)
                raise ValueError(
                    f"loss term {name!r} (layer {layer!r}) had no usable pair in any of the {n_batches} batches of "
                    f"epoch {self.epoch + 1}, so it trained nothing: {reason}. Pass allow_skipped_terms=True "
                    "(config key allow_skipped_terms) to train on regardless")

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        from rdl_neuro.train.losses import check_labels

        if self.val_data is None:
            return {}
        self.model.eval()
        loader = DataLoader(self.val_data, batch_size=self.eval_batch_size, shuffle=False)
        loss_sum, correct, count = 0.0, 0, 0
        for batch in loader:
            x, y, _ = unpack_batch(batch)
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)
            check_labels(logits, y)  # cross-entropy's own error names neither the label nor the classes
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += int(y.shape[0])
        return {"val_loss": loss_sum / count, "val_acc": correct / count}
