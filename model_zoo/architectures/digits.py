"""Small networks for the embedded 8x8 digits board."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["DigitsCNN", "DigitsMLP"]


class DigitsCNN(nn.Module):
    """Two 3x3 conv blocks and a two-layer head."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 16, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class DigitsMLP(nn.Module):
    """A fully connected network on the flattened 64 pixels."""

    def __init__(self, num_classes: int = 10, hidden: int = 128, in_features: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
