"""Stimulus identity is never lost silently (issue 13): one rule for ids, named descriptors, order,
square vs condensed RDMs, zero-variance patterns and small features in layer RDMs."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from rsatoolbox.rdm import RDMs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rdl_neuro.data.ids import plain_id
from rdl_neuro.data.stimulus import StimulusDataset
from rdl_neuro.inference import rsa_table
from rdl_neuro.model import layer_rdms
from rdl_neuro.rdm import compare_rdms, compute_rdm, to_square
from rdl_neuro.rdm.interop import from_rsatoolbox, stimulus_ids_of, to_rsatoolbox
from rdl_neuro.train.teachers import RDMTeacher


def _rdm(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return compute_rdm(x, "euclidean", square=True)


# ---------------------------------------------------------------- 1. id kinds
def test_teacher_with_string_ids_refuses_integer_batches_naming_both():
    teacher = RDMTeacher(_rdm(4), ["0", "1", "2", "3"])
    with pytest.raises(TypeError, match=r"int ids \(0, 1.*str ids \('0', '1'"):
        teacher.covers(torch.tensor([0, 1, -1]))
    with pytest.raises(TypeError, match="different kinds"):
        teacher.batch_target([0, 1])
    # a batch of nothing but uncovered samples is no evidence of a mix-up
    assert not teacher.covers(torch.tensor([-1, -1])).any()


def test_float_ids_are_whole_numbers_the_same_in_lists_and_tensors():
    ids = np.loadtxt(["0", "1", "2", "3"])  # floats, as read from a text file
    teacher = RDMTeacher(_rdm(4), ids)
    assert teacher.ids == [0, 1, 2, 3]
    expected = torch.tensor([True, True, False])
    assert torch.equal(teacher.covers(torch.tensor([0, 1, 7])), expected)
    assert torch.equal(teacher.covers([0, 1, 7]), expected)
    assert torch.equal(teacher.covers(torch.tensor([0.0, 1.0, 7.0])), expected)
    assert torch.equal(teacher.covers([0.0, 1.0, 7.0]), expected)
    with pytest.raises(ValueError, match="whole number"):
        teacher.covers(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="whole number"):
        teacher.covers([0.5])
    with pytest.raises(ValueError, match="whole number"):
        RDMTeacher(_rdm(2), [0.5, 1.5])


def test_plain_id_rule():
    from rdl_neuro.data.ids import check_id_kinds, id_tensor

    assert plain_id(np.float32(3.0)) == 3 and isinstance(plain_id(np.float32(3.0)), int)
    assert plain_id(torch.tensor(2.0)) == 2
    assert plain_id(np.str_("a")) == "a"
    with pytest.raises(TypeError, match="boolean"):
        plain_id(True)
    assert torch.equal(id_tensor([1.0, 2.0]), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="'a', 'b'"):
        id_tensor(["a", "b"])
    check_id_kinds([1, "a"], ["a"], "x", "y")  # a shared kind: no error


def test_from_dataframe_string_table_with_integer_ids_names_both():
    df = pd.DataFrame({"stimulus_a": ["0", "0", "1"], "stimulus_b": ["1", "2", "2"], "dissimilarity": [1.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match=r"str ids \('0', '1', '2'\).*int ids \(0, 1, 2\)"):
        RDMTeacher.from_dataframe(df, ids=[0, 1, 2])
    t = RDMTeacher.from_dataframe(df, ids=["2", "1", "0"])
    assert t.ids == ["2", "1", "0"] and float(t.rdms[0, 0, 2]) == 2.0


def test_stimulus_dataset_accepts_whole_float_ids_and_names_others():
    base = TensorDataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    assert StimulusDataset(base, np.array([0.0, 1.0, 2.0])).stimulus_ids.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="whole number.*index 1"):
        StimulusDataset(base, [0.0, 1.5, 2.0])


def test_layer_rdms_and_to_rsatoolbox_use_the_same_rule():
    net = nn.Sequential(nn.Linear(3, 4))
    rdms = layer_rdms(net, torch.randn(3, 3), ["0"], stimulus_ids=[0.0, 1.0, 2.0], progress=False)
    assert rdms.pattern_descriptors["stimulus"] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"repeated: \[1\]"):
        to_rsatoolbox(torch.rand(3), [1, 1.0, 2])


def test_rsa_table_names_both_kinds_when_model_and_brain_ids_differ_in_kind():
    v = np.random.default_rng(0).random((1, 6))
    model = RDMs(v, pattern_descriptors={"stimulus": [0, 1, 2, 3]})
    brain = RDMs(v, pattern_descriptors={"stimulus": ["0", "1", "2", "3"]})
    with pytest.raises(TypeError, match="different kinds.*int ids.*str ids"):
        rsa_table(model, brain)
    # float ids from a file match integer ids
    brain_f = RDMs(v, pattern_descriptors={"stimulus": np.array([0.0, 1.0, 2.0, 3.0])})
    assert len(rsa_table(model, brain_f, bootstrap=None, noise_ceiling=False)) == 1


# ---------------------------------------------------------------- 2. named descriptors
def test_a_named_descriptor_must_exist():
    rdms = RDMs(np.random.default_rng(0).random((1, 3)), pattern_descriptors={"image": ["a", "b", "c"]})
    with pytest.raises(KeyError, match=r"no pattern descriptor 'stimuli'.*\['image', 'index'\]"):
        RDMTeacher.from_rsatoolbox(rdms, stimulus_descriptor="stimuli")
    with pytest.raises(KeyError, match="'stimuli'"):
        from_rsatoolbox(rdms, "stimuli")
    with pytest.warns(UserWarning, match="'index'"):
        teacher = RDMTeacher.from_rsatoolbox(rdms)
    assert teacher.ids == [0, 1, 2]
    assert RDMTeacher.from_rsatoolbox(rdms, stimulus_descriptor="image").ids == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stimulus_ids_of(RDMs(np.ones((1, 3)), pattern_descriptors={"stimulus": [4, 5, 6]})) == [4, 5, 6]


# ---------------------------------------------------------------- 3. order
def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh())


def test_layer_rdms_refuses_a_shuffling_loader():
    x = torch.randn(8, 6)
    loader = DataLoader(TensorDataset(x, torch.zeros(8)), batch_size=3, shuffle=True)
    with pytest.raises(ValueError, match="random order.*RandomSampler"):
        layer_rdms(_net(), loader, ["2"], progress=False)
    ordered = DataLoader(TensorDataset(x, torch.zeros(8)), batch_size=3)
    np.testing.assert_allclose(layer_rdms(_net(), ordered, ["2"], progress=False).get_vectors(),
                               layer_rdms(_net(), x, ["2"], progress=False).get_vectors(), atol=1e-6)


def test_layer_rdms_takes_ids_from_stimulus_dataset_items():
    x = torch.randn(6, 6)
    data = StimulusDataset(TensorDataset(x, torch.zeros(6, dtype=torch.long)), [10, 11, 12, 13, 14, 15])
    ref = layer_rdms(_net(), x, ["2"], stimulus_ids=list(range(10, 16)), progress=False)
    got = layer_rdms(_net(), data, ["2"], progress=False)
    assert got.pattern_descriptors["stimulus"] == list(range(10, 16))
    np.testing.assert_allclose(got.get_vectors(), ref.get_vectors())
    # shuffled: the rows follow the drawn order and the ids travel with them
    torch.manual_seed(3)
    shuffled = layer_rdms(_net(), DataLoader(data, batch_size=4, shuffle=True), ["2"], progress=False)
    assert shuffled.pattern_descriptors["stimulus"] != list(range(10, 16))
    order = np.argsort(shuffled.pattern_descriptors["stimulus"])
    np.testing.assert_allclose(shuffled.get_matrices()[0][np.ix_(order, order)], ref.get_matrices()[0], atol=1e-12)
    with pytest.raises(ValueError, match="disagree.*first at stimulus 0: 0 vs 10"):
        layer_rdms(_net(), data, ["2"], stimulus_ids=list(range(6)), progress=False)


# ---------------------------------------------------------------- 4. square vs condensed
def test_compare_rdms_recognises_square_rdms():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10, generator=g, dtype=torch.float64), torch.rand(10, generator=g, dtype=torch.float64)
    ref = compare_rdms(a, b)
    assert ref.shape == (1, 1)
    torch.testing.assert_close(compare_rdms(to_square(a), to_square(b)), ref)
    torch.testing.assert_close(compare_rdms(to_square(a), b), ref)
    stacked = compare_rdms(to_square(torch.stack([a, b])), b)  # (2, n, n): two square RDMs
    torch.testing.assert_close(stacked, torch.cat([ref, torch.ones(1, 1, dtype=ref.dtype)]))


def test_to_rsatoolbox_recognises_one_square_rdm():
    a = torch.rand(6, dtype=torch.float64)
    r = to_rsatoolbox(to_square(torch.rand(15, dtype=torch.float64)))  # (6, 6) used to read as 6 RDMs of 6 pairs
    assert r.n_rdm == 1 and r.n_cond == 6
    np.testing.assert_allclose(to_rsatoolbox(to_square(a)).get_vectors()[0], a.numpy())


# ---------------------------------------------------------------- 7/8. zero variance, small features, dtypes
class _Dead(nn.Module):
    """hidden layer whose pattern is constant for stimulus 2 (a dead unit layer for that image)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.clone()
        h[x[:, 0] > 100] = 0.0
        return self.hidden(h)


