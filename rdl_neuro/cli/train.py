"""``rdl-neuro train CONFIG.toml``: build data, student, teacher, losses and Trainer from a TOML config, then train.

Everything is built and checked -- including the layer names against the
built models -- before the first training step, so a bad config fails in a
second with the key and the problem named. See ``rdl_neuro.cli.config`` for the
keys and ``rdl_neuro/configs/example.toml`` for an example that runs as is.
"""
from __future__ import annotations

import argparse
import os
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from rdl_neuro.cli.config import ConfigError, load_config
from rdl_neuro.data.ids import plain_ids
from rdl_neuro.io import reading

__all__ = ["register", "run", "build_run", "Run", "load_rdm_file"]


@dataclass
class Run:
    """Everything ``build_run`` assembled: the trainer plus what it was built from."""

    trainer: Any
    config: dict[str, Any]
    model: torch.nn.Module
    teacher: Any
    n_train: int
    n_val: int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train", help="train a student from a TOML config",
        description="Train a student network with cross-entropy plus RDL/KD/RKD/SP/CKA terms, every choice "
                    "taken from a TOML config (example: rdl_neuro/configs/example.toml).")
    p.add_argument("config", help="the TOML run config")
    p.add_argument("--out", default=None, help="output folder (overrides the config's 'output')")
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (overrides the config)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    p.add_argument("--check", action="store_true", help="check the config and build everything, but do not train")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``rdl-neuro train``; returns the exit code."""
    cfg = load_config(args.config)
    if args.out is not None:
        cfg["output"] = args.out
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError(f"--epochs must be positive, got {args.epochs}")
        cfg["epochs"] = args.epochs
    if args.resume:
        cfg["resume"] = True
    if args.quiet:
        cfg["quiet"] = True
    built = build_run(cfg)
    if args.check:
        print(f"config OK: {built.n_train} training and {built.n_val} validation samples, student "
              f"{built.config['model']['type']}, losses {', '.join(built.trainer.terms)}")
        return 0
    history = built.trainer.fit()
    if built.trainer.is_main:
        last = history.iloc[-1]
        parts = [f"epoch {int(last['epoch'])}", f"loss {last['loss']:.4f}", f"train_acc {last['train_acc']:.3f}"]
        if "val_acc" in history:
            parts.append(f"val_acc {last['val_acc']:.3f}")
        parts += [f"{c} {last[c]:.3f}" for c in history.columns if c.startswith(("rdm_", "heldout_"))]
        print(", ".join(parts))
        print(f"wrote {Path(cfg['output']) / 'history.csv'} and checkpoints in {Path(cfg['output'])}")
    return 0


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
def _load_images(data: Mapping[str, Any]) -> Any:
    from rdl_neuro.data import loaders

    source, path = data["source"], data["path"]
    if source == "digits":
        return loaders.load_digits(test_size=data["test_size"], seed=0)
    if source == "mnist":
        return loaders.load_mnist(path, test_size=data["test_size"], seed=0)
    if source == "cifar100":
        return loaders.load_cifar100(path, label=data["label"])
    return loaders.load_kriegeskorte92(path, image_size=data["image_size"]).to_image_set()


def _splits(images: Any, data: Mapping[str, Any], seed: int) -> tuple[Any, Any | None]:
    """(training set, validation set or None) drawn from the source's training split."""
    from rdl_neuro.data.loaders import stratified_split

    train = images.train if (images.descriptors["split"] == "train").any() else images
    if data["validation"] > 0:
        val_pos, train_pos = stratified_split(train.labels.numpy(), train_size=data["validation"], seed=seed,
                                              fallback=True)
        val, train = train.subset(val_pos), train.subset(train_pos)
    else:
        val = None
    n = data["n_train"]
    if n:
        if n > len(train):
            raise ConfigError(f"data.n_train: {n} exceeds the {len(train)} training samples left after validation")
        if n < len(train):
            chosen, _ = stratified_split(train.labels.numpy(), train_size=n, seed=seed, fallback=True)
            train = train.subset(chosen)
    return train, val


