"""Architectures: each builds, round-trips its state dict, returns logits of the right shape; real sizes match
the published parameter counts (counted on the meta device, nothing allocated)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_zoo.architectures import ARCHITECTURES, WideResNet, build_architecture, check_architecture
from model_zoo.cards import Architecture

#: small configurations of every CIFAR architecture (same code path, fewer channels)
SMALL_CIFAR = {
    "preact_resnet18": Architecture(source="robench", name="preact_resnet18", kwargs={"width": 4}),
    "wide_resnet": Architecture(source="robench", name="wide_resnet", kwargs={"depth": 10, "width": 1}),
    "wide_resnet_16_2_dropout": Architecture(source="robench", name="wide_resnet", kwargs={"depth": 16, "width": 2, "dropout": 0.3}),
    "timm_resnet18": Architecture(source="timm", name="resnet18"),
    "torchvision_resnet18": Architecture(source="torchvision", name="resnet18"),
}

#: published sizes (millions of parameters, 10 classes)
PUBLISHED_MILLIONS = {"preact_resnet18": 11.2, "wrn_28_10": 36.5, "wrn_34_10": 46.2, "wrn_70_16": 266.8}


@pytest.mark.parametrize("name", list(SMALL_CIFAR))
def test_cifar_architecture_builds_round_trips_and_gives_logits(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    arch = SMALL_CIFAR[name]
    net = build_architecture(arch, num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    library = {"timm": "timm.", "torchvision": "torchvision.", "robench": "model_zoo.architectures."}[arch.source]
    assert type(net).__module__.startswith(library)  # timm's and torchvision's resnet18 are different networks

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    torch.manual_seed(1)
    fresh = build_architecture(arch, num_classes=10).eval()
    fresh.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), logits)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_digits_architectures(name: str) -> None:
    net = build_architecture(Architecture(source="robench", name=name), num_classes=10)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    if name == "digits_cnn":  # the count the docs give (docs/model_zoo.md, docs/training.md)
        assert sum(p.numel() for p in net.parameters()) == 151_306


@pytest.mark.parametrize("name", list(PUBLISHED_MILLIONS))
def test_real_configurations_have_the_published_size(name: str) -> None:
    with torch.device("meta"):
        net = build_architecture(Architecture(source="robench", name=name), num_classes=10)
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert millions == pytest.approx(PUBLISHED_MILLIONS[name], rel=0.005)


def test_num_classes_sets_the_classifier() -> None:
    with torch.device("meta"):
        net = build_architecture(Architecture(source="robench", name="wrn_28_10"), num_classes=100)
    assert net.fc.out_features == 100
    small = build_architecture(Architecture(source="robench", name="preact_resnet18", kwargs={"width": 2}), num_classes=100)
    assert small(torch.rand(1, 3, 32, 32)).shape == (1, 100)


def test_every_registered_name_builds_on_meta() -> None:
    for name in ARCHITECTURES:
        with torch.device("meta"):
            assert isinstance(build_architecture(Architecture(source="robench", name=name), 10), torch.nn.Module)


def test_bad_architectures_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown robench architecture 'wrn_28_1'; did you mean wrn_28_10, wrn_70_16, "
                                         "wrn_34_10[?] [(]known: "):
        build_architecture(Architecture(source="robench", name="wrn_28_1"), 10)
    with pytest.raises(ValueError, match="does not accept the kwargs"):
        build_architecture(Architecture(source="robench", name="wrn_28_10", kwargs={"width": 2}), 10)
    with pytest.raises(ValueError, match="unknown architecture source 'keras'"):
        build_architecture(Architecture.model_construct(source="keras", name="resnet", kwargs={}), 10)
    assert check_architecture(Architecture(source="robench", name="qqqq"), 10) == (  # nothing close: no suggestion
        "unknown robench architecture 'qqqq' (known: digits_cnn, digits_mlp, preact_resnet18, wide_resnet, wrn_28_10, "
        "wrn_34_10, wrn_70_16)")
    assert "timm has no model" in check_architecture(Architecture(source="timm", name="resnet18x"), 10)
    assert "torchvision has no model" in check_architecture(Architecture(source="torchvision", name="resnet18x"), 10)
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        WideResNet(depth=27, width=1)


@pytest.mark.parametrize("source, name, kwargs, message", [
    ("timm", "resnet18", {"checkpoint_path": "/abs/evil.pt"}, "timm kwargs checkpoint_path are not allowed"),
    ("timm", "resnet18", {"pretrained": True}, "timm kwargs pretrained are not allowed"),
    ("timm", "resnet18", {"pretrained_cfg_overlay": {"file": "/x"}}, "not allowed"),
    ("torchvision", "resnet18", {"weights": "DEFAULT"}, "torchvision kwargs weights are not allowed"),
    ("timm", "resnet18", {"global_pool": "../../x"}, "must be a number, a flag, a name"),
    ("timm", "resnet18", {"global_pool": ["avg"]}, "timm kwarg global_pool must be a number, a flag, a name or a list of "
                                                   "numbers, got ['avg']"),
    ("robench", "digits_cnn", {"width": "abc"}, "width must be an integer from 1 to 4096, got 'abc'"),
    ("robench", "digits_cnn", {"width": -3}, "got -3"),
    ("robench", "digits_cnn", {"width": 10**9}, "got 1000000000"),
    ("robench", "digits_cnn", {"width": True}, "got True"),
    ("robench", "wrn_28_10", {"dropout": 1.5}, "dropout must be a number in [0, 1), got 1.5"),
    ("robench", "preact_resnet18", {"width": 2.5}, "width must be an integer"),
])
def test_kwargs_that_would_fetch_read_or_exhaust_are_refused(source, name, kwargs, message) -> None:
    """A card's kwargs may shape the network, never load weights or files, nor ask for absurd sizes."""
    problem = check_architecture(Architecture(source=source, name=name, kwargs=kwargs), 10, import_libraries=False)
    assert problem is not None and message in problem


