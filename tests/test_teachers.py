"""RDMTeacher (constructors, batch_target against a loop, validation) and NetworkTeacher."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from rsatoolbox.rdm import RDMs
from torch import nn

from rdl_neuro.rdm import compute_rdm, to_condensed
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher


def random_rdm(n: int, seed: int = 0, p: int = 4) -> torch.Tensor:
    x = torch.randn(n, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return compute_rdm(x, "euclidean", square=True)


def loop_batch_target(rdm: torch.Tensor, teacher_ids: list, batch_ids: list) -> tuple[torch.Tensor, torch.Tensor]:
    b = len(batch_ids)
    target = torch.zeros(b, b, dtype=torch.float64)
    mask = torch.zeros(b, b, dtype=torch.bool)
    row = {i: k for k, i in enumerate(teacher_ids)}
    for i in range(b):
        for j in range(b):
            a, c = row.get(batch_ids[i]), row.get(batch_ids[j])
            if a is None or c is None or batch_ids[i] == batch_ids[j]:
                continue
            v = rdm[a, c].item()
            if math.isnan(v):
                continue
            target[i, j], mask[i, j] = v, True
    return target, mask


@pytest.mark.parametrize("seed", range(5))
def test_batch_target_matches_loop(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(3, 12))
    rdm = random_rdm(n, seed)
    # missing entries, symmetric
    for _ in range(int(g.integers(0, n))):
        i, j = g.choice(n, 2, replace=False)
        rdm[i, j] = rdm[j, i] = float("nan")
    teacher_ids = [int(v) for v in g.choice(1000, n, replace=False)]
    teacher = RDMTeacher.from_array(rdm, teacher_ids)
    # repeated stimuli, uncovered samples (-1) and unknown ids
    pool = teacher_ids + [-1, 5000, 5001]
    batch = [int(v) for v in g.choice(pool, int(g.integers(2, 20)))]
    target, mask = teacher.batch_target(torch.tensor(batch))
    ref_t, ref_m = loop_batch_target(rdm, teacher_ids, batch)
    assert torch.equal(mask, ref_m)
    assert torch.allclose(target, ref_t, atol=1e-12)
    assert torch.equal(teacher.covers(torch.tensor(batch)), torch.tensor([i in teacher_ids for i in batch]))


@pytest.mark.parametrize("seed", range(10))
def test_batch_target_matches_loop_for_covered_batches_without_nan(seed):
    """The fast path (every sample covered, no NaN in the teacher), repeated stimuli included."""
    g = np.random.default_rng(100 + seed)
    n = int(g.integers(2, 12))
    rdm = random_rdm(n, 100 + seed)
    teacher_ids = [int(v) for v in g.choice(1000, n, replace=False)]
    teacher = RDMTeacher.from_array(rdm, teacher_ids)
    batch = [int(v) for v in g.choice(teacher_ids, int(g.integers(2, 20)))]
    target, mask = teacher.batch_target(torch.tensor(batch))
    ref_t, ref_m = loop_batch_target(rdm, teacher_ids, batch)
    assert torch.equal(mask, ref_m)
    assert torch.allclose(target, ref_t, atol=1e-12)


@pytest.mark.parametrize("teacher_ids", [[4, 0, 9, 2], [-3, 8, 0, 5], [2**20, 3, 17, 2**40]])
def test_rows_of_direct_table_and_search_agree(teacher_ids):
    """Small non-negative ids are looked up in a direct id -> row table, others searched: both give
    the same rows, -1 for ids the teacher lacks (UNCOVERED, ids past the table, negative ids)."""
    teacher = RDMTeacher.from_array(random_rdm(4, 7), teacher_ids)
    assert (teacher._row_table is not None) == (min(teacher_ids) >= 0 and max(teacher_ids) < 2**20)
    batch = teacher_ids[::-1] + [-1, 10, 2**20 + 1, -7] + teacher_ids[:2]
    expected = torch.tensor([teacher_ids.index(i) if i in teacher_ids else -1 for i in batch])
    assert torch.equal(teacher.rows_of(torch.tensor(batch)), expected)
    assert torch.equal(teacher.rows_of(batch), expected)  # the per-id dictionary lookup
    assert torch.equal(teacher.covers(torch.tensor(teacher_ids[1:])), torch.ones(3, dtype=torch.bool))
    assert teacher.rows_of(torch.tensor([], dtype=torch.long)).shape == (0,)


def test_string_ids_and_sequence_lookup():
    rdm = random_rdm(4)
    teacher = RDMTeacher.from_array(rdm, ["cat", "dog", "car", "cup"])
    target, mask = teacher.batch_target(["dog", "cup", "horse", "dog"])
    ref_t, ref_m = loop_batch_target(rdm, ["cat", "dog", "car", "cup"], ["dog", "cup", "horse", "dog"])
    assert torch.equal(mask, ref_m) and torch.equal(target, ref_t)
    # integer batches never match string ids: an error naming both kinds, not a silently uncovered batch
    with pytest.raises(TypeError, match="int ids.*str ids"):
        teacher.covers(torch.tensor([0, 1]))


def test_condensed_square_and_stacked_inputs_agree():
    rdm = random_rdm(5)
    ids = list(range(5))
    a = RDMTeacher.from_array(rdm, ids)
    b = RDMTeacher.from_array(to_condensed(rdm).numpy(), ids)
    c = RDMTeacher.from_array(torch.stack([rdm, rdm]), ids)
    d = RDMTeacher.from_array(torch.stack([to_condensed(rdm)] * 3), ids)
    for t in (b, c, d):
        assert torch.allclose(t.batch_target(torch.arange(5))[0], a.batch_target(torch.arange(5))[0], atol=1e-12)
    assert c.n_rdms == 2 and d.n_rdms == 3


def test_mean_combine_ignores_nan_and_per_rdm_draws_one():
    r1, r2 = random_rdm(4, 1), random_rdm(4, 2)
    r1[0, 1] = r1[1, 0] = float("nan")
    mean = RDMTeacher.from_array(torch.stack([r1, r2]), range(4))
    target, mask = mean.batch_target(torch.arange(4))
    assert target[0, 1] == r2[0, 1] and mask[0, 1]
    assert torch.allclose(target[2, 3], (r1[2, 3] + r2[2, 3]) / 2)
    per = RDMTeacher.from_array(torch.stack([r1, r2]), range(4), combine="per_rdm", seed=3)
    seen = set()
    for _ in range(20):
        t, _ = per.batch_target(torch.arange(4))
        seen.add(0 if torch.equal(t[2, 3], r1[2, 3]) else 1)
    assert seen == {0, 1}
    # same seed -> same sequence of draws (every rank of a data-parallel run agrees)
    a = RDMTeacher.from_array(torch.stack([r1, r2]), range(4), combine="per_rdm", seed=9)
    b = RDMTeacher.from_array(torch.stack([r1, r2]), range(4), combine="per_rdm", seed=9)
    assert [a.draw() for _ in range(10)] == [b.draw() for _ in range(10)]


def test_from_rsatoolbox_roundtrip():
    rdm = random_rdm(6)
    vectors = torch.stack([to_condensed(rdm), 2 * to_condensed(rdm)]).numpy()
    rdms = RDMs(vectors, dissimilarity_measure="euclidean", pattern_descriptors={"stimulus": [f"s{i}" for i in range(6)]})
    teacher = RDMTeacher.from_rsatoolbox(rdms, combine="per_rdm")
    assert teacher.ids == [f"s{i}" for i in range(6)] and teacher.n_rdms == 2 and teacher.method == "euclidean"
    back = teacher.to_rsatoolbox()
    np.testing.assert_allclose(back.get_vectors(), vectors)
    assert list(back.pattern_descriptors["stimulus"]) == teacher.ids
    mean = RDMTeacher.from_rsatoolbox(rdms)
    assert torch.allclose(mean.batch_target(["s0", "s1"])[0][0, 1], 1.5 * rdm[0, 1])


def test_from_dataframe_long_format():
    rdm = random_rdm(4)
    rows = [(a, b, rdm[a, b].item()) for a in range(4) for b in range(a + 1, 4) if (a, b) != (1, 2)]
    rows = [(b, a, v) if k % 2 else (a, b, v) for k, (a, b, v) in enumerate(rows)]  # both orders accepted
    df = pd.DataFrame(rows, columns=["stimulus_a", "stimulus_b", "dissimilarity"])
    teacher = RDMTeacher.from_dataframe(df, ids=[0, 1, 2, 3])
    target, mask = teacher.batch_target(torch.arange(4))
    expected = rdm.clone()
    expected[1, 2] = expected[2, 1] = float("nan")
    ref_t, ref_m = loop_batch_target(expected, [0, 1, 2, 3], [0, 1, 2, 3])
    assert torch.equal(mask, ref_m) and torch.allclose(target, ref_t)
    # one RDM per subject
    df2 = pd.concat([df.assign(subject="a"), df.assign(subject="b", dissimilarity=df.dissimilarity * 3)])
    two = RDMTeacher.from_dataframe(df2, rdm="subject", ids=[0, 1, 2, 3])
    assert two.n_rdms == 2 and torch.allclose(two.batch_target(torch.arange(4))[0], 2 * target)


# ----------------------------------------------------------------------------- validation


def test_rejects_bad_rdms():
    rdm = random_rdm(4)
    with pytest.raises(ValueError, match="not square"):
        RDMTeacher.from_array(torch.zeros(4, 5), range(4))
    with pytest.raises(ValueError, match="must be square"):
        RDMTeacher(torch.zeros(4, 5), range(4))
    asym = rdm.clone()
    asym[0, 1] += 0.5
    with pytest.raises(ValueError, match=r"not symmetric: entry \(0, 1\)"):
        RDMTeacher.from_array(asym, range(4))
    neg = rdm.clone()
    neg[0, 2] = neg[2, 0] = -1.0
    with pytest.raises(ValueError, match=r"negative dissimilarity -1 between stimuli 0 and 2"):
        RDMTeacher.from_array(neg, range(4))
    diag = rdm.clone()
    diag[3, 3] = 0.7
    with pytest.raises(ValueError, match=r"non-zero diagonal: entry \(3, 3\) is 0.7"):
        RDMTeacher.from_array(diag, range(4))
    with pytest.raises(ValueError, match="duplicate stimulus ids in the teacher: \\[2\\]"):
        RDMTeacher.from_array(rdm, [0, 1, 2, 2])
    with pytest.raises(ValueError, match="RDM/ids length mismatch: square RDM of shape \\(4, 4\\) but 5"):
        RDMTeacher.from_array(rdm, range(5))
    with pytest.raises(ValueError, match="RDM/ids length mismatch: condensed RDM of length 6"):
        RDMTeacher.from_array(to_condensed(rdm), range(5))
    with pytest.raises(ValueError, match="3 stimulus ids given for teacher RDMs over 4"):
        RDMTeacher(rdm, range(3))
    inf = rdm.clone()
    inf[0, 1] = inf[1, 0] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        RDMTeacher(inf, range(4))
    with pytest.raises(ValueError, match="reserved"):
        RDMTeacher(rdm, [-1, 0, 1, 2])
    with pytest.raises(ValueError, match="combine"):
        RDMTeacher(rdm, range(4), combine="median")


def test_dataframe_errors():
    df = pd.DataFrame({"stimulus_a": [0, 1, 0], "stimulus_b": [1, 0, 0], "dissimilarity": [1.0, 1.0, 0.0]})
    with pytest.raises(ValueError, match=r"pair \(0, 1\) appears more than once"):
        RDMTeacher.from_dataframe(df)
    df = pd.DataFrame({"stimulus_a": [0, 1], "stimulus_b": [1, 1], "dissimilarity": [1.0, 0.3]})
    with pytest.raises(ValueError, match="non-zero diagonal"):
        RDMTeacher.from_dataframe(df)
    with pytest.raises(KeyError, match="column 'dist'"):
        RDMTeacher.from_dataframe(df, dissimilarity="dist")
    df = pd.DataFrame({"stimulus_a": [0], "stimulus_b": [1], "dissimilarity": [-2.0]})
    with pytest.raises(ValueError, match="negative"):
        RDMTeacher.from_dataframe(df)


# ----------------------------------------------------------------------------- NetworkTeacher


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


def test_network_teacher_frozen_and_features():
    model = small_net().train()
    teacher = NetworkTeacher(model, ["1", "3"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(7, 5)
    logits, feats = teacher(x)
    assert logits.shape == (7, 3) and not logits.requires_grad
    assert feats["1"].shape == (7, 8) and feats["3"].shape == (7, 6)
    assert torch.allclose(feats["1"], torch.relu(model[0](x)))
    model.train()  # e.g. a trainer switching everything to train mode
    teacher(x)
    assert not model.training


def test_network_teacher_close_removes_its_hooks():
    model = small_net()
    with NetworkTeacher(model, ["1", "3"]) as teacher:
        teacher(torch.randn(4, 5))
        assert len(model[1]._forward_hooks) == 1
    assert not model[1]._forward_hooks and not model[3]._forward_hooks and not model._forward_pre_hooks
    with pytest.raises(RuntimeError, match="NetworkTeacher was closed"):
        teacher(torch.randn(4, 5))
    teacher.close()  # idempotent


def test_network_teacher_cache_runs_once_per_stimulus():
    model = small_net()
    calls = []
    model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    teacher = NetworkTeacher(model, ["1"], cache=True)
    inputs = torch.randn(10, 5)
    ids = torch.tensor([0, 1, 2, 3, -1])
    a_logits, a_feats = teacher(inputs[:5], ids)
    b_logits, b_feats = teacher(inputs[[2, 0, 4, 5]], torch.tensor([2, 0, -1, 5]))
    assert calls == [5, 2]  # second call: only the uncovered sample and the new stimulus 5
    assert torch.allclose(b_logits[0], a_logits[2]) and torch.allclose(b_feats["1"][1], a_feats["1"][0])
    plain_logits, plain_feats = NetworkTeacher(small_net(), ["1"])(inputs[[2, 0, 4, 5]])
    assert torch.allclose(b_logits, plain_logits, atol=1e-6) and torch.allclose(b_feats["1"], plain_feats["1"], atol=1e-6)
    assert teacher.cache_hits == 2


def test_network_teacher_unknown_layers():
    with pytest.raises(KeyError, match=r"unknown layer 'fc1'.*the model's layers are: '0', '1'"):
        NetworkTeacher(small_net(), ["fc1"])
