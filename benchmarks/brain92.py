"""Brain-RDL on the 92 images: does a CNN trained toward human-IT RDMs become more brain-like on new images and people?

Data: the 92 object images of Kriegeskorte et al. (2008) with the human-IT fMRI
RDMs of 4 subjects x 2 sessions (``load_kriegeskorte92``, read from
``../shared/data/kriegeskorte2008``). A subject's two sessions are averaged
(one RDM per person: the unit of generalisation is the person, and the session
mean is the more reliable estimate of that person's RDM).

Cross-validation: 4 image folds (stratified by the 6 categories: train on 69
images, test on 23) crossed with leave-one-subject-out. For fold ``f`` and
held-out subject ``h`` the teacher is the mean human-IT RDM of the 3 other
subjects over the 69 training images; the student is evaluated by the
correlation of its RDM over the 23 held-out images with subject ``h``'s RDM over
the same images: images *and* a person it never saw.

Student: a small CNN (``build_model`` cnn, 3 conv blocks 16-32-64, a 128-unit
hidden layer, 6-way readout) on 32x32 images with random crops/zooms, flips and
colour jitter (torch only). The pulled layer is ``hidden1``, fixed before any
run: the last representation before the readout, the network's "IT".

Methods: ``baseline`` (CE on the 6 categories), ``RDL`` (CE + w * RDL toward
human IT: correlation-distance RDMs, criterion 1 - Pearson r), ``RDL only``
(no labels), ``untrained`` (random weights); reference rows: the 8 classic
model RDMs and the noise ceiling (rsatoolbox's leave-one-subject-out lower and
upper bounds), all on the same held-out pairs.

No hyperparameter sees test data: the RDL weight ``w`` is chosen per (fold,
held-out subject) from a fixed grid by an inner split of the *training*
images (3/4 fit, 1/4 validation) against the *training* subjects only; every
grid point and its validation score is logged.

Statistics: rsatoolbox ``corr`` (and ``tau-a``) between the student's held-out
RDM and the held-out subject's, averaged over seeds within a (fold, subject)
unit, then over the 16 units; 95% intervals from a bootstrap that resamples
held-out images within folds and subjects; fraction of the lower noise
ceiling; paired t-test and Wilcoxon over the 16 units (RDL vs baseline).

Outputs (``--out``, default ``results/``): ``brain92.csv`` (every unit x
method x layer x seed, models, noise ceiling), ``brain92_summary.csv``,
``brain92_search.csv``, ``brain92.md``, ``brain92_layers.png`` (layer profile
with the noise-ceiling band) and ``brain92_rdms.png`` (held-out human IT vs
baseline vs RDL). The last line is
``RESULT rdl_heldout_r=... base_heldout_r=... animacy_heldout_r=... rdl_vs_base_p=... nc_lower=...``.

Usage::

    python benchmarks/brain92.py            # ~10-20 min on 2 cores
    python benchmarks/brain92.py --quick    # seconds, for the test suite
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _experiments import (_WORKER_STATE, TrainSpec, base_parser, start_run,  # noqa: E402
                          machine_info, markdown_table, paired_tests, result_line, run_jobs, seed_of,
                          stratified_holdout, train_model, write_text)

from rdl_neuro.rdm.compare import compare_rdms  # noqa: E402
from rdl_neuro.io import atomic_write_csv  # noqa: E402
from rdl_neuro.data import StimulusDataset, load_kriegeskorte92  # noqa: E402
from rdl_neuro.model.recorder import LayerRecorder  # noqa: E402
from rdl_neuro.train.losses import CELoss, RDLLoss  # noqa: E402
from rdl_neuro.model.networks import build_model  # noqa: E402
from rdl_neuro.rdm import compute_rdm, to_condensed  # noqa: E402
from rdl_neuro.train.teachers import RDMTeacher  # noqa: E402
from rdl_neuro.train import seed_everything  # noqa: E402

PULLED = "hidden1"  # fixed a priori (see the module docstring)
LAYERS = ["pool1", "pool2", "pool3", "hidden1", "out"]
METHODS = ["baseline", "RDL", "RDL only", "untrained"]
TRAINED = ["baseline", "RDL", "RDL only"]


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
def augment(x: torch.Tensor) -> torch.Tensor:
    """Random zoom-crop (75-100% of the image, anywhere), horizontal flip and colour jitter of one ``(3, S, S)`` image."""
    s = float(torch.empty(()).uniform_(0.75, 1.0))
    tx, ty = (float(torch.empty(()).uniform_(-1, 1)) * (1 - s) for _ in range(2))
    flip = -1.0 if float(torch.rand(())) < 0.5 else 1.0
    theta = torch.tensor([[[s * flip, 0.0, tx], [0.0, s, ty]]])
    grid = F.affine_grid(theta, (1, *x.shape), align_corners=False)
    out = F.grid_sample(x[None], grid, align_corners=False, padding_mode="border")[0]
    mean = out.mean()
    out = (out - mean) * float(torch.empty(()).uniform_(0.75, 1.25)) + mean * float(torch.empty(()).uniform_(0.8, 1.2))
    gray = out.mean(0, keepdim=True)
    out = (out - gray) * float(torch.empty(()).uniform_(0.7, 1.3)) + gray
    return out.clamp(0.0, 1.0)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Fixed input scaling (no statistics of any image set)."""
    return (x - 0.5) / 0.25


