"""Safe loading: malicious pickles refused unexecuted, key prefixes by one rule, load_model end to end."""
from __future__ import annotations

import copy
import io
import pickle
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from model_zoo import load_model
from model_zoo.architectures import DigitsMLP, build_architecture
from model_zoo.cards import Architecture
from model_zoo.download import ChecksumError, sha256_file
from model_zoo.loading import (
    CheckpointError, UnsafeCheckpointError, load_model_from_card, read_state_dict, strip_key_prefixes, unwrap_state_dict,
)
from model_zoo.normalize import Normalize, NormalizedModel
from model_zoo.registry import Registry
from model_zoo.submission_schema import read_card
from test_submission_schema import submission_document, write_submission
from test_zoo_download import LocalServer


class _CreatesAFile:
    """Unpickling this calls open(target, 'w'), which would create the file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (str(self.target), "w"))


@pytest.fixture
def digits_net() -> nn.Module:
    torch.manual_seed(0)
    return DigitsMLP(hidden=8).eval()


def _card_with_pt(tmp_path: Path, payload: object, model_id: str = "Doe2024Example"):
    """A digits card whose checkpoint is a .pt file holding ``payload`` (saved with torch.save)."""
    doc = submission_document(model_id)
    doc["checkpoint"] = {"path": f"submissions/digits/Linf/{model_id}.pt", "sha256": "0" * 64, "format": "pt"}
    ckpt = tmp_path / doc["checkpoint"]["path"]
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, ckpt)
    doc["checkpoint"]["sha256"] = sha256_file(ckpt)
    path = write_submission(tmp_path, doc, checkpoint=False)
    return read_card(path, tmp_path), ckpt


# ------------------------------------------------------------------ malicious pickles

@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, digits_net: nn.Module,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "pwned.txt"
    payload = {"state_dict": digits_net.state_dict(), "extra": _CreatesAFile(target)}
    card, _ = _card_with_pt(tmp_path, payload)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load .*\.pt: it pickles the callable or class .*open, which "
                                                   r"could run arbitrary code; nothing in it was executed\. robench only loads "
                                                   r"plain tensors: save the state dict with safetensors\.torch\.save_file\("):
        load_model_from_card(card, repo_root=tmp_path)
    assert not target.exists()
    # bare pickles (not torch's zip format) are refused too, whatever the protocol
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(CheckpointError, match="refused to load bare.pkl"):
            read_state_dict(pickle.dumps(_CreatesAFile(target), protocol=protocol), "pt", "bare.pkl")
    assert not target.exists()
    # torch's switch for old code that needs full unpickling does not reach robench's loader
    with monkeypatch.context() as patched:
        patched.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        with pytest.raises(UnsafeCheckpointError):
            load_model_from_card(card, repo_root=tmp_path)
    assert not target.exists()
    # the control: the same payload, unpickled by plain pickle, does create its file
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_CreatesAFile(control))).close()
    assert control.exists()


def test_unreadable_checkpoints_give_clear_errors() -> None:
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(b"<!DOCTYPE html><html></html>", "safetensors", "page.safetensors")
    with pytest.raises(CheckpointError, match="^empty.pt is not a torch checkpoint: EOFError$"):  # the error has no text
        read_state_dict(b"", "pt", "empty.pt")
    with pytest.raises(CheckpointError, match=r"^refused to load page.pt: it is not a plain tensor file \(the weights-only "
                                              r"unpickler stopped at: Unsupported operand 60\); nothing in it was executed$"):
        read_state_dict(b"<html><body>login</body></html>", "pt", "page.pt")  # '<' is no pickle instruction
    with pytest.raises(CheckpointError, match="^unknown checkpoint format 'onnx'; expected one of safetensors, pt$"):
        read_state_dict(b"", "onnx", "m.onnx")
    with pytest.raises(CheckpointError, match=r"holds no state dict of tensors \(top-level keys: 'epoch', 'optimizer'\); expected "
                                              r"\{name: tensor\} or one nested under state_dict, model_state_dict, model, net, state$"):
        unwrap_state_dict({"epoch": 3, "optimizer": {"lr": 0.1}})
    with pytest.raises(CheckpointError, match="holds a list"):
        unwrap_state_dict([torch.zeros(1)])


def _as_if_saved_on_a_gpu(state: dict[str, torch.Tensor]) -> bytes:
    """torch.save's bytes for ``state`` with every storage marked as saved from "cuda:0" (as a checkpoint
    written on a GPU machine is), made on any machine: the location string in the pickle is rewritten."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info, data)
    return out.getvalue()


