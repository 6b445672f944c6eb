"""Brain-RDL on the 92 images: does a CNN trained toward human-IT RDMs become more brain-like on new images and people?

Data: the 92 object images of Kriegeskorte et al. (2008) with the human-IT fMRI
RDMs of 4 subjects x 2 sessions (``load_kriegeskorte92``). A subject's two
sessions are averaged (one RDM per person: the unit of generalisation is the
person).

Cross-validation: 4 image folds (stratified by the 6 categories: train on 69
images, test on 23) crossed with leave-one-subject-out: 16 units. For fold
``f`` and held-out subject ``h`` a brain teacher is the mean human-IT RDM of
the 3 other subjects over the training images; every student is scored by the
correlation (rsatoolbox ``corr``) of its ``hidden1`` RDM over the 23 held-out
images with subject ``h``'s RDM over the same images: images *and* a person it
never saw.

Students (``brain92_students.py``): the ``small`` CNN of earlier runs and a
stronger one chosen on inner validation *accuracy* (mean over the 4 folds' inner
splits) among ``bn`` (batch norm, global average pooling), ``bn+flags`` (the
same, also learning the 9 semantic category flags that ship with the images),
``wide+flags`` (twice the channels) and ``gabor+flags`` (a fixed V1-like Gabor
front end, after VOneNet) -- the choice sees no brain data and no test image.
Every teacher row uses the chosen student.

Rows (all at the pulled layer ``hidden1``, fixed a priori):

- ``baseline`` (cross-entropy only), ``untrained`` (random weights);
- brain teachers: ``RDL`` (CE + w * RDL toward human IT: correlation-distance
  RDMs, criterion 1 - Pearson r) and the alignment losses ``CKA`` / ``log-CKA`` (``CKAAlignmentLoss``: CKA between the
  student's centred Gram matrix and the brain RDM's double-centred kernel) and
  ``Li similarity`` (``SimilarityLoss``: squared differences of
  arctanh-transformed similarities); and RDL toward another species' brain,
  the monkey-IT RDM (674 cells, as in Kriegeskorte et al. 2008) over the training images,
  which shares neither subjects nor measurement noise with the held-out person;
- null teachers (``rdl_neuro.train.control_teachers``): the brain teacher with
  its stimulus labels permuted (everywhere, or within each category);
- reference teachers: the 6-way category RDM, the animacy model RDM, the
  pixel RDM of the input images;
- ``small CNN baseline`` (the student of earlier runs, cross-entropy only);
- the 8 classic model RDMs and the noise ceiling on the same held-out pairs.

No hyperparameter sees test images or the held-out subject: the loss weight of
every teacher row is chosen per (fold, held-out subject) from the same grid by
an inner split of the training images (3/4 fit, 1/4 validation), scored
against the training subjects only; every grid point and its score is logged.
Teachers that do not depend on subjects (monkey IT, category, animacy, pixel) are trained
once per fold and weight; their weight is still chosen per unit on the
training subjects.

Statistics (all from the library): layer RDMs by ``rdl_neuro.model.layer_rdms``;
per-unit pattern bootstraps of held-out images by
``rdl_neuro.inference.rsa_evaluate`` (the same draws for every row of a fold),
averaged over seeds, then over units with the subjects resampled
(``rdl_neuro.inference.fold_subject_bootstrap``), for 95% intervals; noise
ceilings by ``rdl_neuro.inference.leave_one_out_rdms`` / ``pool_rdm`` /
``noise_ceiling_bounds``; paired tests over the 16 units with FDR correction
by ``rdl_neuro.inference.paired_unit_tests`` / ``correct_pvalues``: every row
against the baseline, and every brain-teacher row against every null and
reference teacher (one family). Units of a fold share networks (the baseline,
fold-level teachers), so they are not independent.

Outputs (``--out``, default ``results/``): ``brain92.csv`` (every unit x row x
layer x seed), ``brain92_summary.csv``, ``brain92_tests.csv``,
``brain92_search.csv``, ``brain92_students.csv``, ``brain92.md``,
``brain92_rows.png`` (held-out r per row with intervals and the noise-ceiling
band), ``brain92_layers.png`` and ``brain92_rdms.png``; a result record
(``benchmarks/_provenance.py``). The last line is
``RESULT rdl_heldout_r=... base_heldout_r=... best_brain_row=... best_brain_r=... best_control_r=...
best_vs_controls_max_p=... animacy_heldout_r=... nc_lower=...``.

Usage::

    python benchmarks/brain92.py            # 16 candidate + 336 search + about 140 final students of 150
                                            # full-batch steps (weight grid 0.3, 1, 3; the wall time of the
                                            # published run is in benchmarks/results/brain92.md)
    python benchmarks/brain92.py --grid 0.1 0.3 1 3 10 --extra-seeds 3   # a wider search, 3 seeds
    python benchmarks/brain92.py --quick    # well under a minute, for the test suite

Trained students are kept in ``OUT/brain92_cache`` (keyed by the job and the
training code of this script and its students): a stopped run resumes.
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _experiments import (_WORKER_STATE, TrainSpec, base_parser, fmt, machine_info, markdown_table,  # noqa: E402
                          result_line, run_jobs, seed_of, start_run, stratified_holdout, train_model, write_text)
from brain92_students import FLAGS, LAYERS, FlagLoss, build_student, has_flags  # noqa: E402

from rdl_neuro.data import StimulusDataset, load_kriegeskorte92  # noqa: E402
from rdl_neuro.inference import (correct_pvalues, fold_subject_bootstrap, leave_one_out_rdms,  # noqa: E402
                                 noise_ceiling_bounds, paired_unit_tests, pool_rdm, rsa_evaluate)
from rdl_neuro.io import atomic_write_csv  # noqa: E402
from rdl_neuro.model.layer_rdms import layer_rdms  # noqa: E402
from rdl_neuro.rdm import compare_rdms, to_condensed  # noqa: E402
from rdl_neuro.rdm.interop import to_rsatoolbox  # noqa: E402
from rdl_neuro.train import (CELoss, CKAAlignmentLoss, RDLLoss, RDMTeacher, SimilarityLoss,  # noqa: E402
                             category_teacher, model_teacher, permuted_teacher, pixel_teacher, seed_everything)

PULLED = "hidden1"  # fixed a priori: the last representation before the readout, the network's "IT"
CANDIDATES = ["bn", "bn+flags", "wide+flags", "gabor+flags"]  # chosen on inner-validation accuracy


@dataclass(frozen=True)
class Row:
    """One row of the table: a student trained (or not) with a loss toward a teacher."""

    name: str
    kind: str  # "student", "brain teacher", "null teacher", "reference teacher"
    student: str = "strong"  # "strong" (chosen on validation) or "small"
    teacher: str | None = None  # see make_teacher
    loss: str | None = None  # "rdl", "cka", "logcka", "similarity"
    ce: bool = True
    trained: bool = True
    searched: bool = True  # loss weight chosen on inner validation (else 1)
    seeds: str = "extra"  # "main" rows get --seeds seeds, "extra" rows --extra-seeds


ROWS = [
    Row("baseline", "student", seeds="main"),
    Row("untrained", "student", trained=False, seeds="main"),
    Row("RDL", "brain teacher", teacher="brain", loss="rdl"),
    Row("CKA", "brain teacher", teacher="brain", loss="cka"),
    Row("log-CKA", "brain teacher", teacher="brain", loss="logcka"),
    Row("Li similarity", "brain teacher", teacher="brain", loss="similarity"),
    Row("RDL, monkey-IT teacher", "brain teacher", teacher="monkeyIT", loss="rdl"),
    Row("RDL, permuted teacher", "null teacher", teacher="permuted", loss="rdl"),
    Row("RDL, permuted within category", "null teacher", teacher="permuted within category", loss="rdl"),
    Row("RDL, 6-category teacher", "reference teacher", teacher="category", loss="rdl"),
    Row("RDL, animacy teacher", "reference teacher", teacher="animacy", loss="rdl"),
    Row("RDL, pixel teacher", "reference teacher", teacher="pixel", loss="rdl"),
    Row("small CNN baseline", "student", student="small"),
]
ROW = {r.name: r for r in ROWS}
SUBJECT_TEACHERS = ("brain", "permuted", "permuted within category")  # built from the training subjects
CONTROLS = [r.name for r in ROWS if r.kind in ("null teacher", "reference teacher")]
BRAIN_ROWS = [r.name for r in ROWS if r.kind == "brain teacher" and r.student == "strong"]


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #
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


def condensed(square: np.ndarray) -> np.ndarray:
    """Condensed vector(s) of square RDM(s) ``(..., n, n)``."""
    return to_condensed(torch.from_numpy(np.ascontiguousarray(square, dtype=np.float64))).numpy()


# --------------------------------------------------------------------------- #
# one student: teacher, losses, training, layer RDMs
# --------------------------------------------------------------------------- #
def make_teacher(kind: str, st: dict, fit_pos: np.ndarray, train_subjects: list[int], fold: int,
                 held_out: int | None) -> RDMTeacher:
    """The teacher ``kind`` over the fit images (stimulus ids = positions 0..91)."""
    ids = fit_pos.tolist()
    if kind in SUBJECT_TEACHERS:
        mean_rdm = st["subjects"][train_subjects].mean(0)[np.ix_(fit_pos, fit_pos)]  # training subjects only
        teacher = RDMTeacher.from_array(mean_rdm, ids, method="correlation")
        seed = seed_of("brain92", "permute", fold, -1 if held_out is None else held_out)
        if kind == "permuted":
            return permuted_teacher(teacher, seed)
        if kind == "permuted within category":
            return permuted_teacher(teacher, seed, within=list(st["categories"][fit_pos]))
        return teacher
    if kind == "category":
        return category_teacher(st["categories"][fit_pos], ids)
    if kind in ("animacy", "monkeyIT"):
        return model_teacher(st["models"], kind, ids=ids)
    if kind == "pixel":
        return pixel_teacher(st["images"][fit_pos], ids, method="correlation")
    raise ValueError(f"unknown teacher {kind!r}")


def make_losses(row: Row, student: str, teacher: RDMTeacher | None, weight: float, flags: torch.Tensor) -> dict:
    """Loss terms ``{name: (TransferLoss, weight)}`` of one row."""
    losses: dict[str, Any] = {}
    if row.ce:
        losses["ce"] = (CELoss(), 1.0)
        if has_flags(student):
            losses["flags"] = (FlagLoss(flags), 1.0)
    if row.loss is not None:
        term = {"rdl": lambda t: RDLLoss({PULLED: t}, method="correlation", criterion="corr"),
                "cka": lambda t: CKAAlignmentLoss({PULLED: t}),
                "logcka": lambda t: CKAAlignmentLoss({PULLED: t}, log=True),
                "similarity": lambda t: SimilarityLoss({PULLED: t})}[row.loss](teacher)
        losses["align"] = (term, weight if row.searched else 1.0)
    return losses


def _brain_init(payload: dict) -> None:
    _WORKER_STATE.clear()
    _WORKER_STATE.update(payload)


def training_digest(args) -> str:
    """Digest of what decides a job's result: the training options and the training code of this script and
    its students (library changes do not count: they must keep results identical, contract 6)."""
    import hashlib
    import inspect
    import json

    import brain92_students

    parts = [json.dumps({k: getattr(args, k) for k in ("image_size", "epochs", "lr", "folds")}, sort_keys=True),
             inspect.getsource(brain92_students)]
    parts += [inspect.getsource(fn) for fn in (make_teacher, make_losses, _brain_job, image_folds, subject_rdms)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cached_job(job: dict) -> dict:
    """``_brain_job`` with its result kept in the cache folder: a stopped run resumes where it stopped."""
    import hashlib
    import json
    import pickle

    from rdl_neuro.io import atomic_write_bytes

    cache: Path | None = _WORKER_STATE.get("cache")
    if cache is None:
        return _brain_job(job)
    what = _WORKER_STATE["digest"] + repr(ROW[job["row"]]) + json.dumps(job, sort_keys=True)
    key = hashlib.sha256(what.encode()).hexdigest()[:24]
    path = cache / f"{key}.pkl"
    if path.is_file():
        return {**pickle.loads(path.read_bytes()), "cached": True}
    rec = _brain_job(job)
    atomic_write_bytes(path, pickle.dumps(rec))
    return {**rec, "cached": False}


def _brain_job(job: dict) -> dict:
    """Train (or not) one student; return validation scores (search, select) or held-out layer RDMs (final)."""
    st = _WORKER_STATE
    images, labels = st["images"], st["labels"]
    f, h, seed = job["fold"], job["held_out"], job["seed"]
    row = ROW[job["row"]]
    student = job["student"]
    train_pos, test_pos = st["folds"][f]
    if job["phase"] in ("search", "select"):
        fit, val = stratified_holdout(labels[train_pos].numpy(), 0.25, seed_of("brain92", "inner", f))
        fit_pos, eval_pos = train_pos[fit], train_pos[val]
    else:
        fit_pos, eval_pos = train_pos, test_pos
    train_subjects = [k for k in range(len(st["names"])) if k != h]
    seed_everything(seed_of("brain92", "init", f, seed))  # same initial weights for every row of (fold, seed)
    model = build_student(student, st["size"])
    t0 = time.perf_counter()
    info: dict[str, Any] = {"train_acc": float("nan"), "final_loss": float("nan")}
    if row.trained:
        teacher = make_teacher(row.teacher, st, fit_pos, train_subjects, f, h) if row.teacher else None
        ids = torch.as_tensor(fit_pos)
        data = StimulusDataset(TensorDataset(images[ids], labels[ids]), ids.tolist())
        spec = TrainSpec(**{**asdict(st["spec"]), "batch_size": len(fit_pos)})  # full batch of fresh augmentations
        hist = train_model(model, data, make_losses(row, student, teacher, job["weight"], st["flags"]), spec,
                           seed_of("brain92", "batches", f, seed))
        info = {"train_acc": float(hist.iloc[-1]["train_acc"]), "final_loss": float(hist.iloc[-1]["loss"])}
    rec = {**job, **info, "train_s": time.perf_counter() - t0}
    eval_ids = torch.as_tensor(eval_pos)
    model.eval()
    with torch.no_grad():
        logits = model(images[eval_ids])
    rec["eval_acc"] = float((logits.argmax(1) == labels[eval_ids]).float().mean())
    rec["eval_ce"] = float(torch.nn.functional.cross_entropy(logits, labels[eval_ids]))
    layers = [PULLED] if job["phase"] != "final" else LAYERS
    rdms = layer_rdms(model, images[eval_ids], layers, "correlation", stimulus_ids=eval_pos.tolist(), progress=False)
    vectors = dict(zip(layers, rdms.get_vectors()))
    if job["phase"] == "search":
        # validation r with each training subject; a unit's score is the mean over its training subjects
        brains = torch.from_numpy(condensed(st["subjects"][:, eval_pos][:, :, eval_pos]))
        rs = compare_rdms(torch.from_numpy(vectors[PULLED])[None], brains, "corr")[0].numpy()
        held = [h] if h is not None else range(len(st["names"]))
        rec["val_r"] = {k: float(np.mean([rs[j] for j in range(len(rs)) if j != k])) for k in held}
    elif job["phase"] == "final":
        rec["rdms"] = vectors
    return rec


# --------------------------------------------------------------------------- #
# the three phases: student choice, weight search, final students
# --------------------------------------------------------------------------- #
def choose_student(ctx: dict) -> tuple[str, pd.DataFrame]:
    """The stronger student: the candidate with the best mean inner-validation accuracy (then the lower CE)."""
    jobs = [{"phase": "select", "fold": f, "held_out": None, "row": "baseline", "student": c, "seed": 0,
             "weight": 0.0} for c in CANDIDATES for f in range(len(ctx["folds"]))]
    runs = pd.DataFrame(ctx["run"](jobs, "student choice"))
    scores = runs.groupby("student", sort=False)[["eval_acc", "eval_ce"]].mean()
    best = scores.sort_values(["eval_acc", "eval_ce"], ascending=[False, True]).index[0]
    return best, runs.drop(columns=["phase", "row", "weight"])


def search_weights(ctx: dict, grid: list[float]) -> tuple[dict, pd.DataFrame]:
    """The loss weight of every searched row per (fold, held-out subject), chosen on inner validation.

    A grid of one weight needs no search: every row gets that weight.
    """
    if len(grid) == 1:
        best = {(row.name, f, h): grid[0] for row in ROWS for f in range(len(ctx["folds"]))
                for h in [*range(ctx["H"]), None]}
        return best, pd.DataFrame(columns=["row", "fold", "held_out", "held_out_subject", "weight", "val_r"])
    jobs = []
    for row in ROWS:
        if not (row.trained and row.teacher and row.searched):
            continue
        held = range(ctx["H"]) if row.teacher in SUBJECT_TEACHERS else [None]
        jobs += [{"phase": "search", "fold": f, "held_out": h, "row": row.name, "student": ctx["students"][row.student],
                  "seed": 0, "weight": w} for f in range(len(ctx["folds"])) for h in held for w in grid]
    runs = ctx["run"](jobs, "weight search")
    search = pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("val_r", "held_out", "phase")},
                            "held_out": h, "held_out_subject": ctx["names"][h], "val_r": v}
                           for r in runs for h, v in r["val_r"].items()])
    best = (search.sort_values(["row", "fold", "held_out", "val_r", "weight"], ascending=[True, True, True, False, True])
            .groupby(["row", "fold", "held_out"]).head(1).set_index(["row", "fold", "held_out"])["weight"].to_dict())
    return best, search


def final_jobs(ctx: dict, best: dict) -> list[dict]:
    """Every final student: per fold (subject-free rows) or per unit (rows whose teacher or weight depends on h)."""
    jobs = []
    for row in ROWS:
        per_unit = row.teacher is not None  # even fold-level teachers get their weight per unit
        for f in range(len(ctx["folds"])):
            for s in range(ctx["seeds"][row.seeds]):
                held = range(ctx["H"]) if per_unit else [None]
                weights = {h: (best[(row.name, f, h)] if row.searched and row.teacher else 1.0) for h in held}
                if per_unit and row.teacher not in SUBJECT_TEACHERS:
                    # one network per distinct chosen weight; it serves every unit that chose that weight
                    for w in sorted(set(weights.values())):
                        units = [h for h in held if weights[h] == w]
                        jobs.append({"phase": "final", "fold": f, "held_out": None, "units": units, "row": row.name,
                                     "student": ctx["students"][row.student], "seed": s, "weight": w})
                else:
                    jobs += [{"phase": "final", "fold": f, "held_out": h,
                              "units": list(range(ctx["H"])) if h is None else [h], "row": row.name,
                              "student": ctx["students"][row.student], "seed": s, "weight": weights[h]} for h in held]
    return jobs


# --------------------------------------------------------------------------- #
# evaluation on held-out pairs
# --------------------------------------------------------------------------- #
def candidates_of_fold(final: list[dict], f: int, H: int, layer: str) -> dict[str, list[list[np.ndarray]]]:
    """``{row: [[seed RDM vectors] per held-out subject]}`` of fold ``f`` at ``layer``."""
    out: dict[str, list[list[np.ndarray]]] = {}
    for r in final:
        if r["fold"] != f:
            continue
        per_subject = out.setdefault(r["row"], [[] for _ in range(H)])
        for h in r["units"]:
            per_subject[h].append(r["rdms"][layer])
    return out


def evaluate_fold(ctx: dict, final: list[dict], f: int, n_boot: int) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Held-out rows of fold ``f`` (every layer, models, noise ceiling) and the bootstrap ``(n_boot, H)`` per row.

    Each (row, held-out subject) is evaluated by ``rsa_evaluate`` against that subject's RDM with the fold's
    pattern bootstrap (the same image draws for every row and subject); seeds are averaged within a unit.
    """
    H, names = ctx["H"], ctx["names"]
    test_pos = ctx["folds"][f][1]
    held = condensed(ctx["subjects"][:, test_pos][:, :, test_pos])  # (H, P)
    draws = np.random.default_rng(seed_of("brain92", "bootstrap", f)).integers(0, len(test_pos), (n_boot, len(test_pos)))
    refs = {name: [condensed(m[np.ix_(test_pos, test_pos)])] for name, m in zip(ctx["model_names"], ctx["model_mats"])}
    t_held = torch.from_numpy(held)
    lower = leave_one_out_rdms(t_held, "corr").numpy()
    upper = pool_rdm(t_held, "corr")[0].numpy()
    ours = np.mean([float(compare_rdms(torch.from_numpy(lower[k]), t_held[k], "corr")) for k in range(H)])
    lib = noise_ceiling_bounds(t_held, np.arange(H), "corr")[0]
    if not math.isclose(ours, lib, abs_tol=1e-10):
        raise AssertionError(f"fold {f}: per-subject lower bounds average {ours} but noise_ceiling_bounds gives {lib}")
    rows, boots = [], {}
    by_layer = {layer: candidates_of_fold(final, f, H, layer) for layer in LAYERS}
    for h in range(H):
        brain = to_rsatoolbox(held[h], test_pos.tolist(), "correlation")
        cands: dict[str, list[np.ndarray]] = {f"{row} @ {layer}": c[h] for layer in LAYERS
                                              for row, c in by_layer[layer].items()}
        cands.update(refs)
        cands["noise ceiling (lower)"], cands["noise ceiling (upper)"] = [lower[h]], [upper]
        flat = [(name, k, v) for name, vs in cands.items() for k, v in enumerate(vs)]
        models = to_rsatoolbox(np.stack([v for _, _, v in flat]), test_pos.tolist(), "correlation",
                               {"name": [f"{n}#{k}" for n, k, _ in flat]})
        res = rsa_evaluate(models, brain, "corr", bootstrap="pattern", bootstrap_indices=draws, noise_ceiling=False)
        tau = rsa_evaluate(models, brain, "tau-a", noise_ceiling=False).fixed
        for (name, k, _), r, t in zip(flat, res.fixed, tau):
            rows.append({"fold": f, "held_out_subject": names[h], "row": name, "seed": k, "r_corr": float(r),
                         "r_tau_a": float(t)})
        for name in cands:
            cols = [j for j, (n, _, _) in enumerate(flat) if n == name]
            boots.setdefault(name, np.empty((n_boot, H)))[:, h] = np.nanmean(res.evaluations[:, cols], axis=1)
    return rows, boots


