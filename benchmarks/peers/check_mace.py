"""torchstitch on MACE (mace-torch 0.3.16, e3nn 0.4.4): a tiny model and its LAMMPS wrapper.

Run inside the ``.peers/mace`` environment (``bash .ci/peers mace`` makes it and runs this):

    python benchmarks/peers/check_mace.py --out rows.jsonl

The model is built in code the way mace's own tests build theirs (``modules.ScaleShiftMACE``
with a small config, float64, elements H and O); the systems are clusters of 6, 9 and 12
atoms made by ``harness.cluster`` and turned into MACE's input dict by mace's own data
pipeline (``AtomicData.from_config`` and its ``DataLoader``).  ``LAMMPS_MACE`` is called
as LAMMPS calls it: the input dict and a ``local_or_ghost`` mask (all atoms local).
"""

from __future__ import annotations

import os
import sys

# e3nn 0.4.4 loads its constants with torch.load, which torch >= 2.6 refuses by default
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import checks  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from e3nn import o3  # noqa: E402
from harness import SIZES, Subject, cluster, main  # noqa: E402
from mace import data, modules, tools  # noqa: E402
from mace.calculators.lammps_mace import LAMMPS_MACE  # noqa: E402
from mace.tools import torch_geometric  # noqa: E402

CUTOFF = 3.0
ELEMENTS = tools.AtomicNumberTable([1, 8])
#: what MACE's forward reads (the LAMMPS plugin passes these too)
INPUT_KEYS = ("positions", "node_attrs", "edge_index", "shifts", "unit_shifts", "cell", "batch", "ptr")

# float64 models and data, as mace's tests use (the data pipeline reads the default dtype)
torch.set_default_dtype(torch.float64)


def tiny_mace() -> torch.nn.Module:
    """Two interactions, 8x0e+8x1o, correlation 2: small enough to compile in seconds."""
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
        r_max=CUTOFF,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=2,
        num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps("8x0e + 8x1o"),
        MLP_irreps=o3.Irreps("8x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=np.array([-1.0, -2.0]),
        avg_num_neighbors=4.0,
        atomic_numbers=ELEMENTS.zs,
        correlation=2,
    )


def _systems() -> dict[int, dict[str, torch.Tensor]]:
    """MACE's input dict of every system size, through mace's own data pipeline."""
    systems = {}
    for n in SIZES:
        positions, elements = cluster(n)
        config = data.Configuration(
            atomic_numbers=np.array([8 if e == "O" else 1 for e in elements]),
            positions=np.array(positions),
            properties={},
            property_weights={},
        )
        atomic = data.AtomicData.from_config(config, z_table=ELEMENTS, cutoff=CUTOFF)
        batch = next(iter(torch_geometric.dataloader.DataLoader([atomic], batch_size=1)))
        systems[n] = {key: batch[key] for key in INPUT_KEYS}
    return systems


def _copy(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # MACE writes into the dict it is given (requires_grad on positions, the head)
    return {key: value.detach().clone() for key, value in inputs.items()}


def mace_model() -> Subject:
    systems = _systems()
    return Subject(
        name="MACE",
        model=tiny_mace(),
        make_args=lambda n: (_copy(systems[n]),),
        outputs=lambda out: {"energy": out["energy"].detach(), "forces": out["forces"].detach()},
        edges=lambda n: systems[n]["edge_index"].shape[1],
        extra={"config": "ScaleShiftMACE, 2 interactions, 8x0e+8x1o, max_ell 2, correlation 2, r_max 3"},
    )


def lammps_mace(compute_virials: bool = False) -> Subject:
    systems = _systems()
    names = {"energy": "total_energy_local", "node_energy": "node_energy", "forces": "forces"}
    if compute_virials:
        names["virials"] = "virials"
    return Subject(
        name="LAMMPS_MACE (virials)" if compute_virials else "LAMMPS_MACE",
        model=LAMMPS_MACE(tiny_mace()),
        # compute_virials is a Python bool: the export is specialised to the value given
        make_args=lambda n: (_copy(systems[n]), torch.ones(n), compute_virials),
        outputs=lambda out: {key: out[name].detach() for key, name in names.items()},
        edges=lambda n: systems[n]["edge_index"].shape[1],
        extra={"config": f"LAMMPS_MACE(the MACE model above), compute_virials={compute_virials}"},
    )


BUILDERS = {
    "MACE": mace_model,
    "LAMMPS_MACE": lammps_mace,
    "LAMMPS_MACE_virials": lambda: lammps_mace(compute_virials=True),
}
CHECKS = {
    "eager": (checks.eager, 300),
    "torchscript": (checks.torchscript_drop_in, 300),
    "export": (checks.export_and_aoti, 600),
}

if __name__ == "__main__":
    sys.exit(main("mace", BUILDERS, CHECKS, packages=("torch", "e3nn", "mace-torch", "torchstitch")))
