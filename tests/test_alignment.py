"""Alignment criteria (rdl_neuro.train.alignment): loop references, gradients, invariances, masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rdl_neuro.train import CKAAlignmentLoss, CKALoss, RDMTeacher, SimilarityLoss, Trainer
from rdl_neuro.train.alignment import double_centre, rdm_kernel
from rdl_neuro.data.stimulus import UNCOVERED


# ---------------------------------------------------------------- plain loop references of the formulas
def loop_cka(x: np.ndarray, d: np.ndarray, square_d: bool) -> float:
    """Linear CKA between the centred Gram of x (n, f) and -1/2 H D H, with explicit sums."""
    n = x.shape[0]
    mean = [sum(x[i, c] for i in range(n)) / n for c in range(x.shape[1])]
    xc = [[x[i, c] - mean[c] for c in range(x.shape[1])] for i in range(n)]
    k = [[sum(xc[i][c] * xc[j][c] for c in range(x.shape[1])) for j in range(n)] for i in range(n)]
    dd = [[d[i, j] ** 2 if square_d else d[i, j] for j in range(n)] for i in range(n)]
    row = [sum(dd[i]) / n for i in range(n)]
    col = [sum(dd[i][j] for i in range(n)) / n for j in range(n)]
    tot = sum(row) / n
    l = [[-0.5 * (dd[i][j] - row[i] - col[j] + tot) for j in range(n)] for i in range(n)]
    kl = sum(k[i][j] * l[i][j] for i in range(n) for j in range(n))
    kk = math.sqrt(sum(k[i][j] ** 2 for i in range(n) for j in range(n)))
    ll = math.sqrt(sum(l[i][j] ** 2 for i in range(n) for j in range(n)))
    return kl / (kk * ll)


def loop_similarity(x: np.ndarray, t: np.ndarray, pairs: list[tuple[int, int]], clip: float = 1e-3) -> float:
    """Li et al.: mean over pairs of (atanh S_ij - atanh T_ij)^2, S the cosine of x centred over its rows."""
    n, f = x.shape
    mean = [sum(x[i, c] for i in range(n)) / n for c in range(f)]
    xc = [[x[i, c] - mean[c] for c in range(f)] for i in range(n)]
    norm = [math.sqrt(sum(v * v for v in row)) for row in xc]
    total = 0.0
    for i, j in pairs:
        s = sum(xc[i][c] * xc[j][c] for c in range(f)) / (norm[i] * norm[j])
        s = min(max(s, -1 + clip), 1 - clip)
        tt = min(max(t[i, j], -1 + clip), 1 - clip)
        total += (math.atanh(s) - math.atanh(tt)) ** 2
    return total / len(pairs)


def corr_rdm(rng: np.random.Generator, n: int, p: int = 12) -> np.ndarray:
    y = rng.normal(size=(n, p))
    return 1 - np.corrcoef(y)


# ---------------------------------------------------------------- CKA
@pytest.mark.parametrize("log", [False, True])
def test_cka_matches_loop_with_masks(rng: np.random.Generator, log: bool) -> None:
    n_teacher = 8
    rdm = corr_rdm(rng, n_teacher)
    teacher = RDMTeacher(rdm, list(range(100, 100 + n_teacher)), method="correlation")
    # batch: stimuli 100..105, a second copy of 101, an uncovered sample and an unknown id
    ids = torch.tensor([100, 101, 102, 103, 104, 105, 101, UNCOVERED, 999])
    x = torch.from_numpy(rng.normal(size=(len(ids), 5)))
    loss, terms = CKAAlignmentLoss({"fc": teacher}, log=log)({"fc": x}, ids)
    used = [0, 1, 2, 3, 4, 5]  # one sample per covered stimulus, the first
    rows = [i - 100 for i in ids[used].tolist()]
    cka = loop_cka(x[used].numpy(), rdm[np.ix_(rows, rows)], square_d=False)
    expected = -math.log(cka) if log else 1 - cka
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert list(terms) == ["logcka/fc" if log else "cka/fc"]


def test_cka_drops_stimuli_with_missing_teacher_entries(rng: np.random.Generator) -> None:
    rdm = corr_rdm(rng, 6)
    rdm[1, 4] = rdm[4, 1] = np.nan
    teacher = RDMTeacher(rdm, list(range(6)), method="correlation")
    x = torch.from_numpy(rng.normal(size=(6, 4)))
    loss, _ = CKAAlignmentLoss({"fc": teacher})({"fc": x}, torch.arange(6))
    keep = [0, 2, 3, 4, 5]  # stimulus 1 (the first with a gap) is dropped, then every pair is known
    assert float(loss) == pytest.approx(1 - loop_cka(x[keep].numpy(), rdm[np.ix_(keep, keep)], False), abs=1e-6)


def test_cka_euclidean_rdm_is_squared(rng: np.random.Generator) -> None:
    y = rng.normal(size=(7, 3))
    rdm = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1))
    teacher = RDMTeacher(rdm, list(range(7)), method="euclidean")
    x = torch.from_numpy(rng.normal(size=(7, 5)))
    loss, _ = CKAAlignmentLoss({"fc": teacher})({"fc": x}, torch.arange(7))
    assert float(loss) == pytest.approx(1 - loop_cka(x.numpy(), rdm, square_d=True), abs=1e-6)
    # the kernel of a euclidean RDM of y is y's centred Gram matrix (classical MDS)
    yc = y - y.mean(0)
    np.testing.assert_allclose(rdm_kernel(torch.from_numpy(rdm), "euclidean").numpy(), yc @ yc.T, atol=1e-10)


def test_cka_with_network_teacher_equals_linear_cka(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.normal(size=(9, 5)))
    t = torch.from_numpy(rng.normal(size=(9, 7)))
    loss, _ = CKAAlignmentLoss({"fc": "t_fc"})({"fc": x}, None, {"t_fc": t})
    assert float(loss) == pytest.approx(float(CKALoss("fc", "t_fc")(x, t)), abs=1e-10)
    tc = t.numpy() - t.numpy().mean(0)
    sq = ((tc[:, None] - tc[None]) ** 2).sum(-1)
    assert float(loss) == pytest.approx(1 - loop_cka(x.numpy(), sq, square_d=False), abs=1e-6)


def test_cka_invariances(rng: np.random.Generator) -> None:
    rdm = corr_rdm(rng, 8)
    teacher = RDMTeacher(rdm, list(range(8)), method="correlation")
    scaled_teacher = RDMTeacher(3.5 * rdm, list(range(8)), method="correlation")
    x = torch.from_numpy(rng.normal(size=(8, 6)))
    ids = torch.arange(8)
    crit = CKAAlignmentLoss({"fc": teacher})
    base = float(crit({"fc": x}, ids)[0])
    q, _ = torch.linalg.qr(torch.from_numpy(rng.normal(size=(6, 6))))
    perm = torch.from_numpy(rng.permutation(8))
    for variant in (2.7 * x, x @ q, x + 5.0):  # isotropic scale, rotation, translation of the student
        assert float(crit({"fc": variant}, ids)[0]) == pytest.approx(base, abs=1e-10)
    assert float(crit({"fc": x[perm]}, ids[perm])[0]) == pytest.approx(base, abs=1e-10)  # batch order
    assert float(CKAAlignmentLoss({"fc": scaled_teacher})({"fc": x}, ids)[0]) == pytest.approx(base, abs=1e-10)
    # the loss is 0 for a student whose own kernel is the teacher's, and not for another student
    y = torch.from_numpy(rng.normal(size=(8, 4)))
    own = RDMTeacher(torch.cdist(y, y) ** 2, list(range(8)), method="sqeuclidean")
    assert abs(float(CKAAlignmentLoss({"fc": own})({"fc": y}, ids)[0])) < 1e-12
    assert float(CKAAlignmentLoss({"fc": own})({"fc": x}, ids)[0]) > 0.05


@pytest.mark.parametrize("log", [False, True])
def test_cka_gradcheck(rng: np.random.Generator, log: bool) -> None:
    teacher = RDMTeacher(corr_rdm(rng, 6), list(range(6)), method="correlation")
    ids = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    x = torch.from_numpy(rng.normal(size=(7, 3))).requires_grad_(True)
    t = torch.from_numpy(rng.normal(size=(7, 4)))
    crit = CKAAlignmentLoss({"fc": teacher}, log=log)
    assert torch.autograd.gradcheck(lambda v: crit({"fc": v}, ids)[0], (x,))
    net = CKAAlignmentLoss({"fc": "t"}, log=log)
    assert torch.autograd.gradcheck(lambda v: net({"fc": v}, None, {"t": t})[0], (x,))


# ---------------------------------------------------------------- Li et al.'s similarity loss
def test_similarity_loss_matches_loop_with_masks(rng: np.random.Generator) -> None:
    rdm = corr_rdm(rng, 7)
    rdm[2, 5] = rdm[5, 2] = np.nan
    teacher = RDMTeacher(rdm, list(range(7)), method="correlation")
    ids = torch.tensor([0, 1, 2, 3, 5, 6, 1, UNCOVERED])
    x = torch.from_numpy(rng.normal(size=(len(ids), 6)))
    loss, terms = SimilarityLoss({"fc": teacher})({"fc": x}, ids)
    kept = list(range(7))  # the samples with a usable pair; the uncovered one is left out of the centring too
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)
             if ids[i] != ids[j] and not (sorted((int(ids[i]), int(ids[j]))) == [2, 5])]
    t = 1 - rdm[np.ix_(ids[kept].numpy(), ids[kept].numpy())]
    assert float(loss) == pytest.approx(loop_similarity(x[kept].numpy(), t, pairs), abs=1e-6)
    assert list(terms) == ["sim/fc"]


def test_similarity_loss_network_teacher_and_clip(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.normal(size=(6, 4)))
    t = torch.from_numpy(rng.normal(size=(6, 9)))
    loss, _ = SimilarityLoss({"fc": "t"}, clip=0.01)({"fc": x}, None, {"t": t})
    tc = t.numpy() - t.numpy().mean(0)
    tn = tc / np.linalg.norm(tc, axis=1, keepdims=True)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    assert float(loss) == pytest.approx(loop_similarity(x.numpy(), tn @ tn.T, pairs, clip=0.01), abs=1e-6)


def test_similarity_loss_invariances_and_gradcheck(rng: np.random.Generator) -> None:
    teacher = RDMTeacher(corr_rdm(rng, 7), list(range(7)), method="correlation")
    ids = torch.arange(7)
    x = torch.from_numpy(rng.normal(size=(7, 5)))
    crit = SimilarityLoss({"fc": teacher})
    base = float(crit({"fc": x}, ids)[0])
    q, _ = torch.linalg.qr(torch.from_numpy(rng.normal(size=(5, 5))))
    perm = torch.from_numpy(rng.permutation(7))
    for variant in (0.3 * x, x @ q, x - 2.0):
        assert float(crit({"fc": variant}, ids)[0]) == pytest.approx(base, abs=1e-10)
    assert float(crit({"fc": x[perm]}, ids[perm])[0]) == pytest.approx(base, abs=1e-10)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: crit({"fc": v}, ids)[0], (xg,))
    t = torch.from_numpy(rng.normal(size=(7, 3)))
    net = SimilarityLoss({"fc": "t"})
    assert torch.autograd.gradcheck(lambda v: net({"fc": v}, None, {"t": t})[0], (xg,))


# ---------------------------------------------------------------- errors, edge cases, training
def test_errors_name_the_problem(rng: np.random.Generator) -> None:
    rdm = corr_rdm(rng, 5)
    with pytest.raises(ValueError, match="correlation or cosine RDM teacher"):
        SimilarityLoss({"fc": RDMTeacher(rdm, list(range(5)), method="euclidean")})
    crit = CKAAlignmentLoss({"fc": RDMTeacher(rdm, list(range(5)), method="correlation")})
    x = torch.from_numpy(rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="stimulus_ids are needed"):
        crit({"fc": x})
    with pytest.raises(KeyError, match="'fc2'"):
        crit({"fc2": x}, torch.arange(5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        crit({"fc": x.clone().fill_(float("nan"))}, torch.arange(5))
    with pytest.raises(TypeError, match="layer name"):
        CKAAlignmentLoss({"fc": 3})  # type: ignore[dict-item]


def test_too_few_stimuli_give_a_connected_zero(rng: np.random.Generator) -> None:
    crit = CKAAlignmentLoss({"fc": RDMTeacher(corr_rdm(rng, 5), list(range(5)), method="correlation")})
    x = torch.from_numpy(rng.normal(size=(4, 3))).requires_grad_(True)
    loss, _ = crit({"fc": x}, torch.tensor([0, 0, 1, UNCOVERED]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and x.grad is not None and crit.skipped_terms["fc"] == 1


def test_double_centre_centres_rows_and_columns(rng: np.random.Generator) -> None:
    m = double_centre(torch.from_numpy(rng.normal(size=(5, 5))))
    np.testing.assert_allclose(m.sum(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(m.sum(1).numpy(), 0, atol=1e-12)


@pytest.mark.parametrize("crit_cls", [CKAAlignmentLoss, SimilarityLoss])
def test_trains_with_the_trainer(rng: np.random.Generator, crit_cls: type) -> None:
    from torch.utils.data import TensorDataset

    from rdl_neuro.data import StimulusDataset

    torch.manual_seed(0)
    x = torch.randn(24, 10)
    labels = torch.arange(24) % 3
    teacher = RDMTeacher(corr_rdm(rng, 24), list(range(24)), method="correlation")
    model = torch.nn.Sequential()
    model.add_module("fc", torch.nn.Linear(10, 16))
    model.add_module("out", torch.nn.Linear(16, 3))
    crit = crit_cls({"fc": teacher})
    before = float(crit({"fc": model.fc(x)}, torch.arange(24))[0])
    trainer = Trainer(model, StimulusDataset(TensorDataset(x, labels), list(range(24))), losses={"align": (crit, 1.0)},
                      optimizer=torch.optim.Adam(model.parameters(), lr=0.01), batch_size=24, epochs=40, seed=0,
                      quiet=True, device="cpu", distributed=False)
    history = trainer.fit()
    after = float(crit({"fc": model.fc(x)}, torch.arange(24))[0])
    assert "loss_align" in history.columns and f"align/{crit.log_name}/fc" in history.columns
    assert after < 0.8 * before
