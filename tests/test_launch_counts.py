"""The op counter behind benchmarks/launch_counts.py: what it counts as a launch, a sync, a model op."""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.launch_counts import CountedModel, OpCounter


def test_counts_computing_ops_and_host_syncs_but_not_views() -> None:
    a, b = torch.rand(4, 3), torch.rand(4, 3)
    counter = OpCounter()
    with counter:
        c = a + b                     # 1 op
        c.view(3, 4).t()              # views: nothing launched
        c.unsqueeze(0).flatten()
        bool((c > 0.5).any())         # gt, any, and the read-back of the answer
        c.nonzero()                   # computes and syncs
    assert counter.ops["other"] == 5
    assert counter.syncs["other"] == 2


def test_model_forward_and_backward_ops_are_attributed() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    counter = OpCounter()
    counted = CountedModel(model, counter)
    x = torch.rand(5, 3, requires_grad=True)
    with counter:
        counter.stages.stage = "attack"
        loss = counted(x).sum()
        (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape
    assert counter.forward_ops["attack"] >= 3          # two linear layers and the ReLU
    assert counter.backward_ops["attack"] >= 3         # their input gradients
    own = counter.ops["attack"] - counter.forward_ops["attack"] - counter.backward_ops["attack"]
    assert own >= 1                                     # the sum, made outside the model