# --------------------------------------------------------------------------- #
# teachers
# --------------------------------------------------------------------------- #
def load_rdm_file(path: str | Path, key: str | None = None) -> tuple[np.ndarray, list[Any] | None]:
    """RDM(s) from ``.npy`` (array), ``.csv`` (square matrix, optional header row/index column of ids)
    or ``.npz`` (``key``, else ``rdm``/``rdms``/the only array; ids from ``stimulus_ids`` if present).

    Returns ``(array (n, n) | (k, n, n) | condensed, ids or None)``.
    """
    path = Path(path)
    expected = {".npy": "a numpy .npy array of RDMs", ".csv": "a square matrix of numbers, comma-separated",
                ".npz": "a numpy .npz archive of RDMs"}.get(path.suffix.lower(), "an RDM file (.npy, .csv or .npz)")
    with reading(path, expected):
        return _read_rdm_file(path, key)


def _read_rdm_file(path: Path, key: str | None) -> tuple[np.ndarray, list[Any] | None]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".csv":
        try:
            return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2), None
        except ValueError:
            import pandas as pd

            df = pd.read_csv(path, index_col=0)
            ids = plain_ids(df.index)
            if not all(isinstance(i, int) for i in ids):
                raise ValueError(f"{path}: the first column must hold integer stimulus ids, got {ids[:3]}")
            return df.to_numpy(dtype=np.float64), ids
    with np.load(path, allow_pickle=False) as npz:
        names = list(npz.files)
        ids = plain_ids(npz["stimulus_ids"]) if "stimulus_ids" in names else None
        arrays = [n for n in names if n != "stimulus_ids"]
        if key is not None:
            if key not in names:
                raise KeyError(f"{path}: no array {key!r} (arrays: {names})")
            return npz[key], ids
        for cand in ("rdm", "rdms"):
            if cand in names:
                return npz[cand], ids
        if len(arrays) == 1:
            return npz[arrays[0]], ids
        raise ValueError(f"{path}: several arrays {arrays}; say which with teacher.rdm_key")


def _read_rdms(table: dict[str, Any], section: str) -> tuple[np.ndarray, list[int]]:
    """The RDM(s) of ``section.rdm`` and the integer stimulus ids of their rows (``section.stimulus_ids``,
    else the file's own)."""
    try:
        rdm, file_ids = load_rdm_file(table["rdm"], table["rdm_key"])
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"{section}.rdm: {err.args[0] if err.args else err}") from None
    ids = table["stimulus_ids"]
    if isinstance(ids, str):
        try:
            ids = np.load(ids, allow_pickle=False).tolist() if ids.endswith(".npy") else \
                np.loadtxt(ids, delimiter=",", dtype=np.int64, ndmin=1).tolist()
        except (OSError, ValueError) as err:
            raise ConfigError(f"{section}.stimulus_ids: cannot read {ids}: {err}") from None
    if ids is None:
        ids = file_ids
    if ids is None:
        raise ConfigError(f"{section}.stimulus_ids: missing; {table['rdm']} holds no 'stimulus_ids'")
    try:
        ids = plain_ids(ids)  # the one rule: 3.0 is 3, 2.5 is an error
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}.stimulus_ids: {err}") from None
    not_int = [i for i in ids if not isinstance(i, int)]
    if not_int:
        raise ConfigError(f"{section}.stimulus_ids: must be integers (the data's stimulus ids are sample indices), "
                          f"got {not_int[:3]}")
    return rdm, ids  # type: ignore[return-value]


def _rdm_teacher(cfg: dict[str, Any]) -> Any:
    from rdl_neuro.train.teachers import RDMTeacher

    rdm, ids = _read_rdms(cfg["teacher"], "teacher")
    method = cfg["losses"].get("rdl", {}).get("method", "unknown")
    try:
        return RDMTeacher.from_array(rdm, ids, method=method, combine=cfg["teacher"]["combine"], seed=cfg["seed"])
    except (ValueError, TypeError) as err:
        raise ConfigError(f"teacher.rdm: {err}") from None