def test_layer_rdms_floors_a_constant_pattern_records_and_warns():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[2, 0] = 1000.0
    with pytest.warns(UserWarning, match=r"layer 'hidden': 1 \(stimuli \['s2'\]\)"):
        rdms = layer_rdms(_Dead(), x, ["hidden"], stimulus_ids=[f"s{i}" for i in range(5)], progress=False)
    assert rdms.rdm_descriptors["n_floored"] == [1]
    m = rdms.get_matrices()[0]
    others = [0, 1, 3, 4]
    np.testing.assert_allclose(m[2, others], 1.0)
    y = x.clone()
    y[2] = 0.0
    ref = compute_rdm(y, "correlation", square=True, eps=1e-8)
    np.testing.assert_allclose(m, ref.numpy(), atol=1e-10)
    with pytest.raises(ValueError, match=r"layer 'hidden'.*\['s2'\]"):
        layer_rdms(_Dead(), x, ["hidden"], stimulus_ids=[f"s{i}" for i in range(5)], progress=False, floor=False)


def test_small_features_keep_their_rdm_under_the_loss_floor():
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for method in ("correlation", "cosine"):
        ref = compute_rdm(x, method)
        torch.testing.assert_close(compute_rdm(x * 1e-10, method, eps=1e-8), ref)
        # an all-zero pattern is still floored (dissimilarity 1)
        z = x.clone()
        z[0] = 0.0
        assert torch.allclose(compute_rdm(z, method, eps=1e-8, square=True)[0, 1:], torch.ones(5, dtype=x.dtype))


