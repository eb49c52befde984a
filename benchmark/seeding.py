"""The one rule that turns a run's seed into the seed of each random stream.

Every random draw of an evaluation (each attack on each chunk, the analysis's baselines, noise and
metrics) and of a training run comes from its own ``torch.Generator``, seeded

    seed * 1,000,003 + stream * 10,000,019 + offset

where ``stream`` names a kind of draw (the analysis's PGD baseline, its noise, ...; 0 for the
protocol's attacks and for training) and ``offset`` a place in the run (a chunk and the attack's
position in the protocol, a batch, a training stream). A record names its seed, so its randomness
can be drawn again, by a later version too: changing this rule changes every record.
"""
from __future__ import annotations

import torch

__all__ = ["seeded_generator", "SEED_STRIDE", "STREAM_STRIDE"]

#: the multipliers of the rule above (primes, so that nearby seeds, streams and offsets do not collide)
SEED_STRIDE = 1_000_003
STREAM_STRIDE = 10_000_019


def seeded_generator(seed: int, *, stream: int = 0, offset: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` for one random stream of a run seeded ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed) * SEED_STRIDE + int(stream) * STREAM_STRIDE + int(offset))
    return generator