def _teacher_layers(cfg: dict[str, Any]) -> list[str]:
    layers = cfg["teacher"]["layers"]
    if layers:
        return list(layers)
    losses = cfg["losses"]
    out: list[str] = []
    if "rdl" in losses:
        out += list(losses["rdl"]["layers"].values())
    out += [losses[n]["teacher_layer"] for n in ("rkd", "sp", "cka") if n in losses]
    return list(dict.fromkeys(out))


def _network_teacher_model(cfg: dict[str, Any], train: Any, val: Any, input_shape: list[int], n_classes: int,
                           name: str) -> torch.nn.Module:
    from rdl_neuro.train.losses import CELoss
    from rdl_neuro.model.networks import build_model
    from rdl_neuro.train import CheckpointError, Trainer, load_checkpoint

    t = cfg["teacher"]
    if t["checkpoint"] is not None:
        try:
            ckpt = load_checkpoint(t["checkpoint"])
        except CheckpointError as err:
            raise ConfigError(f"teacher.checkpoint: {err}") from None
        if not isinstance(ckpt.get("model_config"), dict):
            raise ConfigError(f"teacher.checkpoint: {t['checkpoint']} has no model_config to rebuild the network")
        model = build_model(ckpt["model_config"])
        mc = model.config
        if list(mc["input_shape"]) != input_shape or mc["n_classes"] != n_classes:
            raise ConfigError(f"teacher.checkpoint: the teacher takes inputs {mc['input_shape']} with "
                              f"{mc['n_classes']} classes, the data are {input_shape} with {n_classes}")
        model.load_state_dict(ckpt["model_state"])
        return model
    # no checkpoint: train the teacher first on all training images (not just the labelled subset)
    spec = t["train"]
    model_cfg = {"type": spec["type"], "hidden": spec["hidden"], "dropout": spec["dropout"],
                 "input_shape": input_shape, "n_classes": n_classes}
    if spec["type"] == "cnn" and spec["channels"] is not None:
        model_cfg["channels"] = spec["channels"]
    model = build_model(model_cfg)
    out = Path(cfg["output"]) / "teacher"
    final = out / "final.pt"
    if cfg["resume"] and final.is_file():
        model.load_state_dict(load_checkpoint(final)["model_state"])
        return model
    # Under torchrun every process trains the same teacher (same seed, single-process), so all
    # ranks hold identical weights without a broadcast; only the launcher's rank 0 writes its files.
    writer = int(os.environ.get("RANK", "0")) == 0
    trainer = Trainer(model, train, losses={"ce": CELoss()},
                      optimizer=torch.optim.Adam(model.parameters(), lr=spec["lr"]),
                      val_data=val, batch_size=spec["batch_size"], epochs=spec["epochs"], seed=cfg["seed"],
                      out_dir=out if writer else None, resume=cfg["resume"] and writer,
                      quiet=cfg["quiet"] or not writer, distributed=False, device="cpu")
    history = trainer.fit()
    if writer and "val_acc" in history:
        print(f"teacher trained: val_acc {history['val_acc'].iloc[-1]:.3f} ({out})")
    return model


# --------------------------------------------------------------------------- #
# the whole run
# --------------------------------------------------------------------------- #
def _check_layers(model: torch.nn.Module, layers: list[str], key: str) -> None:
    from rdl_neuro.model.recorder import resolve_layers

    try:
        resolve_layers(model, layers)
    except KeyError as err:
        raise ConfigError(f"{key}: {err.args[0]}") from None