def test_layer_rdms_overflow_and_integer_images_and_shape_errors():
    big = torch.full((3, 4), 1e200, dtype=torch.float64)
    big[1, 0] = -1e200
    with pytest.raises(ValueError, match="layer '0'.*too large"):
        layer_rdms(nn.Sequential(nn.Identity()), big, ["0"], method="euclidean", progress=False)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(TypeError, match=r"torch.uint8.*x.float\(\) / 255"):
        layer_rdms(net, torch.zeros(4, 3, 2, 2, dtype=torch.uint8), ["1"], progress=False)
    with pytest.raises(ValueError, match=r"cannot run on stimulus batch 0 of shape \(4, 3, 3, 3\)"):
        layer_rdms(net, torch.zeros(4, 3, 3, 3), ["1"], progress=False)


# ---------------------------------------------------------------- 1. the trainer stops when a term never ran
def _trainer(teacher_ids, data_ids, batch_size=8, **kwargs):
    from rdl_neuro.train import Trainer
    from rdl_neuro.train.losses import CELoss, RDLLoss

    g = torch.Generator().manual_seed(0)
    n = len(data_ids)
    data = StimulusDataset(TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)),
                           data_ids)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    teacher = RDMTeacher(_rdm(len(teacher_ids)), teacher_ids)
    return Trainer(net, data, losses={"ce": CELoss(), "rdl": RDLLoss({"1": teacher})}, batch_size=batch_size,
                   epochs=1, quiet=True, device="cpu", **kwargs)


def test_trainer_stops_when_the_data_and_teacher_ids_do_not_overlap():
    with pytest.raises(ValueError, match=r"'rdl' \(layer '1'\).*do not overlap.*teacher ids e.g. \[100, 101"):
        _trainer(list(range(100, 110)), list(range(16))).fit()
    history = _trainer(list(range(100, 110)), list(range(16)), allow_skipped_terms=True).fit()
    assert history["rdl/1"].eq(0).all()


def test_trainer_stops_when_no_batch_holds_two_covered_stimuli():
    with pytest.raises(ValueError, match="no batch held two covered stimuli.*min_covered"):
        _trainer(list(range(10)), list(range(16)), batch_size=1).fit()
    # with covered pairs in the batches the run goes on as before
    assert _trainer(list(range(10)), list(range(16))).fit()["rdl/1"].gt(0).all()


def test_string_teacher_ids_stop_the_first_batch():
    with pytest.raises(TypeError, match="int ids.*str ids"):
        _trainer([str(i) for i in range(10)], list(range(16))).fit()


