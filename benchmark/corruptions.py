"""Common corruptions, the third threat model: the 15 corruptions x 5 severities of CIFAR-10-C, for the
8x8 digits (digits-C, generated here) and read from the published CIFAR-10-C / CIFAR-100-C files.

digits-C is made by robench's own code from the digits test split: every (corruption, severity) set
draws from its own seeded numpy generator (PCG64, the same numbers on every machine) and computes in
float64 with element-wise operations only (no BLAS or oneDNN kernel whose summation order could differ
between CPUs), then is stored as uint8, as the published sets are. So the set is the same bytes
everywhere: :data:`DIGITS_C_SHA256` is its hash, checked by the tests, and it may not change once
results exist. What each severity means is in docs/corruptions.md (generated from :data:`SEVERITIES`).

CIFAR-10-C / CIFAR-100-C: ``<corruption>.npy`` (uint8, (50000, 32, 32, 3), severity 1 first, 10,000
images each in the test set's order) and ``labels.npy`` (50000,), read memory-mapped with
``allow_pickle=False``; every file is checked (present, shape, dtype, labels' length) before anything
is used, and a problem names the file and what was expected.

ImageNet-C: ``<corruption>/<severity>/<wnid>/<file>.JPEG``, already 224x224, one set at a time, the
board's fixed list of 5,000 validation images.
"""
from __future__ import annotations

import hashlib
import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["CORRUPTIONS", "CORRUPTIONS_3D", "SEVERITIES", "DIGITS_C_SEED", "DIGITS_C_SHA256", "corrupt", "digits_c", "digits_c_sha256",
           "read_cifar_c", "read_imagenet_c", "CorruptionDataError"]

#: the 15 corruptions of CIFAR-10-C, in the published order (noise, blur, weather, digital)
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
#: the 12 corruptions of ImageNet-3DCC (Kar et al., CVPR 2022), laid out as ImageNet-C's
CORRUPTIONS_3D = ("near_focus", "far_focus", "bit_error", "color_quant", "flash", "fog_3d", "h265_abr", "h265_crf",
                  "iso_noise", "low_light", "xy_motion_blur", "z_motion_blur")
#: per corruption, its parameter at severities 1..5 and what the parameter is (documented in docs/corruptions.md)
SEVERITIES: dict[str, tuple[str, tuple[float, ...]]] = {
    "gaussian_noise": ("standard deviation of added Gaussian noise", (0.04, 0.08, 0.12, 0.18, 0.26)),
    "shot_noise": ("photons per unit of intensity (Poisson); fewer is noisier", (60, 25, 12, 5, 3)),
    "impulse_noise": ("share of pixels set to 0 or 1 (salt and pepper)", (0.03, 0.06, 0.09, 0.17, 0.27)),
    "defocus_blur": ("radius in pixels of the disk the image is averaged over", (0.6, 0.9, 1.2, 1.5, 1.9)),
    "glass_blur": ("chance that a pixel swaps with a neighbour, between two blurs of sigma 0.4 px", (0.05, 0.1, 0.2, 0.3, 0.45)),
    "motion_blur": ("length in pixels of the straight streak, at a random angle per image", (2, 2.5, 3, 4, 5)),
    "zoom_blur": ("largest zoom factor of the averaged zoomed copies", (1.06, 1.11, 1.16, 1.21, 1.26)),
    "snow": ("share of pixels that start a snowflake streak", (0.02, 0.035, 0.05, 0.07, 0.1)),
    "frost": ("weight of a smooth random frost texture blended in", (0.25, 0.35, 0.45, 0.55, 0.65)),
    "fog": ("amplitude of fractal (plasma) fog added", (0.2, 0.3, 0.4, 0.55, 0.7)),
    "brightness": ("intensity added to every pixel", (0.1, 0.2, 0.3, 0.4, 0.5)),
    "contrast": ("factor the distance to the image's mean is scaled by", (0.4, 0.3, 0.2, 0.1, 0.05)),
    "elastic_transform": ("largest displacement in pixels of a smooth random warp", (0.5, 0.8, 1.0, 1.3, 1.6)),
    "pixelate": ("side in pixels the 8x8 image is averaged down to, then blown back up", (7, 6, 5, 4, 3)),
    "jpeg_compression": ("JPEG quality (Pillow, greyscale)", (30, 20, 15, 10, 7)),
}
#: the seed digits-C is generated from; with DIGITS_C_SHA256 it fixes the set
DIGITS_C_SEED = 20261130
#: sha256 of digits-C (75 sets of the 500 test images, uint8, in CORRUPTIONS x severity order, then the labels)
DIGITS_C_SHA256 = "c42c121158e1c2bd03f733902cd72ad50a4f69a01609350330d74d11a8499fe2"