def unit_table(long: pd.DataFrame, final: list[dict]) -> pd.DataFrame:
    """One value per (row, unit): seeds averaged; with the row's kind, layer and test accuracy."""
    units = long.groupby(["row", "fold", "held_out_subject"], sort=False)[["r_corr", "r_tau_a"]].mean().reset_index()
    acc = pd.DataFrame([{"row": r["row"], "fold": r["fold"], "eval_acc": r["eval_acc"]} for r in final])
    acc = acc.groupby(["row", "fold"])["eval_acc"].mean()
    base = units["row"].str.split(" @ ").str[0]
    units["layer"] = units["row"].str.split(" @ ").str[1].fillna("")
    units["kind"] = [ROW[b].kind if b in ROW else ("noise ceiling" if b.startswith("noise") else "model") for b in base]
    units["test_acc"] = [acc.get((b, f), float("nan")) for b, f in zip(base, units["fold"])]
    return units


def summarise(units: pd.DataFrame, boot: dict[str, np.ndarray], nc_lower: float) -> pd.DataFrame:
    """Mean held-out r per row with its bootstrap interval, tau-a, fraction of the lower noise ceiling, accuracy."""
    rows = []
    for row, g in units.groupby("row", sort=False):
        lo, hi = np.percentile(boot[row], [2.5, 97.5])
        rows.append({"row": row, "kind": g["kind"].iloc[0], "layer": g["layer"].iloc[0], "units": len(g),
                     "r_corr": g["r_corr"].mean(), "ci_low": lo, "ci_high": hi, "r_tau_a": g["r_tau_a"].mean(),
                     "frac_nc_lower": g["r_corr"].mean() / nc_lower, "test_acc": g["test_acc"].mean()})
    return pd.DataFrame(rows)


