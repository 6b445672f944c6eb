"""TOML run configs for ``rdl-neuro train``: ``load_config`` reads, checks and completes them.

Every choice of a training run lives in one TOML file (see
``rdl_neuro/configs/example.toml`` for a commented example that runs as is)::

    seed, epochs, batch_size, output, resume, quiet, device, threads, allow_skipped_terms   (top level)
    [data]       source = digits | mnist | cifar100 | kriegeskorte92, path, n_train, validation, ...
    [model]      type = mlp | cnn, hidden, dropout, channels
    [teacher]    kind = none | network | rdm; checkpoint or [teacher.train]; rdm file + stimulus_ids
    [losses.ce] [losses.rdl] [losses.kd] [losses.rkd] [losses.sp] [losses.cka]   weight, warmup_epochs, ...
    [optimizer]  name = sgd | adam | adamw, lr, momentum, weight_decay
    [scheduler]  name = none | cosine | step, step_size, gamma
    [probe]      enabled, n_stimuli, method
    [probe.heldout]  rdm file + stimulus_ids, stimuli, subjects, layers, method, compare   (optional)

Checking is strict and happens before any data is loaded: an unknown key, a
value of the wrong type or out of range, a missing file or an inconsistent
combination raises :class:`ConfigError` whose message starts with the file
and the dotted key (``example.toml: losses.rdl.layers: ...``). Layer names are
checked against the built model just before training (``rdl_neuro.cli.train``).

Relative paths of *input* files (teacher checkpoint, RDM, stimulus ids, data)
are relative to the config file's folder, so a config travels with its data;
``output`` is relative to the current directory, so the packaged example
writes into the user's folder.
"""
from __future__ import annotations

import copy
import difflib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdl_neuro.rdm.calc import METHODS as RDM_METHODS  # the RDM methods, from their one home
from rdl_neuro.rdm.compare import COMPARE_METHODS

__all__ = ["ConfigError", "load_config", "parse_config", "example_config_path", "DATA_SOURCES", "LOSS_NAMES"]

#: the config's ``data.source`` choices
DATA_SOURCES = ("digits", "mnist", "cifar100", "kriegeskorte92")
#: the loss tables a config may have (``[losses.NAME]``)
LOSS_NAMES = ("ce", "rdl", "kd", "rkd", "sp", "cka")
TEACHER_KINDS = ("none", "network", "rdm")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step")
RDM_SUFFIXES = (".npy", ".csv", ".npz")


class ConfigError(ValueError):
    """A run config is invalid; the message names the file, the key and the problem."""


_REQUIRED = object()


@dataclass
class Field:
    """One config field: accepted types, default, and an optional extra check returning an error or None."""

    types: tuple[type, ...]
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    choices: tuple[Any, ...] | None = None


def _positive(v: Any) -> str | None:
    return None if v > 0 else f"must be positive, got {v}"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v}"


def _int_list(v: Any) -> str | None:
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return f"must be a list of positive integers, got {v!r}"
    return None


def _str_list(v: Any) -> str | None:
    if not all(isinstance(x, str) for x in v):
        return f"must be a list of strings, got {v!r}"
    return None


def _int_ids(v: Any) -> str | None:
    if not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return f"must be a non-empty list of integer stimulus ids, got {v!r}"
    return None


def _rows(v: Any) -> str | None:
    if not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        return f"must be a non-empty list of RDM numbers (0, 1, ...: rows of the RDM file), got {v!r}"
    return None


def _str_map(v: Any) -> str | None:
    if not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        return f"must map student layer names to teacher layer names (strings), got {v!r}"
    return None


def _device(v: Any) -> str | None:
    if v == "auto":
        return None
    from rdl_neuro.devices import check_device

    try:
        check_device(v, "")
    except ValueError as err:
        return str(err).strip()
    return None


INT, FLOAT, STR, BOOL, LIST, TABLE = (int,), (int, float), (str,), (bool,), (list,), (dict,)