class CorruptionDataError(ValueError):
    """A corrupted set is missing or not what its layout says it must be."""


# ---------------------------------------------------------------------------- element-wise helpers

def _shift_sum(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-d correlation of a batch (n, h, w) with a small kernel, edges repeated: sums of shifted copies."""
    kh, kw = kernel.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2)), mode="edge")
    out = np.zeros_like(x)
    h, w = x.shape[1:]
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0.0:
                out += kernel[i, j] * padded[:, i:i + h, j:j + w]
    return out


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(t ** 2) / (2 * sigma ** 2))
    k = np.outer(g, g)
    return k / k.sum()


def _disk_kernel(radius: float) -> np.ndarray:
    """Share of each pixel covered by a disk of ``radius`` (8x8 sub-pixel samples per pixel), normalised."""
    r = int(math.ceil(radius))
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    k = np.zeros((2 * r + 1, 2 * r + 1))
    for i in range(2 * r + 1):
        for j in range(2 * r + 1):
            yy, xx = np.meshgrid(i - r + sub, j - r + sub, indexing="ij")
            k[i, j] = np.mean(yy ** 2 + xx ** 2 <= radius ** 2)
    return k / k.sum()


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """A streak of ``length`` pixels through the centre at ``angle`` (radians), by sub-pixel sampling."""
    r = int(math.ceil(length / 2))
    k = np.zeros((2 * r + 1, 2 * r + 1))
    for t in np.linspace(-length / 2, length / 2, 33):
        i, j = int(round(r + t * math.sin(angle))), int(round(r + t * math.cos(angle)))
        k[i, j] += 1.0
    return k / k.sum()


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample each image (n, h, w) at real coordinates (n, h, w) (edges repeated), bilinearly."""
    n, h, w = x.shape
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = rows - r0, cols - c0
    idx = np.arange(n)[:, None, None]
    top = x[idx, r0, c0] * (1 - fc) + x[idx, r0, c1] * fc
    bottom = x[idx, r1, c0] * (1 - fc) + x[idx, r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _smooth_field(rng: np.random.Generator, n: int, h: int, w: int, sigma: float) -> np.ndarray:
    """A random field with values in about [-1, 1], smooth over ``sigma`` pixels."""
    field = _shift_sum(rng.standard_normal((n, h, w)), _gaussian_kernel(sigma))
    return field / np.maximum(np.abs(field).max(axis=(1, 2), keepdims=True), 1e-12)


def _plasma(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Fractal noise in [0, 1]: octaves of smooth noise, each half the amplitude and twice the detail."""
    total = np.zeros((n, size, size))
    amplitude = 1.0
    for sigma in (4.0, 2.0, 1.0, 0.5):
        total += amplitude * _smooth_field(rng, n, size, size, sigma)
        amplitude /= 2
    low, high = total.min(axis=(1, 2), keepdims=True), total.max(axis=(1, 2), keepdims=True)
    return (total - low) / np.maximum(high - low, 1e-12)


# ---------------------------------------------------------------------------- the 15 corruptions

def _gaussian_noise(x, p, rng):
    return x + rng.normal(0.0, p, x.shape)


def _shot_noise(x, p, rng):
    return rng.poisson(x * p) / p


def _impulse_noise(x, p, rng):
    out = x.copy()
    hit = rng.random(x.shape) < p
    out[hit] = (rng.random(x.shape) < 0.5)[hit].astype(np.float64)
    return out


def _defocus_blur(x, p, rng):
    return _shift_sum(x, _disk_kernel(p))


def _glass_blur(x, p, rng):
    kernel = _gaussian_kernel(0.4)
    out = _shift_sum(x, kernel)
    n, h, w = x.shape
    idx = np.arange(n)
    for i in range(h - 1, 0, -1):
        for j in range(w - 1, 0, -1):
            di, dj = rng.integers(-1, 1, size=(2, n))  # a neighbour up and/or left
            swap = idx[(rng.random(n) < p) & ((di != 0) | (dj != 0))]
            a, b = out[swap, i, j].copy(), out[swap, i + di[swap], j + dj[swap]].copy()
            out[swap, i, j], out[swap, i + di[swap], j + dj[swap]] = b, a
    return _shift_sum(out, kernel)


def _motion_blur(x, p, rng):
    angles = rng.uniform(0, math.pi, len(x))
    return np.stack([_shift_sum(img[None], _line_kernel(p, a))[0] for img, a in zip(x, angles)])


def _zoom_blur(x, p, rng):
    n, h, w = x.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    centre_r, centre_c = (h - 1) / 2, (w - 1) / 2
    out = x.copy()
    factors = np.arange(1.0 + 0.02, p + 1e-9, 0.02)
    for z in factors:
        r = np.broadcast_to(centre_r + (rows - centre_r) / z, x.shape)
        c = np.broadcast_to(centre_c + (cols - centre_c) / z, x.shape)
        out += _bilinear(x, r, c)
    return out / (1 + len(factors))


def _snow(x, p, rng):
    seeds = (rng.random(x.shape) < p).astype(np.float64)
    angle = rng.uniform(math.pi / 3, 2 * math.pi / 3)  # falling, one direction for the whole set
    flakes = 0.85 * np.clip(_shift_sum(seeds, _line_kernel(3, angle)) * 1.5, 0, 1)
    brighter = np.maximum(x, x * 1.3 + 0.1)
    return np.maximum((1 - 2 * p) * x + 2 * p * brighter, flakes)


def _frost(x, p, rng):
    n, h, w = x.shape
    texture = 0.5 + 0.5 * _smooth_field(rng, n, h, w, 0.8)
    return (1 - p) * x + p * (0.6 + 0.4 * texture)


def _fog(x, p, rng):
    n, h, w = x.shape
    fog = _plasma(rng, n, max(h, w))[:, :h, :w]
    top = x.max(axis=(1, 2), keepdims=True)
    return (x + p * fog) * top / np.maximum(top + p, 1e-12)


def _brightness(x, p, rng):
    return x + p


def _contrast(x, p, rng):
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * p + mean


def _elastic_transform(x, p, rng):
    n, h, w = x.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    dr, dc = p * _smooth_field(rng, n, h, w, 1.0), p * _smooth_field(rng, n, h, w, 1.0)
    return _bilinear(x, rows[None] + dr, cols[None] + dc)


def _pixelate(x, p, rng):
    n, h, w = x.shape
    s = int(p)
    edges_r, edges_c = np.linspace(0, h, s + 1), np.linspace(0, w, s + 1)
    out = np.empty_like(x)
    for a in range(s):
        for b in range(s):
            r0, r1 = int(math.floor(edges_r[a])), int(math.ceil(edges_r[a + 1]))
            c0, c1 = int(math.floor(edges_c[b])), int(math.ceil(edges_c[b + 1]))
            block = x[:, r0:r1, c0:c1].mean(axis=(1, 2), keepdims=True)
            out[:, r0:r1, c0:c1] = block
    return out


def _jpeg_compression(x, p, rng):
    from PIL import Image

    out = np.empty_like(x)
    for k, img in enumerate(_to_uint8(x)):
        buffer = io.BytesIO()
        Image.fromarray(img, mode="L").save(buffer, format="JPEG", quality=int(p))
        out[k] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L"), dtype=np.float64) / 255.0
    return out


_FUNCTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    name: globals()[f"_{name}"] for name in CORRUPTIONS}


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def corrupt(images: np.ndarray, corruption: str, severity: int, seed: int = DIGITS_C_SEED) -> np.ndarray:
    """``images`` (n, h, w) in [0, 1] under ``corruption`` at ``severity`` (1..5), as uint8 (n, h, w).

    The random numbers come from numpy's PCG64 seeded by (seed, corruption, severity) only."""
    if corruption not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    rng = np.random.Generator(np.random.PCG64([seed, CORRUPTIONS.index(corruption), severity]))
    parameter = SEVERITIES[corruption][1][severity - 1]
    return _to_uint8(_FUNCTIONS[corruption](np.asarray(images, dtype=np.float64), parameter, rng))


@lru_cache(maxsize=2)
def digits_c(seed: int = DIGITS_C_SEED) -> tuple[np.ndarray, np.ndarray]:
    """digits-C: (75, 500, 8, 8) uint8 (CORRUPTIONS x severities 1..5, the 500 test images each) and the labels.

    Made once per process (about 2 s) and kept: the arrays are read-only."""
    from .data import load_dataset

    x, y = load_dataset("digits", "test")
    clean = x[:, 0].double().numpy()
    sets = np.stack([corrupt(clean, name, severity, seed) for name in CORRUPTIONS for severity in range(1, 6)])
    labels = y.numpy().copy()
    sets.flags.writeable = labels.flags.writeable = False
    return sets, labels


def digits_c_sha256(sets: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(sets, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- CIFAR-10-C / CIFAR-100-C

#: images per severity in the published sets
CIFAR_C_PER_SEVERITY = 10_000


def read_cifar_c(folder: str | Path, corruptions: tuple[str, ...] = CORRUPTIONS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The published files of a CIFAR-C folder, memory-mapped: {corruption: (5 n, 32, 32, 3) uint8} and the
    labels (5 n,), n = 10,000 in the published sets (any n here, the same in every file). Every file is
    checked first; CorruptionDataError lists every problem, each naming its file and what was expected."""
    folder = Path(folder)
    problems = []

    def load(path: Path) -> np.ndarray | None:
        if not path.is_file():
            problems.append(f"{path}: missing (expected the published layout <corruption>.npy and labels.npy)")
            return None
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:  # a pickle, a truncated file, not an .npy file
            problems.append(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})")
            return None

    labels = load(folder / "labels.npy")
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) % 5):
        problems.append(f"{folder / 'labels.npy'}: expected integer labels of shape (5 n,), got {labels.dtype} {labels.shape}")
    sets = {}
    for name in corruptions:
        path = folder / f"{name}.npy"
        array = load(path)
        if array is None:
            continue
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (32, 32, 3):
            problems.append(f"{path}: expected uint8 images of shape (5 n, 32, 32, 3), got {array.dtype} {array.shape}")
        elif labels is not None and len(array) != len(labels):
            problems.append(f"{path}: {len(array)} images but labels.npy has {len(labels)} labels")
        sets[name] = array
    if problems:
        raise CorruptionDataError("; ".join(problems))
    assert labels is not None
    return sets, np.asarray(labels, dtype=np.int64)


# ---------------------------------------------------------------------------- ImageNet-C

#: the side of ImageNet-C's images (distributed already resized and cropped)
IMAGENET_C_SIDE = 224


def read_imagenet_c(folder: str | Path, corruption: str, severity: int, n_examples: int | None = None,
                    file_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One set of ImageNet-C (or ImageNet-3DCC, the same layout) from its folders ``<corruption>/<severity>/<wnid>/<file>``: the board's
    fixed images (``benchmark.data.imagenet_file_names``, the first ``n_examples``) as uint8 (n, 224, 224, 3)
    and their labels (the wnid folders' sorted order, as ImageNet's). A missing folder, class folders that
    the corruption's other severities have and this one lacks, missing images or an image of another size
    raise CorruptionDataError naming the folder or file."""
    from PIL import Image

    from .data import imagenet_file_names

    folder = Path(folder)
    if corruption not in CORRUPTIONS + CORRUPTIONS_3D:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS + CORRUPTIONS_3D)}")
    base = folder / corruption / str(severity)
    if not base.is_dir():
        raise CorruptionDataError(f"{base}: missing (expected the layout <corruption>/<severity>/<wnid>/<file>.JPEG)")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    reference = [folder / corruption / str(s) for s in range(1, 6) if s != severity and (folder / corruption / str(s)).is_dir()]
    expected = set(classes).union(*({d.name for d in r.iterdir() if d.is_dir()} for r in reference))
    missing_classes = sorted(expected - set(classes))
    if missing_classes or not classes:
        shown = ", ".join(missing_classes[:5]) or "all"
        raise CorruptionDataError(f"{base}: class folders missing ({shown}; {len(missing_classes)} in all, "
                                  f"the other severities have {len(expected)})")
    where = {f.name: (f, label) for label, wnid in enumerate(classes) for f in (base / wnid).iterdir()}
    wanted = (file_names if file_names is not None else imagenet_file_names())[: n_examples or None]
    absent = [name for name in wanted if name not in where]
    if absent:
        raise CorruptionDataError(f"{base}: {len(absent)} of the board's {len(wanted)} images missing, "
                                  f"for example {', '.join(absent[:3])}")
    images = np.empty((len(wanted), IMAGENET_C_SIDE, IMAGENET_C_SIDE, 3), dtype=np.uint8)
    labels = np.empty(len(wanted), dtype=np.int64)
    for k, name in enumerate(wanted):
        path, labels[k] = where[name]
        with Image.open(path) as image:
            if image.size != (IMAGENET_C_SIDE, IMAGENET_C_SIDE):
                raise CorruptionDataError(f"{path}: {image.size[0]}x{image.size[1]} pixels, expected "
                                          f"{IMAGENET_C_SIDE}x{IMAGENET_C_SIDE} (ImageNet-C's images are cropped)")
            images[k] = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return images, labels
