"""Reference models for tests and benchmarks: two message-passing networks of atoms.

``GatePoints`` is the reference network of ``shared/BASELINES.md`` (the benchmarks'
``medium`` and ``large``): e3nn's gate-points ``Convolution``
(``e3nn.nn.models.gate_points_2101``) followed by ``e3nn.nn.Gate`` in every layer, as in
e3nn's own gate-points ``Network``, but with a top module that TorchScript can compile
(e3nn's ``Compose.forward(self, *input)`` cannot be scripted) and a precomputed
``edge_index`` input instead of ``radius_graph``.

``NequIPStyle`` is an older, heavier variant: a ``FullyConnectedTensorProduct`` with
per-edge weights, whose radial MLP outputs ``tp.weight_numel`` (1536 at 16 channels)
weights per edge, which makes it GEMM-bound.

Both: spherical harmonics of edge vectors, radial MLP weights from
``e3nn.nn.FullyConnectedNet``, a scatter over a precomputed ``edge_index``,
``e3nn.nn.Gate`` and ``o3.Linear``.  The top modules are plain code torchstitch
scripts; the e3nn pieces are claimed by e3nn's own compile modes.

Deliberately no ``from __future__ import annotations`` here: TorchScript
cannot read string annotations.
"""

import math

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from e3nn.nn.models.gate_points_2101 import Convolution

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


def _irreps_hidden(lmax: int, channels: int) -> o3.Irreps:
    """``channels`` copies of every degree up to ``lmax``, parity ``(-1)^l``: 16x0e+16x1o, ..."""
    return o3.Irreps("+".join(f"{channels}x{deg}{'e' if deg % 2 == 0 else 'o'}" for deg in range(lmax + 1)))


class GatePointsLayer(torch.nn.Module):
    """One gate-points layer: e3nn's ``Convolution`` then ``Gate``.

    The per-layer ``Compose(Convolution, Gate)`` of e3nn's gate-points ``Network``, with an
    explicit forward signature instead of ``*input`` so that TorchScript can compile it.
    Gates and activations are chosen as that ``Network`` chooses them (silu / sigmoid for
    even scalars, tanh for odd ones; only irreps the convolution can reach).
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_node_attr: o3.Irreps,
        irreps_edge_attr: o3.Irreps,
        n_basis: int,
        radial_layers: int,
        radial_neurons: int,
        num_neighbors: float,
    ):
        super().__init__()
        act = {1: torch.nn.functional.silu, -1: torch.tanh}
        act_gates = {1: torch.sigmoid, -1: torch.tanh}
        scalars = o3.Irreps(
            [(mul, ir) for mul, ir in irreps_hidden if ir.l == 0 and _path(irreps_in, irreps_edge_attr, ir)]
        )
        gated = o3.Irreps(
            [(mul, ir) for mul, ir in irreps_hidden if ir.l > 0 and _path(irreps_in, irreps_edge_attr, ir)]
        )
        gate_ir = "0e" if _path(irreps_in, irreps_edge_attr, o3.Irrep("0e")) else "0o"
        gates = o3.Irreps([(mul, gate_ir) for mul, _ in gated])
        self.gate = e3nn_nn.Gate(
            scalars,
            [act[ir.p] for _, ir in scalars],
            gates,
            [act_gates[ir.p] for _, ir in gates],
            gated,
        )
        self.conv = Convolution(
            irreps_in,
            irreps_node_attr,
            irreps_edge_attr,
            self.gate.irreps_in,
            n_basis,
            radial_layers,
            radial_neurons,
            num_neighbors,
        )
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = self.gate.irreps_out

    def forward(
        self,
        x: torch.Tensor,
        node_attr: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_length_embedded: torch.Tensor,
    ) -> torch.Tensor:
        return self.gate(self.conv(x, node_attr, edge_src, edge_dst, edge_attr, edge_length_embedded))


def _path(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, ir_out: o3.Irrep) -> bool:
    """Whether some ``ir1 x ir2`` contains ``ir_out`` (e3nn's gate-points ``tp_path_exists``)."""
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in1 for _, ir2 in irreps_in2)


@ts.compile_mode("script")
class GatePoints(torch.nn.Module):
    """The reference network of ``shared/BASELINES.md``: e3nn gate-points layers over given edges.

    ``forward(pos, species, edge_index)``: ``species`` is a one-hot ``[atoms, n_species]``
    used both as the node attributes of every ``Convolution`` (as in NequIP) and, through an
    ``o3.Linear`` embedding, as the first node features; edge attributes are the spherical
    harmonics (``lmax``) of the edge vectors ``pos[dst] - pos[src]``; edge lengths are
    embedded by :class:`GaussianBasis` (smooth cosine cutoff included, so messages vanish at
    ``cutoff``: e3nn's radial nets have no biases).  ``n_layers`` :class:`GatePointsLayer`s
    (hidden irreps ``channels`` x every degree up to ``lmax``, plus the Gate's gate scalars),
    an ``o3.Linear`` readout to ``irreps_out`` per atom, summed over atoms: by default one
    invariant scalar and one vector (``0e + 1o``), shape ``[4]``.
    """

    def __init__(
        self,
        n_layers: int = 3,
        lmax: int = 1,
        channels: int = 16,
        n_species: int = 4,
        n_basis: int = 8,
        cutoff: float = 3.0,
        radial_layers: int = 2,
        radial_neurons: int = 16,
        num_neighbors: float = 12.0,
        irreps_out: str = "0e + 1o",
    ):
        super().__init__()
        irreps_hidden = _irreps_hidden(lmax, channels)
        irreps_species = o3.Irreps(f"{n_species}x0e")
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_out = o3.Irreps(irreps_out)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.basis = GaussianBasis(n_basis, cutoff)
        irreps = o3.Irreps(f"{channels}x0e")
        self.embed = o3.Linear(irreps_species, irreps)
        layers = []
        for _ in range(n_layers):
            layer = GatePointsLayer(
                irreps,
                irreps_hidden,
                irreps_species,
                self.irreps_sh,
                n_basis,
                radial_layers,
                radial_neurons,
                num_neighbors,
            )
            irreps = layer.irreps_out
            layers.append(layer)
        self.layers = torch.nn.ModuleList(layers)
        self.readout = o3.Linear(irreps, self.irreps_out)

    def forward(self, pos: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        edge_src, edge_dst = edge_index[0], edge_index[1]
        edge_vec = pos[edge_dst] - pos[edge_src]
        edge_attr = self.sh(edge_vec)
        edge_length_embedded = self.basis(torch.sqrt((edge_vec**2).sum(-1)))
        x = self.embed(species)
        for layer in self.layers:
            x = layer(x, species, edge_src, edge_dst, edge_attr, edge_length_embedded)
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
