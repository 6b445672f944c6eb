"""Loss terms against plain loop implementations of their published formulas, invariances, gradcheck, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rdl_neuro.train.losses import (
    CELoss,
    CKALoss,
    KDLoss,
    RDLLoss,
    RKDLoss,
    SPLoss,
    StepOutputs,
    TransferLoss,
)
from rdl_neuro.rdm import compute_rdm
from rdl_neuro.train.teachers import NetworkTeacher, RDMTeacher

D = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# ----------------------------------------------------------------------------- loop references


def dist(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def smooth_l1(d):
    d = abs(d)
    return 0.5 * d * d if d < 1 else d - 0.5


def ref_kd(s, t, T):
    b, c = s.shape
    total = 0.0
    for i in range(b):
        zs = [math.exp(s[i, k].item() / T) for k in range(c)]
        zt = [math.exp(t[i, k].item() / T) for k in range(c)]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        total += sum(pt[k] * math.log(pt[k] / ps[k]) for k in range(c))
    return T * T * total / b


def ref_rkd_distance(s, t):
    b = s.shape[0]
    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    ds = [dist(s[i].tolist(), s[j].tolist()) for i, j in pairs]
    dt = [dist(t[i].tolist(), t[j].tolist()) for i, j in pairs]
    ms, mt = sum(ds) / len(ds), sum(dt) / len(dt)
    return sum(smooth_l1(a / ms - c / mt) for a, c in zip(ds, dt)) / len(pairs)


def ref_rkd_angle(s, t):
    b = s.shape[0]

    def cos_angle(x, i, j, k):
        e1 = [x[i][m] - x[j][m] for m in range(len(x[0]))]
        e2 = [x[k][m] - x[j][m] for m in range(len(x[0]))]
        n1, n2 = math.sqrt(sum(v * v for v in e1)), math.sqrt(sum(v * v for v in e2))
        if n1 == 0 or n2 == 0:
            return 0.0
        return sum(a * c for a, c in zip(e1, e2)) / (n1 * n2)

    xs, xt = s.tolist(), t.tolist()
    total = 0.0
    for i in range(b):
        for j in range(b):
            for k in range(b):
                total += smooth_l1(cos_angle(xs, i, j, k) - cos_angle(xt, i, j, k))
    return total / b**3


def ref_sp(s, t):
    b = s.shape[0]

    def norm_gram(x):
        g = [[sum(x[i][m] * x[j][m] for m in range(len(x[0]))) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = norm_gram(s.tolist()), norm_gram(t.tolist())
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def ref_cka(s, t):
    def centered(x):
        b, f = len(x), len(x[0])
        means = [sum(x[i][m] for i in range(b)) / b for m in range(f)]
        return [[x[i][m] - means[m] for m in range(f)] for i in range(b)]

    def cross(x, y):  # ||y^T x||_F^2
        return sum(
            sum(y[i][q] * x[i][p] for i in range(len(x))) ** 2 for p in range(len(x[0])) for q in range(len(y[0]))
        )

    xs, xt = centered(s.tolist()), centered(t.tolist())
    return 1 - cross(xs, xt) / math.sqrt(cross(xs, xs) * cross(xt, xt))


def ref_rdl(s, t, criterion, t_rdm=None):
    """Loop RDL on all pairs: student/teacher Euclidean distances; t_rdm overrides the teacher distances."""
    b = s.shape[0]
    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    ds = [dist(s[i].tolist(), s[j].tolist()) for i, j in pairs]
    dt = [t_rdm[i][j] for i, j in pairs] if t_rdm is not None else [dist(t[i].tolist(), t[j].tolist()) for i, j in pairs]
    n = len(pairs)
    if criterion == "scaled_mse":
        ms, mt = sum(ds) / n, sum(dt) / n
        ds, dt = [d / ms for d in ds], [d / mt for d in dt]
    if criterion in ("mse", "scaled_mse"):
        return sum((a - c) ** 2 for a, c in zip(ds, dt)) / n
    if criterion == "corr":
        ms, mt = sum(ds) / n, sum(dt) / n
        ds, dt = [d - ms for d in ds], [d - mt for d in dt]
    dot = sum(a * c for a, c in zip(ds, dt))
    return 1 - dot / math.sqrt(sum(a * a for a in ds) * sum(c * c for c in dt))


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_loop(temperature):
    s, t = randn(6, 5, seed=1), randn(6, 5, seed=2) * 3
    assert KDLoss(temperature)(s, t).item() == pytest.approx(ref_kd(s, t, temperature), abs=1e-6)


def test_rkd_distance_and_angle_match_loop():
    s, t = randn(7, 4, seed=3), randn(7, 6, seed=4)
    assert RKDLoss("s", "t")(s, t).item() == pytest.approx(ref_rkd_distance(s, t), abs=1e-6)
    angle_only = RKDLoss("s", "t", distance_weight=0.0, angle_weight=1.0)(s, t).item()
    assert angle_only == pytest.approx(ref_rkd_angle(s, t), abs=1e-6)
    both = RKDLoss("s", "t", distance_weight=1.0, angle_weight=2.0)(s, t).item()
    assert both == pytest.approx(ref_rkd_distance(s, t) + 2 * ref_rkd_angle(s, t), abs=1e-6)


def test_sp_matches_loop():
    s, t = randn(6, 4, seed=5), randn(6, 9, seed=6)
    assert SPLoss("s", "t")(s, t).item() == pytest.approx(ref_sp(s, t), abs=1e-6)


def test_cka_matches_loop():
    s, t = randn(8, 5, seed=7), randn(8, 3, seed=8)
    assert CKALoss("s", "t")(s, t).item() == pytest.approx(ref_cka(s, t), abs=1e-6)


@pytest.mark.parametrize("criterion", ["mse", "scaled_mse", "corr", "cosine"])
def test_rdl_network_pairs_match_loop(criterion):
    s, t = randn(7, 5, seed=9), randn(7, 8, seed=10)
    total, terms = RDLLoss({"s": "t"}, criterion=criterion)({"s": s}, teacher_features={"t": t})
    assert total.item() == pytest.approx(ref_rdl(s, t, criterion), abs=1e-6)
    assert set(terms) == {"rdl/s"}


@pytest.mark.parametrize("criterion", ["mse", "scaled_mse", "corr", "cosine"])
def test_rdl_fixed_teacher_matches_loop_over_usable_pairs(criterion):
    """Uncovered, repeated and NaN entries leave the loss; the rest matches a loop over usable pairs."""
    n = 6
    rdm = compute_rdm(randn(n, 3, seed=11), "euclidean", square=True)
    rdm[0, 3] = rdm[3, 0] = float("nan")
    teacher = RDMTeacher.from_array(rdm, [10 + i for i in range(n)])
    ids = torch.tensor([10, 11, -1, 13, 11, 14, 99, 15])
    s = randn(len(ids), 4, seed=12)
    total, _ = RDLLoss({"s": teacher}, criterion=criterion)({"s": s}, ids)
    b = len(ids)
    usable = []
    for i in range(b):
        for j in range(i + 1, b):
            a, c = int(ids[i]) - 10, int(ids[j]) - 10
            if 0 <= a < n and 0 <= c < n and a != c and not math.isnan(rdm[a, c].item()):
                usable.append((dist(s[i].tolist(), s[j].tolist()), rdm[a, c].item()))
    ds, dt = [u[0] for u in usable], [u[1] for u in usable]
    m = len(usable)
    if criterion == "scaled_mse":
        ds, dt = [d / (sum(ds) / m) for d in ds], [d / (sum(dt) / m) for d in dt]
    if criterion in ("mse", "scaled_mse"):
        ref = sum((a - c) ** 2 for a, c in usable if True) / m if criterion == "mse" else sum(
            (a - c) ** 2 for a, c in zip(ds, dt)
        ) / m
    else:
        if criterion == "corr":
            ds, dt = [d - sum(ds) / m for d in ds], [d - sum(dt) / m for d in dt]
        ref = 1 - sum(a * c for a, c in zip(ds, dt)) / math.sqrt(sum(a * a for a in ds) * sum(c * c for c in dt))
    assert total.item() == pytest.approx(ref, abs=1e-6)


# ----------------------------------------------------------------------------- invariances


def test_rdl_zero_when_student_equals_teacher():
    x = randn(9, 6, seed=13)
    for criterion in ("mse", "scaled_mse", "corr", "cosine"):
        total, _ = RDLLoss({"s": "t"}, criterion=criterion)({"s": x}, teacher_features={"t": x})
        assert abs(total.item()) < 1e-12
    teacher = RDMTeacher.from_array(compute_rdm(x, "euclidean", square=True), list(range(9)))
    total, _ = RDLLoss({"s": teacher})({"s": x}, torch.arange(9))
    assert abs(total.item()) < 1e-12


def test_scale_invariances():
    s, t = randn(8, 5, seed=14), randn(8, 7, seed=15)
    loss = RDLLoss({"s": "t"}, criterion="scaled_mse")
    a = loss({"s": s}, teacher_features={"t": t})[0]
    b = loss({"s": 37.5 * s}, teacher_features={"t": t})[0]
    assert a.item() == pytest.approx(b.item(), abs=1e-9)
    rkd = RKDLoss("s", "t", angle_weight=1.0)
    assert rkd(s, t).item() == pytest.approx(rkd(0.01 * s, t).item(), abs=1e-9)
    teacher = RDMTeacher.from_array(compute_rdm(t, "euclidean", square=True), list(range(8)))
    fixed = RDLLoss({"s": teacher}, criterion="scaled_mse")
    assert fixed({"s": s}, torch.arange(8))[0].item() == pytest.approx(
        fixed({"s": 5 * s}, torch.arange(8))[0].item(), abs=1e-9
    )


def test_corr_invariant_to_affine_teacher_rdm():
    s, t = randn(8, 5, seed=16), randn(8, 7, seed=17)
    rdm = compute_rdm(t, "euclidean", square=True)
    ids = torch.arange(8)
    a = RDLLoss({"s": RDMTeacher.from_array(rdm, range(8))}, criterion="corr")({"s": s}, ids)[0]
    affine = (3.0 * rdm + 2.0).fill_diagonal_(0)
    b = RDLLoss({"s": RDMTeacher.from_array(affine, range(8))}, criterion="corr")({"s": s}, ids)[0]
    assert a.item() == pytest.approx(b.item(), abs=1e-9)


# ----------------------------------------------------------------------------- gradcheck


def test_gradcheck_all_losses():
    t = randn(6, 4, seed=18)
    teacher = RDMTeacher.from_array(compute_rdm(t, "euclidean", square=True), range(6))
    ids = torch.tensor([0, 1, 2, -1, 4, 2, 5])
    rdm_t = compute_rdm(t, "euclidean", square=True)
    rdm_t[1, 4] = rdm_t[4, 1] = float("nan")
    teacher_nan = RDMTeacher.from_array(rdm_t, range(6))
    for criterion in ("mse", "scaled_mse", "corr", "cosine"):
        for method in ("euclidean", "sqeuclidean", "correlation"):
            loss = RDLLoss({"s": teacher_nan}, method=method, criterion=criterion)
            s = randn(7, 5, seed=19).requires_grad_()
            assert torch.autograd.gradcheck(lambda x: loss({"s": x}, ids)[0], (s,))
        net = RDLLoss({"s": "t"}, criterion=criterion)
        s = randn(6, 5, seed=20).requires_grad_()
        assert torch.autograd.gradcheck(lambda x: net({"s": x}, teacher_features={"t": t})[0], (s,))
    del teacher
    s = randn(6, 5, seed=21).requires_grad_()
    logits_t = randn(6, 5, seed=22)
    assert torch.autograd.gradcheck(lambda x: KDLoss(2.0)(x, logits_t), (s,))
    assert torch.autograd.gradcheck(lambda x: RKDLoss("s", "t", angle_weight=1.0)(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: SPLoss("s", "t")(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: CKALoss("s", "t")(x, t), (s,))


def test_fused_euclidean_mse_equals_the_composed_ops():
    """RDLLoss's one-node euclidean/mse term = compute_rdm then the weighted squared error, values
    and gradients, with coinciding patterns (D = 0) and asymmetric-looking but symmetric weights."""
    from rdl_neuro.train.losses import _euclidean_rdm_mse, _weighted_mse

    x = randn(9, 5, seed=40)
    x[6] = x[2]  # two identical patterns: the subgradient 0, as _safe_sqrt gives
    target = compute_rdm(randn(9, 3, seed=41), "euclidean", square=True)
    w = torch.rand(9, 9, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
    w = (w + w.T).fill_diagonal_(0)
    a_in, b_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = _euclidean_rdm_mse(a_in, target, w)
    composed = _weighted_mse(compute_rdm(b_in, "euclidean", square=True), target, w, False)
    (grad_fused,), (grad_composed,) = torch.autograd.grad(fused, a_in), torch.autograd.grad(composed, b_in)
    assert torch.allclose(fused, composed, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad_fused, grad_composed, rtol=1e-10, atol=1e-12)
    # twice differentiable (create_graph=True), as the composed ops are
    y = randn(7, 4, seed=43).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda z: _euclidean_rdm_mse(z, target[:7, :7], w[:7, :7]), (y,))


def test_fused_euclidean_mse_with_one_weight_equals_the_weight_matrix():
    """A float weight (every off-diagonal pair alike, as RDLLoss passes for a batch without repeats
    or uncovered samples) gives the loss and gradient of the same weight as an (n, n) matrix with a
    zero diagonal, with coinciding patterns; float32 as in training."""
    from rdl_neuro.train.losses import _euclidean_rdm_mse

    x = randn(12, 6, seed=44).float()
    x[3] = x[8]
    target = compute_rdm(randn(12, 2, seed=45), "euclidean", square=True).float()
    c = 1.0 / (12 * 11)
    w = torch.full((12, 12), c).fill_diagonal_(0)
    a_in, b_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    one, matrix = _euclidean_rdm_mse(a_in, target, c), _euclidean_rdm_mse(b_in, target, w)
    (grad_one,), (grad_matrix,) = torch.autograd.grad(3 * one, a_in), torch.autograd.grad(3 * matrix, b_in)
    assert torch.allclose(one, matrix, rtol=1e-6) and one.item() > 0
    assert torch.allclose(grad_one, grad_matrix, rtol=1e-5, atol=1e-7)
    assert torch.isfinite(grad_one).all() and grad_one.abs().sum() > 0


# ----------------------------------------------------------------------------- skipping, interface


def test_too_few_usable_stimuli_give_exact_zero_and_are_counted():
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    loss = RDLLoss({"s": teacher, "u": teacher}, weights={"s": 2.0})
    s = randn(4, 3, seed=23).requires_grad_()
    for ids in ([-1, -1, -1, -1], [0, -1, 7, -1], [2, 2, -1, 2]):
        total, terms = loss({"s": s, "u": s}, torch.tensor(ids))
        assert total.item() == 0.0 and not torch.isnan(total)
        total.backward()
        assert s.grad is not None and torch.all(s.grad == 0)
    assert loss.skipped_batches == 3
    assert loss.skipped_terms == {"s": 3, "u": 3}
    total, _ = loss({"s": s, "u": s}, torch.tensor([0, 1, -1, -1]))
    assert total.item() > 0 and loss.skipped_batches == 3 and loss.last_usable_pairs["s"] == 1
    # corr needs two pairs: one pair is skipped, not NaN
    corr = RDLLoss({"s": teacher}, criterion="corr")
    assert corr({"s": s}, torch.tensor([0, 1, -1, -1]))[0].item() == 0.0
    assert corr.skipped_batches == 1


def test_correlation_rdl_survives_a_dead_relu_image():
    """One image whose layer is all zeros (dead ReLU) must not stop training with an error."""
    teacher = RDMTeacher.from_array(compute_rdm(randn(6, 3), "euclidean", square=True), range(6))
    s = torch.relu(randn(6, 5, seed=3)).requires_grad_()
    with torch.no_grad():
        s[2] = 0.0
    for criterion in ("mse", "corr"):
        loss = RDLLoss({"s": teacher}, method="correlation", criterion=criterion)
        total, _ = loss({"s": s}, torch.arange(6))
        assert torch.isfinite(total) and total.item() > 0
        total.backward()
        assert torch.isfinite(s.grad).all()
        s.grad = None


def test_weights_and_attributes():
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    s, t = randn(5, 4, seed=24), randn(5, 6, seed=25)
    loss = RDLLoss({"a": teacher, "b": "t1", "c": "t1"}, weights={"a": 0.5, "b": 2.0})
    assert loss.student_layers == ("a", "b", "c")
    assert loss.teacher_layers == ("t1",)
    total, terms = loss({"a": s, "b": s, "c": s}, torch.arange(5), {"t1": t})
    expected = 0.5 * terms["rdl/a"] + 2.0 * terms["rdl/b"] + terms["rdl/c"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-12)
    assert isinstance(loss, TransferLoss)
    assert KDLoss().needs_teacher_logits and not loss.needs_teacher_logits


def test_from_step_of_every_loss():
    b = 6
    step = StepOutputs(
        logits=randn(b, 4, seed=26),
        labels=torch.tensor([0, 1, 2, 3, 0, 1]),
        stimulus_ids=torch.tensor([0, 1, 2, -1, 3, 4]),
        student_features={"h": randn(b, 5, seed=27)},
        teacher_logits=randn(b, 4, seed=28),
        teacher_features={"g": randn(b, 7, seed=29)},
    )
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    cases = {
        "ce": CELoss(),
        "kd": KDLoss(),
        "rdl/h": RDLLoss({"h": teacher}),
        "rkd/h": RKDLoss("h", "g"),
        "sp/h": SPLoss("h", "g"),
        "cka/h": CKALoss("h", "g"),
    }
    for key, loss in cases.items():
        total, logs = loss.from_step(step)
        assert total.ndim == 0 and key in logs
    assert CELoss().from_step(step)[0].item() == pytest.approx(
        nn.functional.cross_entropy(step.logits, step.labels).item()
    )
    with pytest.raises(ValueError, match="teacher_logits"):
        KDLoss().from_step(StepOutputs(step.logits, step.labels, step.stimulus_ids, step.student_features))


# ----------------------------------------------------------------------------- errors


def test_nan_in_student_features_names_the_layer():
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    s = randn(5, 4)
    s[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"student layer .fc1.: features contain NaN or infinite values in row 3"):
        RDLLoss({"fc1": teacher})({"fc1": s}, torch.arange(5))
    with pytest.raises(ValueError, match="student layer 'fc1' has NaN"):
        SPLoss("fc1", "t")(s, randn(5, 2))
    # a batch without usable pairs (all uncovered) still reports NaN features instead of a silent 0
    with pytest.raises(ValueError, match=r"student layer 'fc1' has NaN features in batch samples \[3\]"):
        RDLLoss({"fc1": teacher})({"fc1": s}, torch.full((5,), -1))
    t = randn(5, 3)
    t[0, 0] = float("inf")
    with pytest.raises(ValueError, match="teacher layer 'g': features contain NaN or infinite values in row 0"):
        RDLLoss({"fc1": "g"})({"fc1": randn(5, 4)}, teacher_features={"g": t})


def test_unknown_student_layer_is_named_with_close_matches():
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    with pytest.raises(KeyError, match=r"student layer 'fc3' was not recorded.*did you mean 'fc2'"):
        RDLLoss({"fc3": teacher})({"fc1": randn(5, 2), "fc2": randn(5, 2)}, torch.arange(5))
    with pytest.raises(KeyError, match="teacher layer 'g' was not recorded"):
        RDLLoss({"h": "g"})({"h": randn(5, 2)}, teacher_features={"x": randn(5, 2)})


def test_bad_configuration_errors():
    teacher = RDMTeacher.from_array(compute_rdm(randn(5, 3), "euclidean", square=True), range(5))
    with pytest.raises(ValueError, match="unknown RDL criterion 'l1'"):
        RDLLoss({"h": teacher}, criterion="l1")
    with pytest.raises(ValueError, match="unknown RDM method"):
        RDLLoss({"h": teacher}, method="manhattan")
    with pytest.raises(KeyError, match="not paired"):
        RDLLoss({"h": teacher}, weights={"x": 1.0})
    with pytest.raises(ValueError, match="stimulus_ids are needed"):
        RDLLoss({"h": teacher})({"h": randn(5, 2)})
    net = NetworkTeacher(nn.Sequential(nn.Linear(3, 4)), ["0"])
    with pytest.raises(TypeError, match="layer name"):
        RDLLoss({"h": net})
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.0)
