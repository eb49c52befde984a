"""Common corruptions' data: digits-C generated the same everywhere, and CIFAR-C files checked before use."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.corruptions import (
    CORRUPTIONS, DIGITS_C_SHA256, SEVERITIES, CorruptionDataError, corrupt, digits_c, digits_c_sha256, read_cifar_c,
)


@pytest.fixture(scope="module")
def generated():
    return digits_c()


def test_digits_c_is_the_fixed_set(generated):
    sets, labels = generated
    assert sets.shape == (75, 500, 8, 8) and sets.dtype == np.uint8 and labels.shape == (500,)
    assert digits_c_sha256(sets, labels) == DIGITS_C_SHA256  # the set results were computed on; it never changes


def test_every_corruption_damages_more_at_a_higher_severity(generated):
    from benchmark.data import load_dataset

    sets, _ = generated
    clean = np.round(load_dataset("digits")[0][:, 0].numpy() * 255)
    change = np.abs(sets.astype(np.float64) - clean[None]).mean(axis=(1, 2, 3)).reshape(15, 5)
    assert (change[:, 0] > 0).all()
    for name, row in zip(CORRUPTIONS, change):
        assert row[4] > row[0], (name, row)  # severity 5 moves the images further than severity 1


def test_simple_corruptions_have_their_closed_form():
    x = np.linspace(0, 1, 2 * 64).reshape(2, 8, 8)
    b = SEVERITIES["brightness"][1][2]
    assert np.array_equal(corrupt(x, "brightness", 3), np.round(np.clip(x + b, 0, 1) * 255).astype(np.uint8))
    c = SEVERITIES["contrast"][1][0]
    mean = x.mean(axis=(1, 2), keepdims=True)
    assert np.array_equal(corrupt(x, "contrast", 1), np.round(np.clip((x - mean) * c + mean, 0, 1) * 255).astype(np.uint8))
    flat = np.full((3, 8, 8), 0.4)
    for name in ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "pixelate", "elastic_transform"):
        assert (corrupt(flat, name, 5) == 102).all(), name  # a blur or a warp of a flat image leaves it flat


def test_the_same_seed_gives_the_same_set_and_another_seed_another():
    x = np.random.default_rng(0).random((4, 8, 8))
    assert np.array_equal(corrupt(x, "gaussian_noise", 2, seed=1), corrupt(x, "gaussian_noise", 2, seed=1))
    assert not np.array_equal(corrupt(x, "gaussian_noise", 2, seed=1), corrupt(x, "gaussian_noise", 2, seed=2))


@pytest.mark.parametrize("name, severity, message", [("rain", 1, "unknown corruption 'rain'"), ("fog", 0, "severity must be 1..5")])
def test_bad_corruption_or_severity(name, severity, message):
    with pytest.raises(ValueError, match=message):
        corrupt(np.zeros((1, 8, 8)), name, severity)


def _cifar_c(folder, n=2, names=("fog", "snow")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", rng.integers(0, 10, 5 * n).astype(np.int64))
    return folder


def test_cifar_c_files_are_read_memory_mapped(tmp_path):
    sets, labels = read_cifar_c(_cifar_c(tmp_path / "c"), corruptions=("fog", "snow"))
    assert set(sets) == {"fog", "snow"} and isinstance(sets["fog"], np.memmap) and sets["fog"].shape == (10, 32, 32, 3)
    assert labels.shape == (10,) and labels.dtype == np.int64


def test_every_problem_of_a_cifar_c_folder_is_named_at_once(tmp_path):
    folder = _cifar_c(tmp_path / "c", names=("fog", "snow", "frost", "pixelate"))
    np.save(folder / "snow.npy", np.zeros((10, 32, 32, 3), dtype=np.float32))  # wrong dtype
    np.save(folder / "frost.npy", np.zeros((12, 32, 32, 3), dtype=np.uint8))  # length differs from the labels
    (folder / "pixelate.npy").write_bytes((folder / "fog.npy").read_bytes()[:200])  # truncated
    with open(folder / "contrast.npy", "wb") as f:  # an object array: reading it would unpickle
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptionDataError) as info:
        read_cifar_c(folder, corruptions=("fog", "snow", "frost", "pixelate", "contrast", "brightness"))
    text = str(info.value)
    assert "snow.npy: expected uint8 images" in text and "float32" in text
    assert "frost.npy: 12 images but labels.npy has 10 labels" in text
    assert "pixelate.npy: not a readable .npy array" in text
    assert "contrast.npy: not a readable .npy array" in text
    assert "brightness.npy: missing" in text and "fog.npy" not in text


def test_a_labels_file_of_the_wrong_shape_is_refused(tmp_path):
    folder = _cifar_c(tmp_path / "c", names=("fog",))
    np.save(folder / "labels.npy", np.zeros((10, 2), dtype=np.int64))
    with pytest.raises(CorruptionDataError, match="labels.npy: expected integer labels"):
        read_cifar_c(folder, corruptions=("fog",))


def _imagenet_c(root, files, classes=("n01", "n02"), severities=(1, 2), size=224):
    from PIL import Image

    for s in severities:
        for label, wnid in enumerate(classes):
            folder = root / "fog" / str(s) / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for name in files[label::len(classes)]:
                Image.new("RGB", (size, size), (10 * s, 20 * label, 30)).save(folder / name, format="JPEG")
    return root


def test_an_imagenet_c_set_gives_the_boards_images_in_order_with_their_labels(tmp_path):
    from benchmark.corruptions import read_imagenet_c

    files = ["b.JPEG", "a.JPEG", "d.JPEG", "c.JPEG"]  # b, d in n01; a, c in n02
    root = _imagenet_c(tmp_path, files)
    images, labels = read_imagenet_c(root, "fog", 2, file_names=["a.JPEG", "b.JPEG", "c.JPEG"])
    assert images.shape == (3, 224, 224, 3) and images.dtype == np.uint8 and labels.tolist() == [1, 0, 1]
    assert abs(int(images[0, 0, 0, 1]) - 20) <= 2  # n02's green value (JPEG rounds a little)


def test_imagenet_c_problems_name_the_folder(tmp_path):
    import shutil

    from benchmark.corruptions import read_imagenet_c

    files = ["b.JPEG", "a.JPEG"]
    root = _imagenet_c(tmp_path / "c", files)
    with pytest.raises(CorruptionDataError, match=r"fog/3: missing"):
        read_imagenet_c(root, "fog", 3, file_names=files)
    shutil.rmtree(root / "fog" / "2" / "n02")
    with pytest.raises(CorruptionDataError, match=r"fog/2: class folders missing \(n02; 1 in all"):
        read_imagenet_c(root, "fog", 2, file_names=files)
    with pytest.raises(CorruptionDataError, match=r"1 of the board's 3 images missing, for example z.JPEG"):
        read_imagenet_c(root, "fog", 1, file_names=files + ["z.JPEG"])
    other = _imagenet_c(tmp_path / "small", files, severities=(1,), size=32)
    with pytest.raises(CorruptionDataError, match="32x32 pixels, expected 224x224"):
        read_imagenet_c(other, "fog", 1, file_names=files)
    with pytest.raises(ValueError, match="unknown corruption 'haze'"):
        read_imagenet_c(root, "haze", 1)
    empty = tmp_path / "empty"
    (empty / "fog" / "1").mkdir(parents=True)
    with pytest.raises(CorruptionDataError, match=r"fog/1: class folders missing \(all; 0 in all, the other severities have 0\)"):
        read_imagenet_c(empty, "fog", 1, file_names=files)
