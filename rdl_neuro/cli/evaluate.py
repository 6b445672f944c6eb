"""``rdl-neuro evaluate``: layer RDMs of a trained model on a stimulus set vs brain RDMs -> CSV table + figures.

    rdl-neuro evaluate --checkpoint run/best.pt --layers fc1 fc2 --stimuli kriegeskorte92 \\
        --data ../shared/data/kriegeskorte2008 --out results/

The checkpoint is the Trainer's: a ``torch.save``d dict with ``model_state``
and ``model_config`` (for ``rdl_neuro.model.networks.build_model``). ``--model
module:callable`` builds the network instead (the callable returns an
``nn.Module``; ``model_config`` is passed to it when it accepts an argument).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["register", "run", "main", "load_model"]

STIMULI = ("kriegeskorte92",)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser("evaluate", help="model-brain RSA of a checkpoint's layers (CSV + figures)",
                              description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file (torch.save'd dict with model_state)")
    p.add_argument("--layers", nargs="+", required=True, help="layer names (model.named_modules())")
    p.add_argument("--stimuli", default="kriegeskorte92", choices=STIMULI, help="stimulus set")
    p.add_argument("--data", default=None, help="folder of the stimulus set (default: the loader's search path)")
    p.add_argument("--out", required=True, help="output folder for rsa_table.csv and figures")
    p.add_argument("--model", default=None, help="python.module:callable that builds the model")
    p.add_argument("--image-size", type=int, default=None, help="resize the images to this size")
    p.add_argument("--rdm-method", default="correlation", help="layer RDM measure (default correlation)")
    p.add_argument("--method", default="corr", help="RDM comparison (rsatoolbox name, default corr)")
    p.add_argument("--bootstrap", default="pattern", choices=("none", "pattern", "rdm", "both"))
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"), help="figure format")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _import_callable(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model must look like 'package.module:callable', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--model: cannot import module {module_name!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--model: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--model: {spec!r} is not callable")
    return obj


def load_model(checkpoint: str | Path, model_spec: str | None = None) -> torch.nn.Module:
    """Build the model of a Trainer checkpoint and load its weights."""
    from rdl_neuro.train.checkpoints import CheckpointError, load_checkpoint

    path = Path(checkpoint)
    try:  # the one way a checkpoint is read: weights_only=True, no code in the file runs
        ckpt = load_checkpoint(path, required=())
    except CheckpointError as err:  # a truncated or foreign file: say which
        raise ValueError(f"cannot read checkpoint {path}: {err.__cause__ or err}") from err
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} has no 'model_state' (found {keys})")
    config = ckpt.get("model_config")
    if model_spec is not None:
        factory = _import_callable(model_spec)
        takes_arg = bool(inspect.signature(factory).parameters)
        model = factory(config) if takes_arg and config is not None else factory()
    elif config is not None:
        from rdl_neuro.model.networks import build_model

        model = build_model(config)
    else:
        raise ValueError(f"checkpoint {path} has no 'model_config'; pass --model module:callable")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the model: {err}") from err
    return model


def _check_input_fits(model: torch.nn.Module, images: torch.Tensor, image_size: int | None) -> None:
    """One image through the model, so that a size the checkpoint cannot take is named by its option."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(images[:1])
    except RuntimeError as err:
        shape = tuple(images.shape[1:])
        expected = (getattr(model, "config", None) or {}).get("input_shape")
        hint = f"; the checkpoint's model takes {list(expected)} (use --image-size {expected[-1]})" if expected else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--image-size {image_size if image_size is not None else '(not given: native size)'}: "
                         f"the model cannot run on images of shape {list(shape)} ({first}){hint}") from err
    finally:
        model.train(was_training)


def run(args: argparse.Namespace) -> int:
    """Compute layer RDMs, the RSA table and figures; returns 0."""
    from rdl_neuro.data.loaders import load_kriegeskorte92
    from rdl_neuro.model import layer_rdms
    from rdl_neuro.inference import rsa_evaluate
    from rdl_neuro.io import atomic_write_csv
    from rdl_neuro.vis import plot_layer_profile, plot_mds, plot_rdm_comparison, save_figure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.checkpoint, args.model)
    k92 = load_kriegeskorte92(args.data, image_size=args.image_size)
    _check_input_fits(model, k92.images, args.image_size)
    descriptors = {"category": list(k92.descriptors["category"])}
    rdms = layer_rdms(model, k92.images, args.layers, args.rdm_method, batch_size=args.batch_size,
                      stimulus_ids=k92.descriptors["stimulus"].tolist(), pattern_descriptors=descriptors,
                      progress=not args.no_progress)
    bootstrap = None if args.bootstrap == "none" else args.bootstrap
    result = rsa_evaluate(rdms, k92.human_it, args.method, bootstrap=bootstrap,
                          n_bootstrap=args.n_bootstrap, seed=args.seed)
    table = result.table()
    atomic_write_csv(table, out / "rsa_table.csv")
    ext = args.format
    save_figure(plot_layer_profile(table, title=f"layers vs human IT ({args.method})"), out / f"layer_profile.{ext}")
    save_figure(plot_rdm_comparison([rdms, k92.human_it_mean], sort_by="category", rank_transform=True),
                out / f"rdm_comparison.{ext}")
    save_figure(plot_mds(rdms, index=len(args.layers) - 1, color_by="category"), out / f"mds.{ext}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {out / 'rsa_table.csv'} and figures to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``evaluate`` alone (without the other sub-commands): ``main(['--checkpoint', ...])``."""
    parser = argparse.ArgumentParser(prog="rdl-neuro evaluate")
    _add_arguments(parser)
    return run(parser.parse_args(argv))
