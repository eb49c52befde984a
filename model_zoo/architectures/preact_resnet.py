"""Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016) for 32x32 inputs.

Each residual block applies BatchNorm and ReLU *before* its convolutions; when a block changes the
resolution or the number of channels, its shortcut is a 1x1 convolution applied to the
pre-activated input. Parameter names follow the layout most published CIFAR checkpoints use
(``conv1``, ``layer1..4.<i>.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn``, ``linear``), so those
state dicts load without renaming.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-convolution shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.act = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """A 3x3 stem, four stages of pre-activation blocks (strides 1, 2, 2, 2), BN-ReLU, global average pool, linear.

    ``width`` is the stem's channel count (64 in the paper); the stages use width, 2, 4 and 8 times it.
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or any(int(n) < 1 for n in num_blocks):
            raise ValueError(f"num_blocks must be four positive counts, got {tuple(num_blocks)}")
        if int(width) < 1:
            raise ValueError(f"width must be positive, got {width}")
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        channels = w
        stages = []
        for stage, (blocks, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            out_channels = w * 2**stage
            layers = []
            for i in range(int(blocks)):
                layers.append(PreActBlock(channels, out_channels, stride if i == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.pool(self.act(self.bn(out))).flatten(1)
        return self.linear(out)


def preact_resnet18(num_classes: int = 10, width: int = 64, in_channels: int = 3) -> PreActResNet:
    """PreActResNet-18: two blocks per stage."""
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, width=width, in_channels=in_channels)