def test_a_checkpoint_saved_on_a_gpu_loads_onto_the_cpu(digits_net: nn.Module) -> None:
    data = _as_if_saved_on_a_gpu(digits_net.state_dict())
    if not torch.cuda.is_available():  # the file does ask for a GPU: torch's own default fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(data), weights_only=True)
    loaded = read_state_dict(data, "pt", "gpu.pt")
    assert {t.device.type for t in loaded.values()} == {"cpu"}
    for name, tensor in digits_net.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)


# ------------------------------------------------------------------ state-dict keys

def test_prefix_rule(digits_net: nn.Module) -> None:
    own = digits_net.state_dict()
    keys = list(own)
    for prefix in ("module.", "model.", "module.model.", "model.module."):
        renamed = {prefix + k: v for k, v in own.items()}
        assert list(strip_key_prefixes(renamed, keys)) == keys
    # the card's key_prefix is stripped first, then the general rule
    assert list(strip_key_prefixes({"module.backbone." + k: v for k, v in own.items()}, keys, "module.backbone.")) == keys
    assert list(strip_key_prefixes({"net.module." + k: v for k, v in own.items()}, keys, "net.")) == keys
    # a prefix the network's own keys carry is kept; a prefix on only some keys is kept
    modelled = {"model." + k: v for k, v in own.items()}
    assert list(strip_key_prefixes(modelled, list(modelled))) == list(modelled)
    partial = {("module." + k if i else k): v for i, (k, v) in enumerate(own.items())}
    assert list(strip_key_prefixes(partial, keys)) == list(partial)
    # the card's key_prefix comes off the keys that carry it; the others are left whole
    some = {("backbone." + k if i else k): v for i, (k, v) in enumerate(own.items())}
    assert list(strip_key_prefixes(some, keys, "backbone.")) == keys


def test_nested_prefixed_pt_checkpoint_loads_and_matches(tmp_path: Path, digits_net: nn.Module) -> None:
    wrapped = nn.DataParallel(digits_net)  # keys start with 'module.'
    card, _ = _card_with_pt(tmp_path, {"state_dict": wrapped.state_dict(), "epoch": 30})
    model = load_model_from_card(card, repo_root=tmp_path)
    x = torch.rand(4, 1, 8, 8)
    assert not model.training
    assert isinstance(model, NormalizedModel)
    torch.testing.assert_close(model(x), digits_net((x - 0.5) / 0.25))


def test_checkpoint_that_does_not_fit_lists_the_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    card, _ = _card_with_pt(tmp_path, DigitsMLP(hidden=16).state_dict())  # the card says hidden=8
    with pytest.raises(CheckpointError, match=r"shape mismatches: net\.1\.weight: checkpoint \(16, 64\) vs model \(8, 64\)"):
        load_model_from_card(card, repo_root=tmp_path)
    card, _ = _card_with_pt(tmp_path, {"extra.weight": torch.zeros(1), **DigitsMLP(hidden=8).state_dict()})
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight\. If the keys differ"):
        load_model_from_card(card, repo_root=tmp_path)
    # keys the network needs and the file lacks, five named and the count, and the hint on prefixes
    card, _ = _card_with_pt(tmp_path, {"backbone." + k: v for k, v in DigitsMLP(hidden=8).state_dict().items()})
    with pytest.raises(CheckpointError, match=r"missing keys: net\.1\.weight, net\.1\.bias, net\.3\.weight, net\.3\.bias, "
                                              r"net\.5\.weight, \.\.\. \(6 in all\); unexpected keys: backbone\.net\.1\.weight.*"
                                              r"If the keys differ by a prefix, declare it as checkpoint\.key_prefix in the submission file"):
        load_model_from_card(card, repo_root=tmp_path)
    # weights stored as integers were cast silently; a float16 checkpoint of float32 weights is fine
    as_ints = {k: (v * 100).long() for k, v in DigitsMLP(hidden=8).state_dict().items()}
    card, _ = _card_with_pt(tmp_path, as_ints)
    with pytest.raises(CheckpointError, match=r"integer where a float is expected.*net\.1\.weight: checkpoint torch\.int64 vs model torch\.float32"):
        load_model_from_card(card, repo_root=tmp_path)
    card, _ = _card_with_pt(tmp_path, {k: v.half() for k, v in DigitsMLP(hidden=8).state_dict().items()})
    load_model_from_card(card, repo_root=tmp_path)
    # NaN weights make every prediction meaningless: refused at load time, the tensor named
    broken = DigitsMLP(hidden=8).state_dict()
    broken["net.1.weight"][0, :3] = float("nan")
    card, _ = _card_with_pt(tmp_path, broken)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights: net\.1\.weight \(3 of 512 values\)"):
        load_model_from_card(card, repo_root=tmp_path)