def pairwise(units: pd.DataFrame) -> pd.DataFrame:
    """Corrected paired tests over units: every row vs the baseline; every brain row vs every control (one family)."""
    at = {f"{r.name} @ {PULLED}": r.name for r in ROWS}
    wide = units[units["row"].isin(at)].pivot_table(index=["fold", "held_out_subject"], columns="row", values="r_corr")
    wide = wide.rename(columns=at)
    others = [r.name for r in ROWS if r.name != "baseline"]
    vs_base = paired_unit_tests(wide[["baseline", *others]].to_numpy(), ["baseline", *others], reference="baseline")
    vs_base.insert(0, "family", "vs baseline")
    parts = []
    for brain_row in BRAIN_ROWS:
        t = paired_unit_tests(wide[[brain_row, *CONTROLS]].to_numpy(), [brain_row, *CONTROLS], reference=brain_row,
                              correction="none")
        # reference gives control - brain row; report brain row - control
        t = t.rename(columns={"model_a": "model_b", "model_b": "model_a"}).assign(diff=lambda d: -d["diff"])
        parts.append(t)
    vs_ctrl = pd.concat(parts, ignore_index=True)
    vs_ctrl["p_corrected"] = correct_pvalues(vs_ctrl["p"].to_numpy(), "fdr")
    vs_ctrl["significant"] = vs_ctrl["p_corrected"] < 0.05
    vs_ctrl.insert(0, "family", "brain row vs control")
    cols = ["family", "model_a", "model_b", "diff", "sem", "p", "p_corrected", "significant"]
    return pd.concat([vs_base[cols], vs_ctrl[cols]], ignore_index=True)


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #
def pulled_r(summary: pd.DataFrame) -> tuple[dict[str, float], str]:
    """Mean held-out r of every row at the pulled layer, and the best brain-teacher row."""
    s = summary.set_index("row")
    r_at = {name: float(s.loc[f"{name} @ {PULLED}", "r_corr"]) for name in ROW if f"{name} @ {PULLED}" in s.index}
    return r_at, max(BRAIN_ROWS, key=lambda n: r_at[n])