SCHEMA: dict[str, Any] = {
    "seed": Field(INT, 0, _non_negative),
    "epochs": Field(INT, 10, _positive),
    "batch_size": Field(INT, 32, _positive),
    "output": Field(STR, "runs/rdl"),
    "resume": Field(BOOL, False),
    "quiet": Field(BOOL, False),
    "device": Field(STR, "auto", _device),
    "allow_skipped_terms": Field(BOOL, False),
    "threads": Field(INT, 0, _non_negative),
    "data": {
        "source": Field(STR, _REQUIRED, choices=DATA_SOURCES),
        "path": Field(STR, None),
        "n_train": Field(INT, 0, _non_negative),
        "validation": Field(FLOAT, 0.2, _fraction),
        "test_size": Field(FLOAT, 0.2, _fraction),
        "label": Field(STR, "fine", choices=("fine", "coarse")),
        "image_size": Field(INT, 32, _positive),
        "min_covered": Field(INT, 0, _non_negative),
    },
    "model": {
        "type": Field(STR, "mlp", choices=("mlp", "cnn")),
        "hidden": Field(LIST, None, _int_list),
        "dropout": Field(FLOAT, 0.0, _fraction),
        "channels": Field(LIST, None, _int_list),
    },
    "teacher": {
        "kind": Field(STR, "none", choices=TEACHER_KINDS),
        "checkpoint": Field(STR, None),
        "layers": Field(LIST, None, _str_list),
        "cache": Field(BOOL, False),
        "rdm": Field(STR, None),
        "rdm_key": Field(STR, None),
        "stimulus_ids": Field((str, list), None),
        "combine": Field(STR, "mean", choices=("mean", "per_rdm")),
        "train": {
            "hidden": Field(LIST, [256, 256], _int_list),
            "type": Field(STR, "mlp", choices=("mlp", "cnn")),
            "channels": Field(LIST, None, _int_list),
            "dropout": Field(FLOAT, 0.0, _fraction),
            "epochs": Field(INT, 20, _positive),
            "lr": Field(FLOAT, 1e-3, _positive),
            "batch_size": Field(INT, 64, _positive),
        },
    },
    "losses": {
        "ce": {"weight": Field(FLOAT, 1.0, _non_negative), "warmup_epochs": Field(INT, 0, _non_negative)},
        "rdl": {
            "weight": Field(FLOAT, 1.0, _non_negative),
            "warmup_epochs": Field(INT, 0, _non_negative),
            "layers": Field((dict, list), _REQUIRED),
            "method": Field(STR, "euclidean", choices=RDM_METHODS),
            "criterion": Field(STR, "mse"),
        },
        "kd": {"weight": Field(FLOAT, 1.0, _non_negative), "warmup_epochs": Field(INT, 0, _non_negative),
               "temperature": Field(FLOAT, 4.0, _positive)},
        **{name: {"weight": Field(FLOAT, 1.0, _non_negative), "warmup_epochs": Field(INT, 0, _non_negative),
                  "student_layer": Field(STR, _REQUIRED), "teacher_layer": Field(STR, _REQUIRED)}
           for name in ("rkd", "sp", "cka")},
    },
    "optimizer": {
        "name": Field(STR, "adam", choices=OPTIMIZERS),
        "lr": Field(FLOAT, 1e-3, _positive),
        "momentum": Field(FLOAT, 0.9, _non_negative),
        "weight_decay": Field(FLOAT, 0.0, _non_negative),
        "max_grad_norm": Field(FLOAT, 0.0, _non_negative),
    },
    "scheduler": {
        "name": Field(STR, "none", choices=SCHEDULERS),
        "step_size": Field(INT, 10, _positive),
        "gamma": Field(FLOAT, 0.1, _positive),
    },
    "probe": {
        "enabled": Field(BOOL, True),
        "n_stimuli": Field(INT, 200, lambda v: None if v >= 3 else f"needs at least 3 stimuli, got {v}"),
        "method": Field(STR, "euclidean", choices=RDM_METHODS),
        # HeldOutProbe: the student-brain comparison on stimuli (and subjects) held out from the teacher
        "heldout": {
            "rdm": Field(STR, _REQUIRED),
            "rdm_key": Field(STR, None),
            "stimulus_ids": Field((str, list), None),
            "stimuli": Field(LIST, None, _int_ids),
            "subjects": Field(LIST, None, _rows),
            "layers": Field(LIST, None, _str_list),
            "method": Field(STR, "correlation", choices=RDM_METHODS),
            "compare": Field(STR, "corr", choices=COMPARE_METHODS),
        },
    },
}

