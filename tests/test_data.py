"""Datasets: the fixed digits split, CIFAR's on-disk format, the ImageNet file list."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import (
    DatasetNotFoundError, data_root, digits_split_indices, imagenet_file_names, load_dataset,
)


def test_digits_split_is_the_documented_recipe_and_stratified():
    shipped = np.loadtxt(os.path.join(os.path.dirname(__import__("benchmark").__file__), "data_files",
                                      "digits_test_indices.txt"), dtype=np.int64)
    assert np.array_equal(shipped, digits_split_indices())
    x, y = load_dataset("digits", "test")
    xt, yt = load_dataset("digits", "train")
    assert x.shape == (500, 1, 8, 8) and xt.shape == (1297, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) == 1.0
    counts = np.bincount(y.numpy(), minlength=10)
    assert counts.min() >= 48 and counts.max() <= 51
    # train and test are disjoint and cover the 1,797 images
    all_x = torch.cat([x, xt]).flatten(1)
    assert len({tuple(r.tolist()) for r in all_x}) >= 1797 - 30  # a few digits images are exact duplicates
    assert len(y) + len(yt) == 1797


def test_digits_are_read_from_scikit_learns_file_as_load_digits_gives_them(monkeypatch):
    """The bundled file is read directly (importing scikit-learn costs seconds); where it is not found,
    load_digits gives the same arrays."""
    import importlib.util

    from sklearn.datasets import load_digits

    import benchmark.data as data

    bunch = load_digits()
    pixels, labels = data._digits_arrays()
    assert np.array_equal(pixels, bunch.images.astype(np.float32)) and np.array_equal(labels, bunch.target)
    x, y = load_dataset("digits")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a))
    pixels2, labels2 = data._digits_arrays()
    assert np.array_equal(pixels2, pixels) and np.array_equal(labels2, labels)
    x2, y2 = load_dataset("digits")
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_n_examples_takes_the_first_points():
    x, y = load_dataset("digits", n_examples=7)
    xa, ya = load_dataset("digits")
    assert torch.equal(x, xa[:7]) and torch.equal(y, ya[:7])


def test_digits_are_read_from_scikit_learns_file_without_importing_it():
    """Importing scikit-learn takes longer than a small evaluation (docs/scaling.md): the file is read directly."""
    import subprocess
    import sys

    code = ("import sys; from benchmark.data import load_dataset; x, y = load_dataset('digits', 'test'); "
            "print(tuple(x.shape), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__import__("benchmark").__file__)))
    assert out.stdout.split("\n")[0] == "(500, 1, 8, 8) False"


def test_digits_through_scikit_learn_when_its_file_has_moved(monkeypatch):
    import importlib.util

    import benchmark.data

    direct = benchmark.data._digits_arrays()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real_find_spec(name, *a))
    through_sklearn = benchmark.data._digits_arrays()
    for a, b in zip(direct, through_sklearn):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert direct[0].dtype == np.float32 and direct[1].dtype == np.int64 and direct[0].shape == (1797, 8, 8)


@pytest.mark.parametrize("bad", [dict(name="mnist"), dict(name="digits", split="val"), dict(name="digits", n_examples=0)])
def test_bad_arguments_are_named(bad):
    with pytest.raises(ValueError) as err:
        load_dataset(**bad)
    assert any(str(v) in str(err.value) for v in bad.values())


def _write_cifar(root, name, n=12, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    if name == "cifar10":
        folder, file, batch = "cifar-10-batches-py", "test_batch", {b"data": data, b"labels": list(range(n))}
    else:
        folder, file, batch = "cifar-100-python", "test", {b"data": data, b"fine_labels": [i * 7 % 100 for i in range(n)]}
    (root / folder).mkdir(parents=True)
    with open(root / folder / file, "wb") as fh:
        pickle.dump(batch, fh)
    return data


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_torchvision_format(tmp_path, name):
    data = _write_cifar(tmp_path, name)
    x, y = load_dataset(name, data_dir=tmp_path, download=False)
    assert x.shape == (12, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(data).view(12, 3, 32, 32))
    x5, _ = load_dataset(name, data_dir=tmp_path, n_examples=5, download=False)
    assert torch.equal(x5, x[:5])


def test_cifar_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


@pytest.fixture
def cifar_server(tmp_path, monkeypatch):
    """A CIFAR-10 archive of 12 test images served on 127.0.0.1, torchvision's CIFAR10 pointed at it (its URL and
    its archive's md5). Yields the images, the server's request log and the class."""
    import hashlib
    import http.server
    import io
    import tarfile
    import threading

    import torchvision.datasets

    data = _write_cifar(tmp_path / "made", "cifar10")
    folder = tmp_path / "made" / "cifar-10-batches-py"
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    body = archive.getvalue()
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path != "/cifar-10-python.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cls, "tgz_md5", md5(body))
    yield data, requests, cls
    server.shutdown()
    server.server_close()


def test_a_missing_cifar_test_set_is_downloaded_through_torchvision(tmp_path, cifar_server):
    data, requests, _ = cifar_server
    x, y = load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert requests and set(requests) == {"/cifar-10-python.tar.gz"} and y.tolist() == list(range(12))
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(data).view(12, 3, 32, 32))
    fetched = len(requests)
    load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert len(requests) == fetched  # there now: not fetched again


def test_a_failed_or_tampered_cifar_download_names_the_missing_file(tmp_path, cifar_server, monkeypatch):
    _, requests, cls = cifar_server
    served = cls.url
    monkeypatch.setattr(cls, "url", served.replace("cifar-10-python", "gone"))  # 404: as good as offline
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "offline", download=True)
    monkeypatch.setattr(cls, "url", served)
    monkeypatch.setattr(cls, "tgz_md5", "0" * 32)  # the archive is not the one torchvision expects
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "tampered", download=True)
    assert not (tmp_path / "tampered" / "cifar-10-batches-py" / "test_batch").exists()
    assert requests[0] == "/gone.tar.gz" and set(requests[1:]) == {"/cifar-10-python.tar.gz"}


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_DATA",))


def test_cifar_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh)
    with pytest.raises(pickle.UnpicklingError, match="os|posix|system"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert not (tmp_path / "PWNED_BY_DATA").exists()


def test_imagenet_uses_the_shipped_file_list(tmp_path):
    names = imagenet_file_names()
    assert len(names) == 5000 and len(set(names)) == 5000
    assert all(n.startswith("ILSVRC2012_val_") and n.endswith(".JPEG") for n in names)
    classes = ["n01440764", "n01443537", "n01484850"]
    for i, name in enumerate(names[:6]):
        folder = tmp_path / "val" / classes[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((300, 400, 3), 40 * i, dtype=np.uint8)).save(folder / name, format="JPEG")
    x, y = load_dataset("imagenet", data_dir=tmp_path, n_examples=6)
    assert x.shape == (6, 3, 224, 224) and y.tolist() == [0, 1, 2, 0, 1, 2]
    assert abs(float(x[2].mean()) - 80 / 255) < 0.02
    x_small, _ = load_dataset("imagenet", data_dir=tmp_path, n_examples=2, resize=64, crop=56)
    assert x_small.shape == (2, 3, 56, 56)
    with pytest.raises(DatasetNotFoundError, match="1 of the 7"):
        load_dataset("imagenet", data_dir=tmp_path, n_examples=7)
    x_one, y_one = load_dataset("imagenet", data_dir=tmp_path, n_examples=1)
    assert torch.equal(x_one, x[:1]) and y_one.tolist() == [0]
    x_val, y_val = load_dataset("imagenet", data_dir=tmp_path / "val", n_examples=6)  # the val folder itself
    assert torch.equal(x_val, x) and torch.equal(y_val, y)
    with pytest.raises(DatasetNotFoundError, match="ImageNet validation folder not found: expected .*/nowhere/val holding "
                                                   "one sub-folder per class"):
        load_dataset("imagenet", data_dir=tmp_path / "nowhere", n_examples=1)


def test_data_root_defaults_to_user_cache_and_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "robench" / "data"  # platformdirs' user cache on Linux
    monkeypatch.setenv("ROBENCH_DATA", str(tmp_path))
    assert data_root() == tmp_path