def headline(summary: pd.DataFrame, tests: pd.DataFrame, nc_lower: float) -> dict[str, Any]:
    """The RESULT values: RDL, baseline, the best brain row and whether it beats every control."""
    s = summary.set_index("row")
    r_at, best = pulled_r(summary)
    ctrl = tests[(tests["family"] == "brain row vs control") & (tests["model_a"] == best)]
    return {"rdl_heldout_r": r_at["RDL"], "base_heldout_r": r_at["baseline"], "best_brain_row": best.replace(" ", "_"),
            "best_brain_r": r_at[best], "best_control_r": max(r_at[c] for c in CONTROLS),
            "best_vs_controls_max_p": float(ctrl["p_corrected"].max()),
            "animacy_heldout_r": float(s.loc["animacy", "r_corr"]), "nc_lower": nc_lower}


def claims(summary: pd.DataFrame, tests: pd.DataFrame, students: pd.DataFrame, strong: str, nc_lower: float,
           ran: int, total: int, wall: float, workers: int, train_s: float) -> dict[str, str]:
    """The sentences the README quotes, written from the numbers so that the claim follows the result."""
    s = summary.set_index("row")
    r_at, best = pulled_r(summary)
    ctrl = tests[(tests["family"] == "brain row vs control") & (tests["model_a"] == best)].set_index("model_b")
    base = tests[tests["family"] == "vs baseline"].set_index("model_a")
    acc = students.groupby("student")["eval_acc"].mean().sort_values(ascending=False)
    best_ctrl = max(CONTROLS, key=lambda c: r_at[c])
    lost = [c for c in CONTROLS if not ctrl.loc[c, "significant"]]
    goal, animacy = 0.8 * nc_lower, float(s.loc["animacy", "r_corr"])
    if not lost:
        beats = f"beats every null and reference teacher (largest FDR-corrected p = {ctrl['p_corrected'].max():.2g})"
    else:
        beats = (f"does **not** beat every null and reference teacher: {len(lost)} of {len(CONTROLS)} differences are "
                 f"not significant after FDR correction ({'; '.join(lost)}); the best control, {best_ctrl}, reaches "
                 f"r = {r_at[best_ctrl]:.3f}")
    reach = (f"It {'reaches' if r_at[best] >= goal else 'stays below'} the goal of r >= {goal:.2f} (0.8 of the lower "
             f"noise ceiling, {nc_lower:.3f}) and {'passes' if r_at[best] > animacy else 'stays below'} the animacy "
             f"model RDM ({animacy:.3f}).")
    return {
        "student_choice": f"`{strong}` (inner-validation accuracy " + ", ".join(
            f"{name} {a:.3f}" for name, a in acc.items()) + ")",
        "strong_vs_small": (f"{r_at['small CNN baseline']:.3f} (small CNN) to {r_at['baseline']:.3f} (FDR p = "
                            f"{base.loc['small CNN baseline', 'p_corrected']:.2g})"),
        "verdict": f"the best brain-teacher row, {best} (r = {r_at[best]:.3f}), {beats}. {reach}",
        "vs_controls": "; ".join(f"{c} {ctrl.loc[c, 'diff']:+.3f} (p = {ctrl.loc[c, 'p_corrected']:.2g})"
                                 for c in CONTROLS),
        "brain_rows": "; ".join(f"{b} {r_at[b]:.3f} (vs baseline {base.loc[b, 'diff']:+.3f}, FDR p = "
                                f"{base.loc[b, 'p_corrected']:.2g})" for b in BRAIN_ROWS),
        "training": (f"{total} student jobs" + (f" ({total - ran} read from the cache of an earlier run with the same "
                                                  "training code)" if ran < total else "")
                     + f"; this run {wall / 60:.0f} min with {workers} worker processes; training of all jobs "
                     f"{train_s / 60:.0f} worker-minutes as measured when each ran"),
    }