def test_repository_checkpoint_is_hashed_before_loading(tmp_path: Path) -> None:
    registry_path = write_submission(tmp_path, submission_document())
    card = read_card(registry_path, tmp_path)
    ckpt = tmp_path / card.checkpoint.path
    ckpt.write_bytes(ckpt.read_bytes().replace(b"net.1", b"net.9"))
    with pytest.raises(ChecksumError, match=card.checkpoint.sha256):
        load_model_from_card(card, repo_root=tmp_path)


def test_normalize_wrapper() -> None:
    norm = Normalize([0.5, 0.25, 0.0], [0.5, 0.5, 2.0])
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.5, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.state_dict() == {}  # the card, not the checkpoint, holds mean and std
    with pytest.raises(ValueError, match=r"expected a batch of shape \(n, 3, height, width\)"):
        norm(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^std values must be positive, got \(0\.0,\)$"):
        Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match=r"^mean and std need one value per channel, got 3 and 1 values$"):
        Normalize([0.5, 0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match=r"^mean and std need one value per channel, got 0 and 0 values$"):
        Normalize([], [])
    half = norm(x.to(torch.bfloat16))  # a model run in bfloat16 gets bfloat16 back, not float32
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), expected, atol=0.05)


# ------------------------------------------------------------------ load_model, end to end

@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("arch", [
    Architecture(source="robench", name="preact_resnet18", kwargs={"width": 4}),
    Architecture(source="robench", name="wide_resnet", kwargs={"depth": 10, "width": 1}),
], ids=["preact_resnet18", "wide_resnet"])
def test_load_model_from_a_url_served_locally(tmp_path: Path, server: LocalServer, arch: Architecture) -> None:
    torch.manual_seed(0)
    net = build_architecture(arch, 10)
    for m in net.modules():  # non-trivial BN statistics, so that a wrong load would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    blob = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(blob))
    server.routes["/ckpt/tiny.safetensors"] = (blob.read_bytes(), "ok")

    doc = copy.deepcopy(submission_document("Doe2024Tiny", dataset="cifar10"))
    doc["architecture"] = {"source": arch.source, "name": arch.name, "kwargs": dict(arch.kwargs)}
    doc["preprocessing"] = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2471, 0.2435, 0.2616], "input_size": [3, 32, 32]}
    doc["checkpoint"] = {"url": server.url("/ckpt/tiny.safetensors"), "sha256": sha256_file(blob), "format": "safetensors"}
    root = tmp_path / "repo"
    write_submission(root, doc)
    cache = tmp_path / "cache"

    model = load_model("Doe2024Tiny", dataset="cifar10", threat_model="Linf", submissions_dir=root / "submissions",
                       cache=cache, progress=False)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, net((x - mean) / std))
    assert logits.shape == (2, 10) and not model.training
    assert (cache / f"{sha256_file(blob)}.safetensors").is_file()

    # a second load reuses the verified cache; the registry can also be passed directly
    registry = Registry(root / "submissions")
    load_model("Doe2024Tiny", "cifar10", "Linf", registry=registry, cache=cache, progress=False)
    assert len(server.requests_for("/ckpt/tiny.safetensors")) == 1
    with pytest.raises(ValueError, match="either registry or submissions_dir"):
        load_model("Doe2024Tiny", "cifar10", "Linf", registry=registry, submissions_dir=root / "submissions")


def test_yaml_card_round_trip_keeps_the_checkpoint_path(tmp_path: Path) -> None:
    path = write_submission(tmp_path, submission_document())
    doc = yaml.safe_load(path.read_text())
    model = load_model("Doe2024Example", "digits", "Linf", submissions_dir=tmp_path / "submissions")
    assert doc["checkpoint"]["path"] == "submissions/digits/Linf/Doe2024Example.safetensors"
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("url_path, cached_as", [("/files/W.PTH", ".pth"), ("/download/3", ".pt"), ("/w.tar", ".pt")])
def test_a_downloaded_pt_checkpoint_is_cached_under_a_torch_suffix(tmp_path: Path, server: LocalServer,
                                                                   digits_net: nn.Module, url_path: str,
                                                                   cached_as: str) -> None:
    """The cached file keeps the URL's torch suffix (lower case); a URL without one gets .pt."""
    card, ckpt = _card_with_pt(tmp_path, digits_net.state_dict())
    server.routes[url_path] = (ckpt.read_bytes(), "ok")
    card = card.model_copy(update={"checkpoint": card.checkpoint.model_copy(update={"url": server.url(url_path),
                                                                                     "path": None})})
    load_model_from_card(card, cache=tmp_path / "cache", progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [
        card.checkpoint.sha256 + cached_as]