def build_run(cfg: dict[str, Any], name: str | None = None) -> Run:
    """Assemble the Trainer of a checked config (from ``load_config``); raises ConfigError on problems."""
    try:
        return _build(cfg)
    except ConfigError as err:
        raise ConfigError(f"{name or cfg.get('_file', 'config')}: {err}") from None


@dataclass
class _Data:
    """The data of a run: the image set, the student's training/validation ``ImageSet`` s and their
    ``TensorDataset`` s, and the training stimulus ids (``UNCOVERED`` where the RDM teacher has none)."""

    images: Any
    train_set: Any
    val_set: Any
    train: TensorDataset
    val: TensorDataset | None
    ids: torch.Tensor

    @property
    def input_shape(self) -> list[int]:
        return list(self.images.images.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.images.classes)


def _as_dataset(images: Any) -> TensorDataset:
    return TensorDataset(images.images, images.labels)


def _build(cfg: dict[str, Any]) -> Run:
    from rdl_neuro.data.stimulus import StimulusDataset
    from rdl_neuro.model.networks import build_model
    from rdl_neuro.train import Trainer, seed_everything

    if cfg["threads"]:
        # small models train much faster on one thread than with several spinning on tiny matmuls
        torch.set_num_threads(cfg["threads"])
    seed_everything(cfg["seed"])
    data = _load_data(cfg)
    mcfg = {k: v for k, v in cfg["model"].items() if v is not None}
    student = build_model({**mcfg, "input_shape": data.input_shape, "n_classes": data.n_classes})
    _check_student_layers(cfg, student)  # before anything expensive (a teacher may be trained next)
    teacher, rdm_teacher = _teachers(cfg, data)
    train = StimulusDataset(data.train, data.ids.tolist())
    terms = _loss_terms(cfg, rdm_teacher)
    optimizer, scheduler = _optimizer(cfg, student)
    device = None if cfg["device"] == "auto" else cfg["device"]
    trainer = Trainer(student, train, losses=terms, optimizer=optimizer,
                      scheduler=scheduler, val_data=data.val, teacher=teacher, batch_size=cfg["batch_size"],
                      epochs=cfg["epochs"], seed=cfg["seed"], out_dir=cfg["output"], resume=cfg["resume"],
                      quiet=cfg["quiet"], rdm_probe=_probe(cfg, data, teacher, rdm_teacher),
                      heldout_probe=_heldout_probe(cfg, data, student, rdm_teacher),
                      min_covered=cfg["data"]["min_covered"], coverage=rdm_teacher, model_config=student.config,
                      device=device, max_grad_norm=cfg["optimizer"]["max_grad_norm"] or None,
                      allow_skipped_terms=cfg["allow_skipped_terms"])
    if teacher is not None:
        teacher.to(trainer.device)
    if trainer.is_main:
        from rdl_neuro.io import atomic_write_text

        atomic_write_text(Path(cfg["output"]) / "config.json", json.dumps(cfg, indent=2, default=str))
    return Run(trainer=trainer, config=cfg, model=student, teacher=teacher, n_train=len(train),
               n_val=len(data.val) if data.val is not None else 0)


def _load_data(cfg: dict[str, Any]) -> _Data:
    try:
        images = _load_images(cfg["data"])
    except (OSError, ValueError) as err:
        raise ConfigError(f"data.path: {err}") from None
    train_set, val_set = _splits(images, cfg["data"], cfg["seed"])
    return _Data(images, train_set, val_set, _as_dataset(train_set),
                 _as_dataset(val_set) if val_set is not None else None, train_set.stimulus.clone())


def _check_student_layers(cfg: dict[str, Any], student: torch.nn.Module) -> None:
    for lname, spec in cfg["losses"].items():
        if lname == "rdl":
            _check_layers(student, list(spec["layers"]), "losses.rdl.layers")
        elif lname in ("rkd", "sp", "cka"):
            _check_layers(student, [spec["student_layer"]], f"losses.{lname}.student_layer")