class AugmentedImages(Dataset):
    """``(normalise(augment(image)), label)`` items; a fresh augmentation at every access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalise(augment(self.images[i])), self.labels[i]


def image_folds(labels: np.ndarray, n_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified image folds ``[(train positions, test positions)]``, fixed by ``seed``."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(tr), np.sort(te)) for tr, te in skf.split(np.zeros(len(labels)), labels)]


def subject_rdms(human_it) -> tuple[np.ndarray, list[str]]:
    """Per-subject RDMs ``(4, 92, 92)``: the mean of each subject's sessions; and the subject names."""
    mats = human_it.get_matrices()
    subjects = list(human_it.rdm_descriptors["subject"])
    names = list(dict.fromkeys(subjects))
    out = np.stack([mats[[k for k, s in enumerate(subjects) if s == name]].mean(0) for name in names])
    return out, names


# --------------------------------------------------------------------------- #
# one student
# --------------------------------------------------------------------------- #
def model_config(size: int) -> dict:
    return {"type": "cnn", "input_shape": [3, size, size], "n_classes": 6, "channels": [16, 32, 64], "hidden": [128]}


@torch.no_grad()
def layer_rdms(model: torch.nn.Module, images: torch.Tensor, layers: list[str]) -> dict[str, np.ndarray]:
    """Condensed correlation-distance RDMs of ``layers`` over ``images`` (eval mode, no augmentation)."""
    model.eval()
    with LayerRecorder(model, layers, detach=True) as rec:
        model(normalise(images))
        feats = rec.features
    return {layer: compute_rdm(feats[layer].double(), "correlation").numpy() for layer in layers}


def _brain_init(payload: dict) -> None:
    _WORKER_STATE.clear()
    _WORKER_STATE.update(payload)


