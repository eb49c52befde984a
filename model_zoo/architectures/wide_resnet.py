"""Wide residual networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016) for 32x32 inputs.

WRN-d-k has three groups of (d - 4) / 6 pre-activation basic blocks with 16k, 32k and 64k channels
(strides 1, 2, 2) after a 16-channel 3x3 stem. Parameter names follow the layout of the published
adversarial-training checkpoints (``conv1``, ``block1..3.layer.<i>.{bn1,conv1,bn2,conv2,convShortcut}``,
``bn1``, ``fc``), so those state dicts load without renaming.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["WideBasicBlock", "WideGroup", "WideResNet", "wrn_28_10", "wrn_34_10", "wrn_70_16"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; a 1x1 convolution on the pre-activated input as shortcut
    when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None  # noqa: N815 - the checkpoints' key name
        if stride != 1 or in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        skip = x if self.convShortcut is None else self.convShortcut(pre)
        out = self.relu2(self.bn2(self.conv1(pre)))
        return self.conv2(self.dropout(out)) + skip


class WideGroup(nn.Module):
    """``n`` blocks; the first one changes stride and channels."""

    def __init__(self, n: int, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
            for i in range(n)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: ``depth`` = 6n + 4 for n blocks per group; ``width`` multiplies the channels."""

    def __init__(
        self, depth: int = 28, width: int = 10, num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3
    ) -> None:
        super().__init__()
        if int(depth) < 10 or (int(depth) - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 70, ...), got {depth}")
        if int(width) < 1:
            raise ValueError(f"WideResNet width must be a positive integer, got {width}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (int(depth) - 4) // 6
        channels = [16, 16 * int(width), 32 * int(width), 64 * int(width)]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideGroup(n, channels[0], channels[1], 1, dropout)
        self.block2 = WideGroup(n, channels[1], channels[2], 2, dropout)
        self.block3 = WideGroup(n, channels[2], channels[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.pool(self.relu(self.bn1(out))).flatten(1)
        return self.fc(out)


def wrn_28_10(num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-28-10."""
    return WideResNet(28, 10, num_classes=num_classes, dropout=dropout, in_channels=in_channels)


def wrn_34_10(num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-34-10 (Madry et al., TRADES)."""
    return WideResNet(34, 10, num_classes=num_classes, dropout=dropout, in_channels=in_channels)


def wrn_70_16(num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3) -> WideResNet:
    """WRN-70-16."""
    return WideResNet(70, 16, num_classes=num_classes, dropout=dropout, in_channels=in_channels)
