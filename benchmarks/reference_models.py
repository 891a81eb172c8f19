"""Reference models for tests and benchmarks: a NequIP-style message-passing network.

Spherical harmonics of edge vectors, radial MLP weights from
``e3nn.nn.FullyConnectedNet``, a weighted tensor product per edge, a scatter
over a precomputed ``edge_index``, ``e3nn.nn.Gate`` and ``o3.Linear``
self-interactions.  The top modules are plain code torchstitch scripts; the
e3nn pieces are claimed by e3nn's own compile modes.

Deliberately no ``from __future__ import annotations`` here: TorchScript
cannot read string annotations.
"""

import math

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3

import torchstitch as ts


class GaussianBasis(torch.nn.Module):
    """Smooth radial basis of edge lengths (e3nn's soft_one_hot_linspace is not scriptable)."""

    def __init__(self, n_basis: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_basis))
        self.width = cutoff / n_basis
        self.cutoff = cutoff

    def forward(self, length: torch.Tensor) -> torch.Tensor:
        diff = (length.unsqueeze(-1) - self.centers) / self.width
        envelope = 0.5 * (torch.cos(math.pi * length / self.cutoff) + 1.0) * (length < self.cutoff)
        return torch.exp(-(diff**2)) * envelope.unsqueeze(-1) * math.sqrt(self.centers.shape[0])


class Interaction(torch.nn.Module):
    """One message-passing layer: convolution, gate, residual self-interaction."""

    def __init__(self, irreps_node: o3.Irreps, irreps_sh: o3.Irreps, n_basis: int, num_neighbors: float):
        super().__init__()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_node if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_node if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        self.gate = e3nn_nn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        self.tp = o3.FullyConnectedTensorProduct(
            irreps_node, irreps_sh, self.gate.irreps_in, shared_weights=False, internal_weights=False
        )
        self.radial = e3nn_nn.FullyConnectedNet([n_basis, 16, self.tp.weight_numel], torch.nn.functional.silu)
        self.self_interaction = o3.Linear(irreps_node, irreps_node)
        self.num_neighbors = num_neighbors

    def forward(
        self,
        x: torch.Tensor,
        sh: torch.Tensor,
        basis: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
    ) -> torch.Tensor:
        weights = self.radial(basis)
        messages = self.tp(x[edge_src], sh, weights)
        aggregated = torch.zeros(
            x.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device
        ).index_add_(0, edge_dst, messages)
        return self.self_interaction(x) + self.gate(aggregated / math.sqrt(self.num_neighbors))


@ts.compile_mode("script")
class NequIPStyle(torch.nn.Module):
    """Energy of a set of atoms: embedding, ``n_layers`` interactions, per-atom readout, sum."""

    def __init__(
        self,
        n_layers: int = 3,
        lmax: int = 1,
        channels: int = 16,
        n_species: int = 4,
        n_basis: int = 8,
        cutoff: float = 3.0,
        num_neighbors: float = 12.0,
    ):
        super().__init__()
        irreps_node = o3.Irreps(
            "+".join(f"{channels}x{deg}{'e' if deg % 2 == 0 else 'o'}" for deg in range(lmax + 1))
        )
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.basis = GaussianBasis(n_basis, cutoff)
        self.embed = o3.Linear(o3.Irreps(f"{n_species}x0e"), irreps_node)
        self.layers = torch.nn.ModuleList(
            Interaction(irreps_node, self.irreps_sh, n_basis, num_neighbors) for _ in range(n_layers)
        )
        self.readout = o3.Linear(irreps_node, o3.Irreps("0e"))

    def forward(self, pos: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        edge_src, edge_dst = edge_index[0], edge_index[1]
        edge_vec = pos[edge_dst] - pos[edge_src]
        sh = self.sh(edge_vec)
        basis = self.basis(torch.sqrt((edge_vec**2).sum(-1)))
        x = self.embed(species)
        for layer in self.layers:
            x = layer(x, sh, basis, edge_src, edge_dst)
        return self.readout(x).sum(0)


def atoms(n_atoms: int, n_species: int = 4, cutoff: float = 3.0, density: float = 0.1, seed: int = 0):
    """Random atoms in a box and their edges within ``cutoff``: ``(pos, species, edge_index)``."""
    generator = torch.Generator().manual_seed(seed)
    side = (n_atoms / density) ** (1 / 3)
    pos = torch.rand(n_atoms, 3, generator=generator) * side
    kinds = torch.randint(0, n_species, (n_atoms,), generator=generator)
    species = torch.nn.functional.one_hot(kinds, n_species).to(torch.get_default_dtype())
    dist = torch.cdist(pos, pos)
    src, dst = torch.nonzero((dist < cutoff) & (dist > 0), as_tuple=True)
    return pos, species, torch.stack([src, dst])