def _brain_job(job: dict) -> dict:
    """Train (or not) one student; return its held-out layer RDMs (final) or its validation score (search)."""
    st = _WORKER_STATE
    images, labels, subj = st["images"], st["labels"], st["subjects"]
    spec: TrainSpec = st["spec"]
    f, h, method, seed, weight = job["fold"], job["held_out"], job["method"], job["seed"], job["weight"]
    train_pos, test_pos = st["folds"][f]
    train_subjects = [k for k in range(len(subj)) if k != h] if h is not None else []
    if job["phase"] == "search":
        fit, val = stratified_holdout(labels[train_pos].numpy(), 0.25, seed_of("brain92", "inner", f))
        fit_pos, eval_pos = train_pos[fit], train_pos[val]
    else:
        fit_pos, eval_pos = train_pos, test_pos
    seed_everything(seed_of("brain92", "init", f, seed))  # same initial weights for every method of (fold, seed)
    model = build_model(st["model_config"])
    t0 = time.perf_counter()
    if method != "untrained":
        ids = torch.as_tensor(fit_pos)  # stimulus ids are the positions 0..91
        data = StimulusDataset(AugmentedImages(images[ids], labels[ids]), ids.tolist())
        losses: dict[str, Any] = {}
        if method in ("baseline", "RDL"):
            losses["ce"] = (CELoss(), 1.0)
        if method in ("RDL", "RDL only"):
            mean_rdm = subj[train_subjects].mean(0)[np.ix_(fit_pos, fit_pos)]  # training subjects x fit images only
            teacher = RDMTeacher.from_array(mean_rdm, fit_pos.tolist(), method="correlation")
            rdl = RDLLoss({PULLED: teacher}, method="correlation", criterion="corr")
            losses["rdl"] = (rdl, weight if method == "RDL" else 1.0)
        run_spec = TrainSpec(**{**asdict(spec), "batch_size": len(fit_pos)})  # full batch of fresh augmentations
        hist = train_model(model, data, losses, run_spec, seed_of("brain92", "batches", f, seed))
        last = hist.iloc[-1]
        train_info = {"train_acc": float(last["train_acc"]), "final_loss": float(last["loss"]),
                      "final_loss_rdl": float(last["loss_rdl"]) if "loss_rdl" in last else float("nan")}
    else:
        train_info = {"train_acc": float("nan"), "final_loss": float("nan"), "final_loss_rdl": float("nan")}
    seconds = time.perf_counter() - t0
    eval_ids = torch.as_tensor(eval_pos)
    with torch.no_grad():
        model.eval()
        acc = float((model(normalise(images[eval_ids])).argmax(1) == labels[eval_ids]).float().mean())
    rec = {**job, **train_info, "eval_acc": acc, "train_s": seconds}
    if job["phase"] == "search":
        student = torch.from_numpy(layer_rdms(model, images[eval_ids], [PULLED])[PULLED])
        brains = torch.from_numpy(np.stack([to_condensed(torch.from_numpy(subj[k][np.ix_(eval_pos, eval_pos)])).numpy()
                                            for k in train_subjects]))
        rec["val_r"] = float(compare_rdms(student, brains, "corr").mean())  # mean over the training subjects
    else:
        rec["rdms"] = layer_rdms(model, images[eval_ids], LAYERS)
    return rec


# --------------------------------------------------------------------------- #
# evaluation on held-out pairs
# --------------------------------------------------------------------------- #
def pooled_rdm(vectors: np.ndarray, method: str) -> np.ndarray:
    """rsatoolbox's ``pool_rdm``: the RDM that best represents several subjects' RDMs under ``method``."""
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.util.pooling import pool_rdm

    return pool_rdm(RDMs(np.asarray(vectors, dtype=float)), method=method).get_vectors()[0]


def noise_ceiling_units(held: np.ndarray) -> dict[str, np.ndarray]:
    """Per held-out subject ``(H,)``: lower bound (vs the pooled others) and upper bound (vs all pooled), corr and tau-a.

    The mean over subjects is rsatoolbox's ``boot_noise_ceiling`` (leave-one-subject-out).
    """
    H = len(held)
    out: dict[str, np.ndarray] = {}
    for method in ("corr", "tau-a"):
        all_pool = torch.from_numpy(pooled_rdm(held, method))
        lower = [float(compare_rdms(torch.from_numpy(pooled_rdm(held[[j for j in range(H) if j != k]], method)),
                                    torch.from_numpy(held[k]), method)) for k in range(H)]
        upper = [float(compare_rdms(all_pool, torch.from_numpy(held[k]), method)) for k in range(H)]
        out[f"lower_{method}"], out[f"upper_{method}"] = np.array(lower), np.array(upper)
    return out