def main_table(summary: pd.DataFrame, tests: pd.DataFrame, model_names: list[str]) -> pd.DataFrame:
    """Rows at the pulled layer with references, intervals and the corrected test against the baseline."""
    order = [f"{r.name} @ {PULLED}" for r in ROWS] + model_names + ["noise ceiling (lower)", "noise ceiling (upper)"]
    t = summary.set_index("row").loc[order].reset_index()
    vb = tests[tests["family"] == "vs baseline"].set_index("model_a")
    base_name = t["row"].str.replace(f" @ {PULLED}", "", regex=False)
    t["95% CI"] = [f"[{a:.3f}, {b:.3f}]" for a, b in zip(t["ci_low"], t["ci_high"])]
    t["diff vs baseline"] = [vb["diff"].get(n, float("nan")) for n in base_name]
    t["p_fdr vs baseline"] = [vb["p_corrected"].get(n, float("nan")) for n in base_name]
    return t[["row", "kind", "r_corr", "95% CI", "r_tau_a", "frac_nc_lower", "test_acc", "diff vs baseline",
              "p_fdr vs baseline"]]


def write_report(ctx: dict, out: dict, figs: list[Path], res: str, wall: float) -> str:
    """The markdown report (also printed)."""
    a = ctx["args"]
    ctrl = out["tests"][out["tests"]["family"] == "brain row vs control"]
    profile = (out["summary"][out["summary"]["layer"] != ""].assign(base=lambda d: d["row"].str.split(" @ ").str[0])
               .pivot_table(index="base", columns="layer", values="r_corr").reindex(index=list(ROW), columns=LAYERS)
               .reset_index().rename(columns={"base": "row"}))
    if len(out["search"]):
        weights = out["search"].groupby(["row", "weight"])["val_r"].mean().unstack("weight").reset_index()
        weights.columns = [f"w={c:g}" if isinstance(c, float) else c for c in weights.columns]
        chosen = pd.Series(out["best"]).rename("w").reset_index().groupby("level_0")["w"].apply(
            lambda w: ", ".join(f"{v:g}" for v in w)).rename("chosen (per unit)")
        weights_md = markdown_table(weights.merge(chosen, left_on="row", right_index=True))
    else:
        weights_md = f"No search: the grid has one weight, so every teacher row used w = {ctx['grid'][0]:g}."
    students = out["students"].groupby("student")[["eval_acc", "eval_ce"]].mean().reset_index()
    command = "python benchmarks/brain92.py " + " ".join(shlex.quote(x) for x in ctx["argv"])
    md = ["# Brain-RDL on the 92 images: held-out images x held-out subjects", "",
          f"Command: `{command.strip()}`", "",
          f"Data: 92 images ({a.image_size}x{a.image_size}), human-IT RDMs of {ctx['H']} subjects "
          f"({', '.join(ctx['names'])}), each subject's 2 sessions averaged. {len(ctx['folds'])} stratified image folds "
          f"x leave-one-subject-out = {len(ctx['folds']) * ctx['H']} units.", "",
          f"Training: Adam, {asdict(ctx['spec'])}, full batches of fresh augmentations; seeds: {ctx['seeds']['main']} for "
          f"{', '.join(r.name for r in ROWS if r.seeds == 'main')}, {ctx['seeds']['extra']} for the other rows. "
          f"Loss-weight grid {ctx['grid']} for every teacher row (with more than one weight: chosen per unit on an "
          "inner split, 3/4 fit, 1/4 validation of the training images, scored against the training subjects; "
          "1 seed).", "",
          f"## Stronger student (chosen on inner-validation accuracy): `{ctx['students']['strong']}`", "",
          markdown_table(students), "",
          f"## Held-out correlation at `{PULLED}` with references", "",
          f"r: mean over units of rsatoolbox corr with the held-out subject (seeds averaged within a unit); 95% CI: "
          f"{a.bootstrap} pattern-bootstrap samples of held-out images per fold (rdl_neuro.inference.rsa_evaluate) with "
          "subjects resampled; diff/p: paired t-test over the units against the baseline, FDR-corrected over the rows "
          "(rdl_neuro.inference.paired_unit_tests).", "",
          markdown_table(out["table"]), "",
          "## Brain-teacher rows vs null and reference teachers", "",
          "Paired t-tests over units, diff = brain row - control, FDR over all pairs of this table.", "",
          markdown_table(ctrl.drop(columns=["family"])), "",
          "## Layer profile (mean held-out r, rsatoolbox corr)", "", markdown_table(profile), "",
          "## Loss weights: mean inner-validation r per grid point, and the weights chosen", "",
          weights_md, "",
          f"Figures: {', '.join(f'`{p.name}`' for p in figs)}. Wall time {wall:.0f} s with {ctx['workers']} worker(s); "
          f"machine: {machine_info()}.", "",
          "```", res, "```", ""]
    return "\n".join(md)


