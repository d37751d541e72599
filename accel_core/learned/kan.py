"""A B-spline Kolmogorov-Arnold network (KAN, arXiv 2404.19756) in plain torch.

Every edge (i -> j) of a `KANLayer` carries its own function
    phi_ij(x) = w_base[j, i] * silu(x) + sum_g w_spline[j, i, g] * B_g(x)
with B_g the cubic B-splines on a fixed uniform grid over [lo, hi] (grid intervals G, so G + 3 basis
functions), and output j = sum_i phi_ij(x_i). Inputs outside [lo, hi] are clamped before the spline (the
SiLU term sees the raw input), so a forecast never extrapolates a spline. No grid refinement or pruning:
the networks here are tiny and trained once.
"""
from __future__ import annotations

import torch
from torch import nn

ORDER = 3  # cubic


def bspline_basis(x: torch.Tensor, grid: int, lo: float = -1.0, hi: float = 1.0, order: int = ORDER) -> torch.Tensor:
    """[..., grid + order] values of the B-splines of `order` on `grid` uniform intervals over [lo, hi]
    (knots extended by `order` intervals each side), at x clamped to [lo, hi]. On [lo, hi] they are
    non-negative and sum to 1 (partition of unity)."""
    h = (hi - lo) / grid
    knots = lo + h * torch.arange(-order, grid + order + 1, dtype=x.dtype, device=x.device)
    x = x.clamp(lo, hi).unsqueeze(-1)
    # order 0: indicator of [t_i, t_i+1); the right end belongs to the last interval inside the grid
    b = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    last = order + grid - 1  # interval [hi - h, hi]
    onehot = torch.zeros(b.shape[-1], dtype=x.dtype, device=x.device)
    onehot[last] = 1.0
    b = torch.where(x >= hi, onehot, b)
    for k in range(1, order + 1):  # Cox-de Boor recursion
        left = (x - knots[:-(k + 1)]) / (knots[k:-1] - knots[:-(k + 1)]) * b[..., :-1]
        right = (knots[k + 1:] - x) / (knots[k + 1:] - knots[1:-k]) * b[..., 1:]
        b = left + right
    return b


class KANLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int, grid: int = 5, lo: float = -1.0, hi: float = 1.0,
                 init_scale: float = 0.1) -> None:
        super().__init__()
        self.n_in, self.n_out, self.grid, self.lo, self.hi = n_in, n_out, grid, lo, hi
        self.spline = nn.Parameter(init_scale * torch.randn(n_out, n_in, grid + ORDER) / n_in ** 0.5)
        self.base = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n_in] -> [..., n_out]."""
        basis = bspline_basis(x, self.grid, self.lo, self.hi)  # [..., n_in, G + 3]
        return torch.einsum("...ig,oig->...o", basis, self.spline) + torch.nn.functional.silu(x) @ self.base.T


class KAN(nn.Module):
    """Stacked KAN layers, e.g. widths [in, 8, out]. Hidden activations are squashed by tanh into the
    next layer's grid range (so the next grid is used rather than clamped). `zero_output()` makes the
    network output exactly 0 (a start at the baseline it refines)."""

    def __init__(self, widths: list[int], grid: int = 5, lo: float = -1.0, hi: float = 1.0) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("KAN needs at least [in, out] widths")
        self.widths = list(widths)
        self.layers = nn.ModuleList(KANLayer(a, b, grid, lo, hi) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i:
                x = torch.tanh(x)
            x = layer(x)
        return x

    def zero_output(self) -> None:
        with torch.no_grad():
            self.layers[-1].spline.zero_()
            self.layers[-1].base.zero_()