def _teachers(cfg: dict[str, Any], data: _Data) -> tuple[Any, Any]:
    """``(NetworkTeacher or None, RDMTeacher or None)`` per ``teacher.kind``; an RDM teacher marks the
    training stimulus ids it does not cover as ``UNCOVERED`` in ``data.ids``."""
    from rdl_neuro.data.stimulus import UNCOVERED
    from rdl_neuro.train.teachers import NetworkTeacher

    kind = cfg["teacher"]["kind"]
    if kind == "network":
        layers = _teacher_layers(cfg)
        # the teacher learns from all training images, not just the student's labelled subset
        full_train, _ = _splits(data.images, {**cfg["data"], "n_train": 0}, cfg["seed"])
        tmodel = _network_teacher_model(cfg, _as_dataset(full_train), data.val, data.input_shape, data.n_classes,
                                        "teacher")
        _check_layers(tmodel, layers, "teacher.layers" if cfg["teacher"]["layers"] else "losses (teacher layer)")
        return NetworkTeacher(tmodel, layers, cache=cfg["teacher"]["cache"]), None
    if kind == "rdm":
        rdm_teacher = _rdm_teacher(cfg)
        ids = data.ids
        covered = rdm_teacher.covers(ids)
        if not bool(covered.any()):
            raise ConfigError(f"teacher.stimulus_ids: none of the teacher's {rdm_teacher.n_stimuli} stimulus ids "
                              f"is among the {len(ids)} training stimuli of data source {cfg['data']['source']!r}")
        data.ids = torch.where(covered, ids, torch.full_like(ids, UNCOVERED))
        return None, rdm_teacher
    return None, None


def _loss_terms(cfg: dict[str, Any], rdm_teacher: Any) -> dict[str, Any]:
    """``{name: (loss, weight or warm-up schedule)}`` of ``cfg["losses"]``."""
    from rdl_neuro.train import linear_warmup
    from rdl_neuro.train import losses as L

    terms: dict[str, Any] = {}
    for lname, spec in cfg["losses"].items():
        if lname == "ce":
            loss: Any = L.CELoss()
        elif lname == "rdl":
            layers = spec["layers"]
            pairs = dict(layers) if isinstance(layers, dict) else {s: rdm_teacher for s in layers}
            try:
                loss = L.RDLLoss(pairs, method=spec["method"], criterion=spec["criterion"])
            except (ValueError, TypeError, KeyError) as err:
                raise ConfigError(f"losses.rdl: {err.args[0] if err.args else err}") from None
        elif lname == "kd":
            loss = L.KDLoss(temperature=spec["temperature"])
        else:
            cls = {"rkd": L.RKDLoss, "sp": L.SPLoss, "cka": L.CKALoss}[lname]
            loss = cls(spec["student_layer"], spec["teacher_layer"])
        weight = linear_warmup(spec["weight"], spec["warmup_epochs"]) if spec["warmup_epochs"] else spec["weight"]
        terms[lname] = (loss, weight)
    return terms