def make_figures(ctx: dict, out: dict, out_dir: Path) -> list[Path]:
    """Held-out r per row with intervals and the noise-ceiling band; layer profiles; held-out RDMs (fold 0, subject 0)."""
    from matplotlib.figure import Figure

    from rdl_neuro import vis as viz

    s = out["summary"].set_index("row")
    colours = {"student": "0.45", "brain teacher": "tab:blue", "null teacher": "tab:red",
               "reference teacher": "tab:orange", "model": "tab:green"}
    order = [f"{r.name} @ {PULLED}" for r in ROWS] + ["animacy", "monkeyIT", "EVA"]
    fig = Figure(figsize=(9.0, 6.2))
    ax = fig.subplots()
    y = np.arange(len(order))[::-1]
    ax.axvspan(out["nc_lower"], out["nc_upper"], color="0.85", label="noise ceiling")
    for yi, name in zip(y, order):
        row = s.loc[name]
        c = colours.get(row["kind"], "k")
        ax.errorbar(row["r_corr"], yi, xerr=[[row["r_corr"] - row["ci_low"]], [row["ci_high"] - row["r_corr"]]],
                    fmt="o", color=c, capsize=3)
    ax.axvline(s.loc[f"baseline @ {PULLED}", "r_corr"], color="0.45", ls=":", lw=1)
    ax.set_yticks(y, [n.replace(f" @ {PULLED}", "") for n in order], fontsize=8)
    ax.set_xlabel(f"held-out r with the held-out subject ({PULLED}; rsatoolbox corr), 95% bootstrap CI")
    for kind, c in colours.items():
        ax.plot([], [], "o", color=c, label=kind)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("92 images: held-out images x held-out subjects", fontsize=9)
    fig.tight_layout()
    paths = [viz.save_figure(fig, out_dir / "brain92_rows.png", dpi=130)]

    shown = ["baseline", "RDL", "CKA", "RDL, permuted teacher", "RDL, animacy teacher"]
    fig = Figure(figsize=(3.0 * len(shown), 3.4))
    for ax, name in zip(fig.subplots(1, len(shown), sharey=True), shown):
        g = out["summary"][out["summary"]["row"].str.startswith(f"{name} @ ")].set_index("layer").reindex(LAYERS)
        table = pd.DataFrame({"layer": LAYERS, "mean": g["r_corr"].to_numpy(), "ci_low": g["ci_low"].to_numpy(),
                              "ci_high": g["ci_high"].to_numpy(), "nc_lower": out["nc_lower"],
                              "nc_upper": out["nc_upper"], "method": "corr"})
        viz.plot_layer_profile(table, ax=ax, x="layer", title=name)
    fig.suptitle("layer profiles: mean held-out r, 95% bootstrap CI; grey = noise ceiling", fontsize=9)
    fig.tight_layout()
    paths.append(viz.save_figure(fig, out_dir / "brain92_layers.png", dpi=130))

    test_pos = ctx["folds"][0][1]
    cats = list(ctx["categories"][test_pos])
    vecs = {"human IT, held-out subject " + ctx["names"][0]: condensed(ctx["subjects"][0][np.ix_(test_pos, test_pos)])}
    c0 = candidates_of_fold(out["final"], 0, ctx["H"], PULLED)
    for name in ("baseline", "RDL"):
        vecs[f"{name} @ {PULLED}, seed 0"] = c0[name][0][0]
    rdms = [to_rsatoolbox(v, test_pos.tolist(), "correlation", pattern_descriptors={"category": cats}) for v in vecs.values()]
    fig = viz.plot_rdm_comparison(rdms, sort_by="category", titles=list(vecs), rank_transform=True)
    fig.suptitle(f"fold 0: {len(test_pos)} held-out images (rank-transformed)", fontsize=9)
    paths.append(viz.save_figure(fig, out_dir / "brain92_rdms.png", dpi=130))
    return paths


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #
def parse_args(argv: list[str] | None):
    """Command-line options (``--quick`` shrinks everything for the test suite)."""
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="folder of the 92-image .mat files (default: ../shared/data/kriegeskorte2008)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=150, help="full-batch steps per student")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--grid", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                   help="loss weights searched on inner validation for every teacher row (one value: that weight, "
                        "no search)")
    p.add_argument("--extra-seeds", type=int, default=1, help="seeds of the rows other than baseline and untrained")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--no-cache", action="store_true",
                   help="do not keep or reuse trained students' results in OUT/brain92_cache (kept by default: a "
                        "stopped run resumes; delete the folder after changing the training code)")
    p.set_defaults(threads=1)  # one thread is fastest for these small CNNs on full batches of 69 images
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.epochs, args.grid, args.bootstrap, args.extra_seeds = 16, 2, [1.0, 3.0], 50, 1
    return args


