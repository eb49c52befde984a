"""Datasets: the embedded digits default, CIFAR-10/100 and ImageNet.

Every loader returns ``(x, y)``: a float32 tensor of shape (n, C, H, W) with values
in [0, 1] and an int64 tensor of labels. Normalisation never happens here: it lives
inside the model.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DATASETS", "load_dataset", "data_root", "digits_split_indices", "num_classes",
    "IMAGENET_FILE_LIST", "DatasetNotFoundError", "INPUT_SHAPES",
]

_FILES = Path(__file__).parent / "data_files"
IMAGENET_FILE_LIST = _FILES / "imagenet_test_images.txt"
DIGITS_TEST_INDICES = _FILES / "digits_test_indices.txt"

#: dataset name -> number of classes
DATASETS: dict[str, int] = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
#: (channels, height, width) of each dataset's images; ImageNet's depends on the model's crop
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}

#: the digits split: 500 test points, stratified by class, seed 0 (see docs/datasets.md)
DIGITS_TEST_SIZE = 500
DIGITS_SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for."""


def num_classes(dataset: str) -> int:
    _check_name(dataset)
    return DATASETS[dataset]


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``data_dir``, else $ROBENCH_DATA, else the user cache directory."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("ROBENCH_DATA"):
        return Path(os.environ["ROBENCH_DATA"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("robench")) / "data"


def load_dataset(
    name: str,
    split: str = "test",
    n_examples: int | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    resize: int | None = 256,
    crop: int | None = 224,
) -> tuple[Tensor, Tensor]:
    """Load a dataset split as tensors; the first ``n_examples`` points in the fixed order.

    ``resize``/``crop`` apply to ImageNet only (the protocol's default is 256/224).
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_examples is not None and n_examples <= 0:
        raise ValueError(f"n_examples must be positive, got {n_examples}")
    if name == "digits":
        x, y = _load_digits(split)
    elif name in ("cifar10", "cifar100"):
        x, y = _load_cifar(name, split, data_root(data_dir), download, n_examples)
    else:
        if split != "test":
            raise ValueError("only the ImageNet validation images ('test') are supported")
        x, y = _load_imagenet(data_root(data_dir), n_examples, resize, crop)
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    return x.contiguous(), y


# ---------------------------------------------------------------- digits

def digits_split_indices(seed: int = DIGITS_SPLIT_SEED, test_size: int = DIGITS_TEST_SIZE) -> np.ndarray:
    """Recompute the stratified test indices (the shipped file is the reference)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    _, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
    )
    return np.sort(test_idx)


def _digits_test_indices() -> np.ndarray:
    return np.array(DIGITS_TEST_INDICES.read_text().split(), dtype=np.int64)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (8x8, values 0..16) and their labels, from the file scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the label per row), read without importing
    scikit-learn, which takes longer than the rest of a small evaluation; through ``load_digits`` if the
    file is not where it has always been."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float32)
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _load_digits(split: str) -> tuple[Tensor, Tensor]:
    pixels, target = _digits_arrays()
    images = torch.from_numpy(pixels / np.float32(16.0)).unsqueeze(1)
    labels = torch.from_numpy(target)
    test = _digits_test_indices()
    if split == "test":
        idx = torch.from_numpy(test)
    else:
        mask = np.ones(len(labels), dtype=bool)
        mask[test] = False
        idx = torch.from_numpy(np.nonzero(mask)[0])
    return images[idx], labels[idx]


# ---------------------------------------------------------------- CIFAR

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "test": ["test_batch"],
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "label_key": b"labels",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "test": ["test"],
        "train": ["train"],
        "label_key": b"fine_labels",
        "torchvision": "CIFAR100",
    },
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch format (dicts, lists, numpy arrays) and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file: data files hold arrays only")


def _read_cifar_file(path: Path) -> dict:
    with open(path, "rb") as fh:
        return _ArrayOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()


def _load_cifar(name: str, split: str, root: Path, download: bool, n_examples: int | None) -> tuple[Tensor, Tensor]:
    spec = _CIFAR[name]
    folder = root / spec["folder"]
    files = [folder / f for f in spec[split]]
    if not all(f.is_file() for f in files) and download:
        _download_cifar(name, root)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} {split} split not found: expected the file(s) {', '.join(missing)} "
            f"(torchvision's on-disk format). Download it with torchvision or pass data_dir / set ROBENCH_DATA."
        )
    xs, ys = [], []
    for f in files:
        batch = _read_cifar_file(f)
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        xs.append(data)
        ys.append(np.asarray(batch[spec["label_key"]], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


def _download_cifar(name: str, root: Path) -> None:
    """Fetch the archive from torchvision's address and extract it once its md5 is torchvision's; quietly give
    up when offline or when the archive is not that one. Only the archive is checked and unpacked here: the
    batch files are read by this module's own unpickler, never by torchvision's dataset class (which
    unpickles every file with the standard pickle module)."""
    import torchvision
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(torchvision.datasets, _CIFAR[name]["torchvision"])
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError):
        pass  # no network or a failed download: the caller reports the missing files


# ---------------------------------------------------------------- ImageNet

def imagenet_file_names() -> list[str]:
    """The fixed, ordered list of 5,000 ImageNet validation file names of the board."""
    return IMAGENET_FILE_LIST.read_text().split()


def _load_imagenet(root: Path, n_examples: int | None, resize: int | None, crop: int | None) -> tuple[Tensor, Tensor]:
    from PIL import Image
    from torchvision import transforms

    val = root / "val" if (root / "val").is_dir() else root
    if not val.is_dir():
        raise DatasetNotFoundError(f"ImageNet validation folder not found: expected {root / 'val'} holding one sub-folder per class")
    classes = sorted(d.name for d in val.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"{val} has no class sub-folders (ImageFolder layout: val/<wnid>/<file>.JPEG)")
    where = {}
    for idx, cls in enumerate(classes):
        for f in (val / cls).iterdir():
            where[f.name] = (f, idx)
    wanted = imagenet_file_names()[: n_examples or None]
    missing = [n for n in wanted if n not in where]
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} of the {len(wanted)} ImageNet images of the board are missing from {val}, "
            f"for example {', '.join(missing[:3])}"
        )
    steps = []
    if resize:
        steps.append(transforms.Resize(resize))
    if crop:
        steps.append(transforms.CenterCrop(crop))
    steps.append(transforms.ToTensor())
    tf = transforms.Compose(steps)
    xs, ys = [], []
    for n in wanted:
        path, label = where[n]
        with Image.open(path) as im:
            xs.append(tf(im.convert("RGB")))
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)