def _optimizer(cfg: dict[str, Any], student: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser and the learning-rate scheduler (or None) of ``cfg["optimizer"]`` / ``cfg["scheduler"]``."""
    o = cfg["optimizer"]
    if o["name"] == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(student.parameters(), lr=o["lr"], momentum=o["momentum"],
                                                           weight_decay=o["weight_decay"])
    else:
        cls_opt = torch.optim.Adam if o["name"] == "adam" else torch.optim.AdamW
        optimizer = cls_opt(student.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    s = cfg["scheduler"]
    scheduler = None
    if s["name"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    elif s["name"] == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s["step_size"], gamma=s["gamma"])
    return optimizer, scheduler


def _probe(cfg: dict[str, Any], data: _Data, teacher: Any, rdm_teacher: Any) -> Any:
    """The ``RDMProbe`` of ``cfg["probe"]`` (None when off, without an RDL term or with too few stimuli)."""
    from rdl_neuro.train import RDMProbe

    p = cfg["probe"]
    if not (p["enabled"] and "rdl" in cfg["losses"]):
        return None
    layers = cfg["losses"]["rdl"]["layers"]
    if teacher is not None:
        src = data.val_set if data.val_set is not None else data.train_set
        k = min(p["n_stimuli"], len(src))
        return RDMProbe(src.images[:k], src.stimulus[:k], teacher, dict(layers), method=p["method"])
    if rdm_teacher is not None:
        ids = data.ids
        pos = torch.nonzero(ids >= 0).flatten()
        _, first = np.unique(ids[pos].numpy(), return_index=True)  # one image per covered stimulus
        pos = pos[torch.as_tensor(np.sort(first))][: p["n_stimuli"]]
        if len(pos) >= 3:
            return RDMProbe(data.train_set.images[pos], ids[pos], rdm_teacher, list(layers), method=p["method"])
    return None


def _heldout_probe(cfg: dict[str, Any], data: _Data, student: torch.nn.Module, rdm_teacher: Any) -> Any:
    """The ``HeldOutProbe`` of ``[probe.heldout]`` (None when absent or probes are off).

    Its stimuli are ``probe.heldout.stimuli``, by default every stimulus of the
    brain RDM file that the RDM teacher does not cover; their inputs are the data
    source's images with those ids (any split).
    """
    from rdl_neuro.rdm.interop import to_rsatoolbox
    from rdl_neuro.train import HeldOutProbe

    h = cfg["probe"].get("heldout")
    if h is None or not cfg["probe"]["enabled"]:
        return None
    rdm, ids = _read_rdms(h, "probe.heldout")
    try:
        brain = to_rsatoolbox(rdm, ids, "unknown")
    except (ValueError, TypeError) as err:
        raise ConfigError(f"probe.heldout.rdm: {err}") from None
    taught = set(rdm_teacher.ids) if rdm_teacher is not None else set()
    if h["stimuli"] is not None:
        stimuli = plain_ids(h["stimuli"])
        covered = [i for i in stimuli if i in taught]
        if covered:
            raise ConfigError(f"probe.heldout.stimuli: {len(covered)} are in the teacher's RDM (teacher.rdm), so not "
                              f"held out: {covered[:10]}")
    else:
        stimuli = [i for i in ids if i not in taught]
        if len(stimuli) < 3:
            raise ConfigError(f"probe.heldout.stimuli: only {len(stimuli)} stimuli of probe.heldout.rdm are not in "
                              "the teacher's RDM (teacher.rdm); list the held-out stimuli")
    where = {int(i): k for k, i in enumerate(data.images.stimulus.tolist())}
    absent = [i for i in stimuli if i not in where]
    if absent:
        raise ConfigError(f"probe.heldout.stimuli: {len(absent)} held-out stimulus ids are not images of data source "
                          f"{cfg['data']['source']!r}: {absent[:10]}")
    unknown = [i for i in stimuli if i not in set(ids)]
    if unknown:
        raise ConfigError(f"probe.heldout.stimuli: {len(unknown)} are not stimuli of the brain RDMs "
                          f"(probe.heldout.rdm): {unknown[:10]}")
    if h["subjects"] is not None and max(h["subjects"]) >= brain.n_rdm:
        raise ConfigError(f"probe.heldout.subjects: {max(h['subjects'])} is not an RDM of probe.heldout.rdm, which "
                          f"holds {brain.n_rdm} (numbered from 0)")
    layers = h["layers"] if h["layers"] is not None else list(cfg["losses"]["rdl"]["layers"])
    _check_layers(student, layers, "probe.heldout.layers")
    images = data.images.images[torch.as_tensor([where[i] for i in stimuli])]
    try:
        return HeldOutProbe(images, stimuli, brain, layers, method=h["method"], compare=h["compare"],
                            heldout_subjects=h["subjects"], subject_descriptor="index")
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"probe.heldout: {err.args[0] if err.args else err}") from None