def check_noise_ceiling_against_rsatoolbox(held: np.ndarray, names: list[str], units: dict[str, np.ndarray]) -> None:
    """The mean over subjects of our per-subject bounds must equal rsatoolbox's ``boot_noise_ceiling``."""
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs

    rdms = RDMs(held, dissimilarity_measure="correlation", rdm_descriptors={"subject": names})
    lo, up = boot_noise_ceiling(rdms, method="corr", rdm_descriptor="subject")
    if not (np.isclose(lo, units["lower_corr"].mean(), atol=1e-8) and np.isclose(up, units["upper_corr"].mean(), atol=1e-8)):
        raise AssertionError(f"noise ceiling differs from rsatoolbox: ours ({units['lower_corr'].mean():.6f}, "
                             f"{units['upper_corr'].mean():.6f}) vs rsatoolbox ({lo:.6f}, {up:.6f})")


def bootstrap(cands: list[dict[str, np.ndarray]], helds: list[np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap distribution ``(n_boot,)`` of the mean held-out correlation (rsatoolbox corr) of every row.

    ``cands[f][row]`` holds square RDMs ``(H, S, n, n)`` of fold ``f`` (a candidate per held-out subject and
    seed); ``helds[f]`` the held-out subjects' square RDMs ``(H, n, n)``. Each bootstrap sample resamples the
    held-out images of every fold and the subjects, with replacement; pairs of an image with its own copy are
    dropped (as rsatoolbox's pattern bootstrap does). Seeds are averaged within a unit, then units are averaged.
    """
    rng = np.random.default_rng(seed)
    rows = list(cands[0])
    H = helds[0].shape[0]
    S = [cands[0][r].shape[1] for r in rows]
    out = {r: np.empty(n_boot) for r in rows}
    for b in range(n_boot):
        subj = rng.integers(0, H, H)
        acc = np.zeros(len(rows))
        for f, held in enumerate(helds):
            n = held.shape[-1]
            idx = rng.integers(0, n, n)
            i, j = np.triu_indices(n, 1)
            a, c = idx[i], idx[j]
            copies = a == c  # an image paired with its own copy: NaN, left out by compare_rdms
            brain = held[:, a, c]  # (H, n(n-1)/2)
            brain[:, copies] = np.nan
            stacked = np.concatenate([cands[f][r][:, :, a, c].reshape(-1, len(a)) for r in rows])
            stacked[:, copies] = np.nan
            brain, stacked = torch.from_numpy(brain), torch.from_numpy(stacked)
            sims = compare_rdms(stacked, brain, "corr").numpy()  # (sum_r H*S_r, H)
            start = 0
            for k, r in enumerate(rows):
                block = sims[start:start + H * S[k]].reshape(H, S[k], H)
                start += H * S[k]
                per_unit = np.nanmean(block[np.arange(H), :, np.arange(H)], axis=1)  # candidate h vs subject h
                acc[k] += per_unit[subj].mean()
        for k, r in enumerate(rows):
            out[r][b] = acc[k] / len(helds)
    return out


def square(v: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import squareform

    return squareform(v, checks=False)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="folder of the 92-image .mat files (default: ../shared/data/kriegeskorte2008)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=300, help="full-batch steps per student")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--grid", type=float, nargs="+", default=[0.3, 1.0, 3.0], help="RDL weights searched on validation")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.set_defaults(threads=1)  # one thread is fastest for this small CNN on full batches of 69 images
    args = p.parse_args(argv)
    workers, t_start = start_run(args, args.threads)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or (1 if args.quick else 2)
    epochs = 3 if args.quick else args.epochs
    grid = [1.0, 3.0] if args.quick else list(args.grid)
    n_boot = 50 if args.quick else args.bootstrap
    size = 16 if args.quick else args.image_size
    folds_used = 2 if args.quick else args.folds

    data = load_kriegeskorte92(args.data, image_size=size)
    labels_np = data.labels.numpy()
    subj, names = subject_rdms(data.human_it)
    folds = image_folds(labels_np, args.folds)[:folds_used]
    H = len(names)
    spec = TrainSpec(epochs=epochs, batch_size=0, lr=1e-3, optimizer="adam", weight_decay=1e-4, cosine=True)
    cfg = model_config(size)
    print(f"[brain92] {len(data)} images at {size}x{size}, {H} subjects ({', '.join(names)}; sessions averaged), "
          f"{len(folds)} image folds of {[len(te) for _, te in folds]} test images, {seeds} seed(s), "
          f"{epochs} full-batch steps, RDL weight grid {grid}, {workers} worker(s)")
    payload = {"images": data.images, "labels": data.labels, "subjects": subj, "folds": folds, "spec": spec,
               "model_config": cfg}

    # ---- 1. RDL weight per (fold, held-out subject): inner validation on training images and training subjects
    jobs = [{"phase": "search", "fold": f, "held_out": h, "method": "RDL", "seed": 0, "weight": w}
            for f in range(len(folds)) for h in range(H) for w in grid]
    print(f"[brain92] search: {len(jobs)} runs")
    search = pd.DataFrame(run_jobs(_brain_job, jobs, workers, init=_brain_init, init_args=(payload,), label="search"))
    search["held_out_subject"] = [names[h] for h in search["held_out"]]
    best = (search.sort_values(["fold", "held_out", "val_r", "weight"], ascending=[True, True, False, True])
            .groupby(["fold", "held_out"]).head(1).set_index(["fold", "held_out"])["weight"].to_dict())

    # ---- 2. final students
    jobs = []
    for f in range(len(folds)):
        for s in range(seeds):
            jobs.append({"phase": "final", "fold": f, "held_out": None, "method": "baseline", "seed": s, "weight": 0.0})
            jobs.append({"phase": "final", "fold": f, "held_out": None, "method": "untrained", "seed": s, "weight": 0.0})
            for h in range(H):
                jobs.append({"phase": "final", "fold": f, "held_out": h, "method": "RDL", "seed": s, "weight": best[(f, h)]})
                jobs.append({"phase": "final", "fold": f, "held_out": h, "method": "RDL only", "seed": s, "weight": 1.0})
    print(f"[brain92] final: {len(jobs)} runs")
    final = run_jobs(_brain_job, jobs, workers, init=_brain_init, init_args=(payload,), label="final")

    # ---- 3. held-out comparisons
    rows = []  # long table
    cands: list[dict[str, np.ndarray]] = []
    helds: list[np.ndarray] = []
    nc_units: list[dict[str, np.ndarray]] = []
    model_names = list(data.models.rdm_descriptors["name"])
    model_mats = data.models.get_matrices()
    for f, (_, test_pos) in enumerate(folds):
        n = len(test_pos)
        held_sq = np.stack([subj[k][np.ix_(test_pos, test_pos)] for k in range(H)])
        held = np.stack([to_condensed(torch.from_numpy(m)).numpy() for m in held_sq])
        helds.append(held_sq)
        nc = noise_ceiling_units(held)
        check_noise_ceiling_against_rsatoolbox(held, names, nc)
        nc_units.append(nc)
        cand: dict[str, np.ndarray] = {}
        for method in METHODS:
            for layer in LAYERS:
                arr = np.empty((H, seeds, n, n))
                for r in final:
                    if r["fold"] != f or r["method"] != method:
                        continue
                    targets = range(H) if r["held_out"] is None else [r["held_out"]]
                    v = r["rdms"][layer]
                    for h in targets:
                        arr[h, r["seed"]] = square(v)
                    for h in targets:
                        rows.append({"fold": f, "held_out_subject": names[h], "row": f"{method} @ {layer}",
                                     "kind": "student", "method": method, "layer": layer, "seed": r["seed"],
                                     "rdl_weight": r["weight"] if method == "RDL" else (1.0 if method == "RDL only" else 0.0),
                                     "r_corr": float(compare_rdms(torch.from_numpy(v), torch.from_numpy(held[h]), "corr")),
                                     "r_tau_a": float(compare_rdms(torch.from_numpy(v), torch.from_numpy(held[h]), "tau-a")),
                                     "test_acc": r["eval_acc"]})
                cand[f"{method} @ {layer}"] = arr
        for name, mat in zip(model_names, model_mats):
            msq = mat[np.ix_(test_pos, test_pos)]
            mv = to_condensed(torch.from_numpy(msq)).numpy()
            cand[name] = np.broadcast_to(msq, (H, 1, n, n))
            for h in range(H):
                rows.append({"fold": f, "held_out_subject": names[h], "row": name, "kind": "model", "method": name,
                             "layer": "", "seed": -1, "rdl_weight": float("nan"),
                             "r_corr": float(compare_rdms(torch.from_numpy(mv), torch.from_numpy(held[h]), "corr")),
                             "r_tau_a": float(compare_rdms(torch.from_numpy(mv), torch.from_numpy(held[h]), "tau-a")),
                             "test_acc": float("nan")})
        lo_sq = np.stack([square(pooled_rdm(held[[j for j in range(H) if j != k]], "corr")) for k in range(H)])
        up_sq = np.broadcast_to(square(pooled_rdm(held, "corr")), (H, n, n))
        cand["noise ceiling (lower)"] = lo_sq[:, None]
        cand["noise ceiling (upper)"] = np.asarray(up_sq)[:, None]
        for h in range(H):
            for bound in ("lower", "upper"):
                rows.append({"fold": f, "held_out_subject": names[h], "row": f"noise ceiling ({bound})",
                             "kind": "noise ceiling", "method": f"noise ceiling ({bound})", "layer": "", "seed": -1,
                             "rdl_weight": float("nan"), "r_corr": float(nc[f"{bound}_corr"][h]),
                             "r_tau_a": float(nc[f"{bound}_tau-a"][h]), "test_acc": float("nan")})
        cands.append(cand)
    long = pd.DataFrame(rows)
    units = (long.groupby(["row", "kind", "method", "layer", "fold", "held_out_subject"], sort=False)[["r_corr", "r_tau_a", "test_acc"]]
             .mean().reset_index())  # seeds averaged within a unit
    boot = bootstrap(cands, helds, n_boot, seed=12345)
    nc_lower = float(units.loc[units["row"] == "noise ceiling (lower)", "r_corr"].mean())
    nc_upper = float(units.loc[units["row"] == "noise ceiling (upper)", "r_corr"].mean())

    base_units = units[units["row"] == f"baseline @ {PULLED}"].set_index(["fold", "held_out_subject"])
    summary_rows = []
    for row, g in units.groupby("row", sort=False):
        g = g.set_index(["fold", "held_out_subject"])
        lo, hi = np.percentile(boot[row], [2.5, 97.5])
        rec = {"row": row, "kind": g["kind"].iloc[0], "method": g["method"].iloc[0], "layer": g["layer"].iloc[0],
               "units": len(g), "r_corr": float(g["r_corr"].mean()), "ci_low": float(lo), "ci_high": float(hi),
               "r_tau_a": float(g["r_tau_a"].mean()), "frac_nc_lower": float(g["r_corr"].mean()) / nc_lower,
               "test_acc": float(g["test_acc"].mean()) if g["test_acc"].notna().any() else float("nan")}
        both = pd.concat([g["r_corr"], base_units["r_corr"].rename("r_corr_base")], axis=1, join="inner").dropna()
        if row != f"baseline @ {PULLED}" and len(both) > 1 and g["kind"].iloc[0] != "noise ceiling":
            t = paired_tests(both["r_corr"], both["r_corr_base"])
            rec.update({"diff_vs_base": t["mean_diff"], "p_t_vs_base": t["p_t"], "p_wilcoxon_vs_base": t["p_wilcoxon"]})
            d = boot[row] - boot[f"baseline @ {PULLED}"]
            rec["diff_ci_low"], rec["diff_ci_high"] = (float(v) for v in np.percentile(d, [2.5, 97.5]))
        summary_rows.append(rec)
    summary = pd.DataFrame(summary_rows)
    for col in ("diff_vs_base", "p_t_vs_base", "p_wilcoxon_vs_base", "diff_ci_low", "diff_ci_high"):
        if col not in summary:
            summary[col] = float("nan")
    wall = time.perf_counter() - t_start

    # ---- 4. files
    atomic_write_csv(long, out_dir / "brain92.csv")
    atomic_write_csv(summary, out_dir / "brain92_summary.csv")
    atomic_write_csv(search.drop(columns=["phase"]), out_dir / "brain92_search.csv")
    figs = make_figures(summary, cands, helds, final, folds, data, names, out_dir, nc_lower, nc_upper)

    s = summary.set_index("row")
    values = {"rdl_heldout_r": float(s.loc[f"RDL @ {PULLED}", "r_corr"]),
              "base_heldout_r": float(s.loc[f"baseline @ {PULLED}", "r_corr"]),
              "animacy_heldout_r": float(s.loc["animacy", "r_corr"]),
              "rdl_vs_base_p": float(s.loc[f"RDL @ {PULLED}", "p_t_vs_base"]),
              "nc_lower": nc_lower}
    res = result_line(**values)
    main_rows = [f"{m} @ {PULLED}" for m in METHODS] + model_names + ["noise ceiling (lower)", "noise ceiling (upper)"]
    main_table = summary.set_index("row").loc[main_rows].reset_index()
    main_table["95% CI"] = [f"[{a:.3f}, {b:.3f}]" for a, b in zip(main_table["ci_low"], main_table["ci_high"])]
    main_table["diff 95% CI"] = [f"[{a:.3f}, {b:.3f}]" if not math.isnan(a) else "—"
                                 for a, b in zip(main_table["diff_ci_low"], main_table["diff_ci_high"])]
    main_table = main_table[["row", "r_corr", "95% CI", "r_tau_a", "frac_nc_lower", "test_acc", "diff_vs_base",
                             "diff 95% CI", "p_t_vs_base", "p_wilcoxon_vs_base"]]
    profile = (summary[summary["kind"] == "student"].pivot_table(index="method", columns="layer", values="r_corr")
               .reindex(index=METHODS, columns=LAYERS).reset_index())
    weights = search.groupby(["fold", "held_out_subject", "weight"])["val_r"].mean().unstack("weight").reset_index()
    chosen = pd.DataFrame([{"fold": f, "held_out_subject": names[h], "chosen_weight": w} for (f, h), w in best.items()])
    weights = weights.merge(chosen, on=["fold", "held_out_subject"])
    weights.columns = [f"w={c:g}" if isinstance(c, float) else c for c in weights.columns]
    command = "python benchmarks/brain92.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    md = ["# Brain-RDL on the 92 images: held-out images x held-out subjects", "",
          f"Command: `{command.strip()}`", "",
          f"Data: {len(data)} images ({size}x{size}), human-IT RDMs of {H} subjects ({', '.join(names)}), "
          "each subject's 2 sessions averaged. "
          f"{len(folds)} stratified image folds (test sizes {[len(te) for _, te in folds]}) x leave-one-subject-out = "
          f"{len(folds) * H} units; teacher = mean RDM of the 3 training subjects over the training images.", "",
          f"Student: `{cfg}`, augmentation (zoom-crop 75-100%, flip, colour jitter), Adam, {asdict(spec)} with "
          f"batch = all training images; {seeds} seed(s) per unit. RDL: layer `{PULLED}` (fixed a priori), "
          "correlation-distance RDMs, criterion 1 - Pearson r; `RDL only` has no cross-entropy.", "",
          f"Evaluation: correlation-distance RDM of each layer over the held-out images vs the held-out subject's "
          "RDM (rsatoolbox corr and tau-a), seeds averaged within a unit, mean over units; 95% CI from "
          f"{n_boot} bootstrap samples of held-out images (within folds) and subjects; `frac_nc_lower` = r / lower "
          "noise ceiling; diff/p: every row vs "
          f"`baseline @ {PULLED}`, paired over the {len(folds) * H} units (t-test, Wilcoxon; units of one fold share the "
          "baseline network, so they are not independent) and a bootstrap CI of the difference.", "",
          f"## Held-out correlation at `{PULLED}` with references", "",
          markdown_table(main_table), "",
          "## Layer profile (mean held-out r, rsatoolbox corr)", "", markdown_table(profile), "",
          "## RDL weight chosen on inner validation (mean r with training subjects on inner-validation images)", "",
          f"Grid {grid}; inner split 3/4 fit, 1/4 validation of each fold's training images, 1 seed.", "",
          markdown_table(weights), "",
          f"Figures: `{figs[0].name}`, `{figs[1].name}`. Wall time {wall:.0f} s with {workers} worker(s); "
          f"machine: {machine_info()}.", "",
          "```", res, "```", ""]
    write_text(out_dir / "brain92.md", "\n".join(md))
    print()
    print(markdown_table(main_table))
    print()
    print(markdown_table(profile))
    print()
    print(markdown_table(weights))
    print(f"wall time {wall:.0f} s; outputs in {out_dir}")
    print(res)
    return 0


def make_figures(summary, cands, helds, final, folds, data, names, out_dir: Path, nc_lower: float,
                 nc_upper: float) -> list[Path]:
    """Layer profile per method with the noise-ceiling band, and held-out human IT vs baseline vs RDL (fold 0, subject 0)."""
    from matplotlib.figure import Figure

    from rdl_neuro import vis as viz
    from rdl_neuro.rdm.interop import to_rsatoolbox

    prof = summary[summary["kind"] == "student"]
    fig = Figure(figsize=(3.3 * len(METHODS), 3.6))
    axes = fig.subplots(1, len(METHODS), sharey=True)
    for ax, method in zip(axes, METHODS):
        g = prof[prof["method"] == method].set_index("layer").reindex(LAYERS).reset_index()
        table = pd.DataFrame({"layer": g["layer"], "mean": g["r_corr"], "ci_low": g["ci_low"], "ci_high": g["ci_high"],
                              "nc_lower": nc_lower, "nc_upper": nc_upper, "method": "corr"})
        viz.plot_layer_profile(table, ax=ax, x="layer", title=f"{method}" + (f" (pulls {PULLED})" if "RDL" in method else ""))
    fig.suptitle("held-out images x held-out subjects: mean r over units, 95% bootstrap CI; grey = noise ceiling",
                 fontsize=9)
    fig.tight_layout()
    p1 = viz.save_figure(fig, out_dir / "brain92_layers.png", dpi=130)

    f, h = 0, 0
    test_pos = folds[f][1]
    cats = list(data.descriptors["category"].to_numpy()[test_pos])
    rdms, titles = [], []

    def add(square_rdm: np.ndarray, title: str) -> None:
        vec = to_condensed(torch.from_numpy(np.ascontiguousarray(square_rdm)))
        rdms.append(to_rsatoolbox(vec, [int(i) for i in test_pos], method="correlation",
                                  pattern_descriptors={"category": cats}))
        titles.append(title)

    add(helds[f][h], f"human IT, {names[h]}\n(held-out subject)")
    held_vec = to_condensed(torch.from_numpy(helds[f][h]))
    for method in ("baseline", "RDL"):
        sq = cands[f][f"{method} @ {PULLED}"][h, 0]
        r = float(compare_rdms(to_condensed(torch.from_numpy(np.ascontiguousarray(sq))), held_vec, "corr"))
        add(sq, f"{method} @ {PULLED}\nseed 0, r = {r:.2f}")
    fig = viz.plot_rdm_comparison(rdms, sort_by="category", titles=titles, rank_transform=True)
    fig.suptitle(f"fold {f}: {len(test_pos)} held-out images (rank-transformed)", fontsize=9)
    p2 = viz.save_figure(fig, out_dir / "brain92_rdms.png", dpi=130)
    return [p1, p2]


if __name__ == "__main__":
    raise SystemExit(main())
