"""Small torch modules for the device tests, in a module of their own so they pickle
(a class defined in a conftest cannot: several conftest modules share that name)."""

from __future__ import annotations

import torch


class MLP(torch.nn.Module):
    def __init__(self, d_in: int = 16, d_hidden: int = 32, d_out: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d_in, d_hidden), torch.nn.ReLU(), torch.nn.Linear(d_hidden, d_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