def setup(args, argv: list[str], workers: int) -> dict:
    """Data, folds and the job runner shared by the phases."""
    data = load_kriegeskorte92(args.data, image_size=args.image_size)
    subjects, names = subject_rdms(data.human_it)
    folds = image_folds(data.labels.numpy(), args.folds)[: 1 if args.quick else args.folds]
    spec = TrainSpec(epochs=args.epochs, batch_size=0, lr=args.lr, optimizer="adam", weight_decay=1e-4, cosine=True)
    ctx = {"args": args, "argv": argv, "workers": workers, "folds": folds, "subjects": subjects, "names": names,
           "H": len(names), "spec": spec, "grid": list(args.grid), "categories": data.descriptors["category"].to_numpy(),
           "model_names": list(data.models.rdm_descriptors["name"]), "model_mats": data.models.get_matrices(),
           "seeds": {"main": args.seeds or (1 if args.quick else 2), "extra": args.extra_seeds}}
    payload = {"images": data.images, "labels": data.labels, "subjects": subjects, "names": names, "folds": folds,
               "spec": spec, "size": args.image_size, "categories": ctx["categories"], "models": data.models,
               "flags": torch.tensor(data.descriptors[FLAGS].to_numpy(dtype=np.float32))}
    if not args.no_cache:
        payload["cache"] = args.out / "brain92_cache"
        payload["cache"].mkdir(parents=True, exist_ok=True)
        payload["digest"] = training_digest(args)
    ctx["cached"], ctx["train_s"] = [], 0.0

    def run(jobs: list[dict], label: str) -> list[dict]:
        done = run_jobs(_cached_job, jobs, workers, init=_brain_init, init_args=(payload,), label=label)
        ctx["cached"] += [bool(r.get("cached")) for r in done]
        ctx["train_s"] += sum(r["train_s"] for r in done)  # measured when the job ran (also for cached jobs)
        return done

    ctx["run"] = run
    return ctx