def test_trainer_names_string_ids_in_items_and_labels_out_of_range():
    from rdl_neuro.train import Trainer
    from rdl_neuro.train.losses import CELoss

    class Named(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(6), 0, f"img{i}"

    net = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(TypeError, match="stimulus ids in the training items must be integers.*'img"):
        Trainer(net, Named(), losses={"ce": CELoss()}, batch_size=2, epochs=1, quiet=True, device="cpu").fit()
    data = TensorDataset(torch.zeros(4, 6), torch.tensor([0, 1, 7, 2]))
    with pytest.raises(ValueError, match=r"label 7 \(samples \[2\].*3 classes"):
        Trainer(net, data, losses={"ce": CELoss()}, batch_size=4, epochs=1, quiet=True, device="cpu").fit()
    with pytest.raises(ValueError, match="class labels must be whole numbers"):
        Trainer(net, TensorDataset(torch.zeros(4, 6), torch.tensor([0.0, 1.5, 1.0, 2.0])), losses={"ce": CELoss()},
                batch_size=4, epochs=1, quiet=True, device="cpu").fit()


def test_kd_loss_with_nan_logits_names_the_term_and_side():
    from rdl_neuro.train.losses import KDLoss

    s, t = torch.randn(4, 3), torch.randn(4, 3)
    t[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"KDLoss: the teacher logits.*\[1\]"):
        KDLoss()(s, t)


def test_devices_that_do_not_exist_here_are_named():
    from rdl_neuro.train import Trainer
    from rdl_neuro.train.losses import CELoss

    data = TensorDataset(torch.zeros(4, 6), torch.tensor([0, 1, 2, 2]))
    for device, fragment in (("cuda:99", "'cuda:99'"), ("gpu", "not a device name")):
        with pytest.raises(ValueError, match=fragment):
            Trainer(nn.Linear(6, 3), data, losses={"ce": CELoss()}, device=device)
        with pytest.raises(ValueError, match=fragment):
            layer_rdms(nn.Sequential(nn.Linear(6, 3)), torch.zeros(3, 6), ["0"], device=device, progress=False)


def test_rdm_probe_survives_a_constant_teacher_pattern_and_checks_its_ids():
    from rdl_neuro.train import RDMProbe
    from rdl_neuro.train.teachers import NetworkTeacher

    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[2, 0] = 1000.0
    teacher = NetworkTeacher(_Dead(), ["hidden"])
    student = nn.Sequential(nn.Linear(7, 4, dtype=torch.float64))
    probe = RDMProbe(x, list(range(5)), teacher, {"0": "hidden"}, method="correlation")
    r = probe.measure(student, torch.device("cpu"))["rdm_corr_0"]
    assert np.isfinite(r)
    with pytest.raises(ValueError, match="rdm_probe stimulus_ids must be whole numbers"):
        RDMProbe(x, [0, 1, 2.5, 3, 4], teacher, {"0": "hidden"}).measure(student, torch.device("cpu"))


# ---------------------------------------------------------------- siblings: the same rule in the other entry points
def test_whole_float_ids_elsewhere_and_dropped_stimuli():
    from rdl_neuro.data.nifti import as_ids
    from rdl_neuro.data.stimulus import CoverageBatchSampler

    assert as_ids(np.loadtxt(["0", "1", "1"]), "conditions", 3, "3 volumes").tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="conditions: stimulus id 0.5"):
        as_ids(np.array([0.5, 1.0]), "conditions", 2, "2 volumes")
    base = TensorDataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    assert StimulusDataset(base, {2.0: 7}).stimulus_ids.tolist() == [-1, -1, 7]
    with pytest.raises(ValueError, match="whole number"):
        StimulusDataset(base, {1.5: 7})
    with pytest.raises(ValueError, match="covered_indices must be whole numbers"):
        CoverageBatchSampler([0.5, 1.0], [2, 3], batch_size=2, min_covered=1)
    loader = DataLoader(TensorDataset(torch.randn(7, 6), torch.zeros(7)), batch_size=3, drop_last=True)
    with pytest.raises(ValueError, match="drops the last 1 stimuli"):
        layer_rdms(_net(), loader, ["2"], progress=False)


def test_rdm_probe_reads_a_square_rdm_over_three_stimuli_as_one_rdm():
    from rdl_neuro.train import RDMProbe

    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    square = compute_rdm(x, "euclidean", square=True)
    probe = RDMProbe(x, [0, 1, 2], square, ["0"])
    assert probe.teacher_rdms(torch.device("cpu"))["0"].shape == (1, 3)