# optional sub-tables (absent -> not used); everything else is filled with defaults
_OPTIONAL_TABLES = {"teacher.train", "probe.heldout"} | {f"losses.{n}" for n in LOSS_NAMES}


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "table"}
    if types == FLOAT:
        return "number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_value(key: str, spec: Field, value: Any) -> Any:
    # TOML booleans are Python bools, which are ints: never accept them as numbers
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(spec.types)}, got {type(value).__name__} {value!r}")
    if spec.types == FLOAT:
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, spec.choices))}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{key}: {problem}")
    return value


def _complete(raw: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Check ``raw`` against ``schema`` and fill defaults; raises ConfigError naming the dotted key."""
    out: dict[str, Any] = {}
    for key in raw:
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(f"{prefix + '.' if prefix else ''}{key}: unknown key{hint}; valid keys in "
                              f"{where}: {', '.join(schema)}")
    for key, spec in schema.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(spec, dict):
            if key not in raw:
                if dotted in _OPTIONAL_TABLES:
                    continue
                out[key] = _complete({}, spec, dotted)
                continue
            if not isinstance(raw[key], dict):
                raise ConfigError(f"{dotted}: expected a table, got {type(raw[key]).__name__} {raw[key]!r}")
            out[key] = _complete(raw[key], spec, dotted)
        elif key in raw:
            out[key] = _check_value(dotted, spec, raw[key])
        elif spec.default is _REQUIRED:
            raise ConfigError(f"{dotted}: missing required key")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _require_file(table: dict[str, Any], section: str, key: str, base: Path, suffixes: tuple[str, ...] = ()) -> None:
    """Resolve ``table[key]`` (the config's ``section.key``) against ``base``; it must exist."""
    value = table[key]
    if value is None:
        return
    path = _resolve(value, base)
    if not path.exists():
        raise ConfigError(f"{section}.{key}: file not found: {path}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{section}.{key}: {path.name} has an unsupported format; use one of {', '.join(suffixes)}")
    table[key] = str(path)


def _check_rdm_file(table: dict[str, Any], section: str, base: Path) -> None:
    """An RDM file (``section.rdm``) and the stimulus ids of its rows (``section.stimulus_ids``)."""
    _require_file(table, section, "rdm", base, RDM_SUFFIXES)
    ids = table["stimulus_ids"]
    if isinstance(ids, str):
        _require_file(table, section, "stimulus_ids", base, (".npy", ".csv", ".txt"))
    elif isinstance(ids, list) and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ConfigError(f"{section}.stimulus_ids: must be integers, got {ids!r}")
    elif ids is None and table["rdm"].endswith(".npy"):
        raise ConfigError(f"{section}.stimulus_ids: missing; an .npy RDM needs the stimulus id of each row "
                          "(a list or a file; an .npz may hold them as 'stimulus_ids', a .csv as its "
                          "first column)")


def _check_consistency(cfg: dict[str, Any], base: Path) -> None:
    data, teacher, losses = cfg["data"], cfg["teacher"], cfg["losses"]
    if data["source"] == "cifar100" and not data["path"]:
        raise ConfigError("data.path: missing; the cifar100 source needs the folder or archive of the python pickles")
    if data["path"]:
        _require_file(data, "data", "path", base)
    if not losses:
        raise ConfigError("losses: no loss terms; add at least [losses.ce]")
    kind = teacher["kind"]
    if kind == "network":
        if teacher["checkpoint"] is None and "train" not in teacher:
            raise ConfigError("teacher: a network teacher needs teacher.checkpoint (a trainer checkpoint file) "
                              "or a [teacher.train] table to train one first")
        if teacher["checkpoint"] is not None and "train" in teacher:
            raise ConfigError("teacher: give either teacher.checkpoint or [teacher.train], not both")
        _require_file(teacher, "teacher", "checkpoint", base)
        if teacher["rdm"] is not None:
            raise ConfigError("teacher.rdm: only used with teacher.kind = 'rdm'")
    elif kind == "rdm":
        if teacher["rdm"] is None:
            raise ConfigError("teacher.rdm: missing; a kind = 'rdm' teacher needs an RDM file (.npy, .csv or .npz)")
        _check_rdm_file(teacher, "teacher", base)
        for bad in ("checkpoint",):
            if teacher[bad] is not None:
                raise ConfigError(f"teacher.{bad}: only used with teacher.kind = 'network'")
        if "train" in teacher:
            raise ConfigError("teacher.train: only used with teacher.kind = 'network'")
    else:
        for key in ("checkpoint", "rdm"):
            if teacher[key] is not None:
                raise ConfigError(f"teacher.{key}: set, but teacher.kind is 'none'; set teacher.kind")
    needs_network = [n for n in ("kd", "rkd", "sp", "cka") if n in losses]
    if needs_network and kind != "network":
        raise ConfigError(f"losses.{needs_network[0]}: needs a network teacher (teacher.kind = 'network'), "
                          f"but teacher.kind is {kind!r}")
    if "rdl" in losses:
        layers = losses["rdl"]["layers"]
        if kind == "none":
            raise ConfigError("losses.rdl: needs a teacher; set teacher.kind = 'network' or 'rdm'")
        if kind == "network" and not isinstance(layers, dict):
            raise ConfigError("losses.rdl.layers: with a network teacher, a table {student layer = teacher layer}, "
                              f"got {layers!r}")
        if kind == "rdm" and not isinstance(layers, list):
            raise ConfigError("losses.rdl.layers: with an RDM teacher, a list of student layers, "
                              f"got {layers!r}")
        problem = _str_map(layers) if isinstance(layers, dict) else _str_list(layers)
        if problem or not layers:
            raise ConfigError(f"losses.rdl.layers: {problem or 'must not be empty'}")
    if data["min_covered"] and kind != "rdm":
        raise ConfigError("data.min_covered: only meaningful with an RDM teacher (teacher.kind = 'rdm')")
    if cfg["model"]["type"] == "mlp" and cfg["model"]["channels"] is not None:
        raise ConfigError("model.channels: only used with model.type = 'cnn'")
    heldout = cfg["probe"].get("heldout")
    if heldout is not None:
        _check_rdm_file(heldout, "probe.heldout", base)
        if heldout["layers"] is None and "rdl" not in losses:
            raise ConfigError("probe.heldout.layers: missing; without [losses.rdl] name the student layers to probe")
        if heldout["layers"] is not None and not heldout["layers"]:
            raise ConfigError("probe.heldout.layers: must not be empty")


def parse_config(raw: Mapping[str, Any], base_dir: str | os.PathLike[str] = ".", name: str = "config") -> dict[str, Any]:
    """Check a config dict (as read from TOML) and return it completed with defaults.

    Input paths are resolved against ``base_dir`` and checked to exist.
    Raises :class:`ConfigError` with ``"<name>: <dotted key>: <problem>"``.
    """
    try:
        cfg = _complete(raw, SCHEMA, "")
        _check_consistency(cfg, Path(base_dir))
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    return cfg


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - Python 3.10
        import tomli

        return tomli
    except ImportError:  # pragma: no cover
        raise ConfigError("reading TOML configs on Python 3.10 needs the 'tomli' package (pip install tomli)") from None


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a TOML run config (see the module docstring); returns the completed dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    toml = _toml_module()
    try:
        with open(path, "rb") as fh:
            raw = toml.load(fh)
    except toml.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    cfg = parse_config(raw, path.resolve().parent, name=str(path))
    cfg["_file"] = str(path)  # lets later errors (layer names) name the file too
    return cfg


def example_config_path() -> Path:
    """The packaged example config (``rdl_neuro/configs/example.toml``)."""
    return Path(__file__).resolve().parent.parent / "configs" / "example.toml"