def main(argv: list[str] | None = None) -> int:
    from _provenance import start_record

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    workers, t_start = start_run(args, args.threads)
    record = start_record("brain92", args, argv, seeds={"main": args.seeds, "extra": args.extra_seeds},
                          depends_on=["rdl_neuro/train", "rdl_neuro/model", "rdl_neuro/rdm", "rdl_neuro/inference",
                                      "rdl_neuro/data", "benchmarks/brain92.py", "benchmarks/brain92_students.py",
                                      "benchmarks/_experiments.py"], quick_args=["--quick"])
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = setup(args, argv, workers)
    print(f"[brain92] 92 images at {args.image_size}px, {ctx['H']} subjects, {len(ctx['folds'])} folds, "
          f"{args.epochs} full-batch steps, grid {ctx['grid']}, seeds {ctx['seeds']}, {workers} worker(s)")

    strong, students = choose_student(ctx)
    ctx["students"] = {"strong": strong, "small": "small"}
    print(f"[brain92] stronger student: {strong}")
    best, search = search_weights(ctx, ctx["grid"])
    final = ctx["run"](final_jobs(ctx, best), "final")

    rows, boots = [], []
    for f in range(len(ctx["folds"])):
        r, b = evaluate_fold(ctx, final, f, args.bootstrap)
        rows += r
        boots.append(b)
    long = pd.DataFrame(rows)
    units = unit_table(long, final)
    # the same subject draws for every row (one seed): rows stay paired
    boot = {row: fold_subject_bootstrap([b[row] for b in boots], ctx["H"], seed=12345) for row in boots[0]}
    nc_lower = float(units.loc[units["row"] == "noise ceiling (lower)", "r_corr"].mean())
    nc_upper = float(units.loc[units["row"] == "noise ceiling (upper)", "r_corr"].mean())
    summary = summarise(units, boot, nc_lower)
    tests = pairwise(units)
    out = {"summary": summary, "tests": tests, "search": search, "best": best, "students": students, "final": final,
           "nc_lower": nc_lower, "nc_upper": nc_upper}
    out["table"] = main_table(summary, tests, ctx["model_names"])
    values = headline(summary, tests, nc_lower)
    res = result_line(**values)

    atomic_write_csv(long, out_dir / "brain92.csv")
    atomic_write_csv(summary, out_dir / "brain92_summary.csv")
    atomic_write_csv(tests, out_dir / "brain92_tests.csv")
    atomic_write_csv(search, out_dir / "brain92_search.csv")
    atomic_write_csv(students, out_dir / "brain92_students.csv")
    figs = make_figures(ctx, out, out_dir)
    wall = time.perf_counter() - t_start
    md = write_report(ctx, out, figs, res, wall)
    write_text(out_dir / "brain92.md", md)
    shown = out["table"].map(fmt)  # the published table, cells as in brain92.md
    texts = claims(summary, tests, students, strong, nc_lower, len(ctx["cached"]) - sum(ctx["cached"]),
                   len(ctx["cached"]), wall, workers, ctx["train_s"])
    record.finish(shown, result_line=res, values={**values, **texts}, exact=summary[["row", "r_corr", "ci_low", "ci_high"]],
                  title="Brain-RDL on the 92 images (held-out images x held-out subjects)",
                  notes=f"stronger student: {strong}; wall time {wall:.0f} s with {workers} worker(s); "
                        f"{sum(ctx['cached'])} of {len(ctx['cached'])} trained students read from the cache of an "
                        "earlier run with the same training code")
    print(md)
    print(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