@pytest.mark.parametrize("source, name, kwargs", [
    ("robench", "digits_cnn", {"width": 32}), ("robench", "wide_resnet", {"depth": 28, "width": 10, "dropout": 0.3}),
    ("timm", "resnet18", {"drop_rate": 0.1, "global_pool": "avg"}), ("torchvision", "resnet18", {"zero_init_residual": True}),
    ("timm", "vit_tiny_patch16_224", {"img_size": [32, 32], "patch_size": 4}),
])
def test_kwargs_that_shape_the_network_are_accepted(source, name, kwargs) -> None:
    assert check_architecture(Architecture(source=source, name=name, kwargs=kwargs), 10) is None


def test_list_kwargs_of_a_constructor_take_positive_integers_only() -> None:
    """No registered constructor takes a list today (PreActResNet's num_blocks is fixed by preact_resnet18); the
    rule for one that will (Sequence[int], or no annotation) is in place."""
    from collections.abc import Sequence

    from model_zoo.architectures import _kwarg_problem

    assert _kwarg_problem("num_blocks", [2, 2, 2, 2], Sequence[int]) is None
    for bad in ([2, 0, 2], [2, 5000], [2, True], [2, 2.0], [], "2222", 4):
        assert _kwarg_problem("num_blocks", bad, Sequence[int]) == (
            f"num_blocks must be a list of integers from 1 to 4096, got {bad!r}")


def test_checking_without_importing_leaves_timm_and_torchvision_unloaded() -> None:
    """What `robench submit check` does for many files: a library name is looked up only once it is loaded."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from model_zoo.architectures import check_architecture\n"
            "from model_zoo.cards import Architecture\n"
            "for source in ('timm', 'torchvision'):\n"
            "    print(check_architecture(Architecture(source=source, name='resnet18x'), 10, import_libraries=False),\n"
            "          source in sys.modules)\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out == "None False\nNone False\n"
