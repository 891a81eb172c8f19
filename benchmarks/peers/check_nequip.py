"""torchstitch on NequIP 0.19.1 and Allegro 0.8.3 (e3nn 0.6.0): tiny models built in code.

Run inside the ``.peers/nequip`` environment (``bash .ci/peers nequip`` makes it and runs this):

    python benchmarks/peers/check_nequip.py --out rows.jsonl

The models come from the peers' own builders (``nequip.model.NequIPGNNModel``,
``allegro.model.AllegroModel``: float64, elements H and O, 2 layers, a few features, 3 Å
cutoff), after ``set_global_state`` as nequip's test suite does; the systems are clusters of
6, 9 and 12 atoms (``harness.cluster``) through nequip's own data pipeline (``from_ase``,
the type mapper and the neighbour list transform).

TorchScript: ``nequip-compile --mode torchscript`` refuses on torch >= 2.10 (the row says
what it prints).  Its TorchScript path was ``e3nn.util.jit.script`` on the model, so the
drop-in is compared on the model directly, with ``compile`` and with ``script``.

NequIP's own AOTI pipeline: ``nequip.utils.aot.aot_export_model``, the function
``nequip-compile --mode aotinductor`` calls after loading a checkpoint; here it is given the
model built in code and the 6-atom system, with the pair_nequip input fields, the
single-frame settings and ``nequip-compile``'s default bounds (2 or more nodes and edges).
The outputs are energies and forces: the ``ase`` target's stress is NaN for these
non-periodic clusters, which fails nequip's own output check.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import checks
import torch
from ase import Atoms
from harness import SIZES, Row, Subject, close, cluster, describe_error, interleaved_ms, main, max_abs_diff

import torchstitch as ts

CUTOFF = 3.0
TYPE_NAMES = ["H", "O"]
#: what every builder of nequip's model family needs
COMMON = {
    "seed": 0,
    "model_dtype": "float64",
    "type_names": TYPE_NAMES,
    "r_max": CUTOFF,
    "avg_num_neighbors": 4.0,
    "per_type_energy_shifts": {"H": -1.0, "O": -2.0},
    "per_type_energy_scales": {"H": 1.0, "O": 1.0},
}
#: the table's name of each output -> nequip's key
OUTPUTS = {"energy": "total_energy", "forces": "forces", "virial": "virial", "stress": "stress"}
#: what NequIP's own AOTI pipeline is asked for (pair_nequip's outputs, as nequip-compile does)
OWN_OUTPUTS = ("energy", "forces")


def _global_state() -> None:
    # nequip refuses to build models before its global state is set (its tests do this too)
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    torch.set_default_dtype(torch.float64)


@functools.cache
def _systems() -> dict[int, dict[str, torch.Tensor]]:
    """nequip's input dict of every system size, through nequip's own data pipeline."""
    from nequip.data import from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

    to_types = ChemicalSpeciesToAtomTypeMapper(
        model_type_names=TYPE_NAMES, chemical_species_to_atom_type_map={t: t for t in TYPE_NAMES}
    )
    neighbours = NeighborListTransform(r_max=CUTOFF)
    systems = {}
    for n in SIZES:
        positions, elements = cluster(n)
        systems[n] = neighbours(to_types(from_ase(Atoms(symbols=elements, positions=positions))))
    return systems


def _subject(name: str, model: torch.nn.Module, config: str) -> Subject:
    systems = _systems()
    return Subject(
        name=name,
        model=model,
        # nequip's models take one dict and return a new one; a shallow copy keeps them honest
        make_args=lambda n: ({key: value.detach().clone() for key, value in systems[n].items()},),
        # the stress is NaN for these clusters (no cell), in eager too: compared NaN for NaN
        outputs=lambda out: {key: out[OUTPUTS[key]].detach() for key in OUTPUTS},
        edges=lambda n: systems[n]["edge_index"].shape[1],
        extra={"config": config},
    )


def nequip_model() -> Subject:
    _global_state()
    from nequip.model import NequIPGNNModel

    model = NequIPGNNModel(
        num_layers=2, l_max=1, num_features=4, radial_mlp_depth=1, radial_mlp_width=8, num_bessels=4, **COMMON
    )
    return _subject("NequIP", model, "NequIPGNNModel, 2 layers, l_max 1, 4 features, r_max 3")


def allegro_model() -> Subject:
    _global_state()
    from allegro.model import AllegroModel

    model = AllegroModel(
        l_max=1,
        num_layers=2,
        num_scalar_features=8,
        num_tensor_features=4,
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 4},
        scalar_embed_mlp_hidden_layers_width=8,
        allegro_mlp_hidden_layers_width=8,
        readout_mlp_hidden_layers_width=8,
        **COMMON,
    )
    config = "AllegroModel, 2 layers, l_max 1, 8 scalar / 4 tensor features, r_max 3"
    return _subject("Allegro", model, config)


def nequip_compile_refusal() -> Row:
    """What ``nequip-compile --mode torchscript`` says on this torch (before reading any file)."""
    from nequip.scripts.compile import main as nequip_compile

    row: Row = {"section": "torchscript_refusal", "tool": "nequip-compile --mode torchscript"}
    try:
        nequip_compile(["model.ckpt", "model.nequip.pth", "--mode", "torchscript", "--device", "cpu"])
    except Exception as exc:  # what it says is the result
        return {**row, "status": "refuses", **describe_error(exc)}
    return {**row, "status": "accepted"}


def torchscript(subject: Subject) -> list[Row]:
    """nequip-compile's refusal, then the drop-in on the model itself: ``compile`` and ``script``."""
    return [
        nequip_compile_refusal(),
        *checks.torchscript_drop_in(subject, "compile"),
        *checks.torchscript_drop_in(subject, "script"),
    ]


def _pair_nequip_args(n: int) -> tuple[dict[str, torch.Tensor], ...]:
    """The arguments of NequIP's own package on the ``n``-atom system: pair_nequip's fields."""
    from nequip.scripts._compile_utils import PAIR_NEQUIP_INPUTS

    return ({key: _systems()[n][key] for key in PAIR_NEQUIP_INPUTS},)


def _own_package(path: os.PathLike[str]) -> torch.nn.Module:
    """NequIP's own AOTI package, loaded and wrapped as nequip's own tools call it (dict in, dict out)."""
    from nequip.nn.compile import DictInputOutputWrapper
    from nequip.scripts._compile_utils import PAIR_NEQUIP_INPUTS

    package = torch._inductor.aoti_load_package(os.fspath(path))
    return DictInputOutputWrapper(package, PAIR_NEQUIP_INPUTS, [OUTPUTS[key] for key in OWN_OUTPUTS])


def _own_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The outputs NequIP's own package gives, by the table's names (from nequip's keys)."""
    return {key: outputs[OUTPUTS[key]].detach() for key in OWN_OUTPUTS}


class EnergyForces(torch.nn.Module):
    """The model returning only energies and forces: docs/deploying.md's wrapper, what a user
    exporting for pair_nequip writes (NequIP's own pipeline asks for the same outputs)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(data)
        return {OUTPUTS[key]: out[OUTPUTS[key]] for key in OWN_OUTPUTS}


def _like_for_like(subject: Subject) -> Subject:
    """``subject`` as NequIP's own package is asked for it: pair_nequip's inputs, energies and forces."""
    return Subject(
        name=subject.name,
        model=EnergyForces(subject.model),
        make_args=lambda n: (
            {key: value.detach().clone() for key, value in _pair_nequip_args(n)[0].items()},
        ),
        outputs=_own_outputs,
        edges=subject.edges,
        extra=subject.extra,
    )


def export_like_for_like(subject: Subject) -> list[Row]:
    """The export check (``checks.export_and_aoti``) on :func:`_like_for_like`'s model: what
    NequIP's own pipeline compiles, compiled through torchstitch.  The package stays in
    ``.peers/artifacts`` (kind ``torchstitch-ef``) for :func:`aoti_latency`."""
    rows = checks.export_and_aoti(_like_for_like(subject), kind="torchstitch-ef")
    return [{**row, "io": LIKE_FOR_LIKE} for row in rows]


#: what the like-for-like rows' packages take and give
LIKE_FOR_LIKE = "pair_nequip inputs -> energies, forces"


def own_aoti(subject: Subject) -> list[Row]:
    """NequIP's own AOTI pipeline on the same model: build seconds, outputs vs eager.

    The package stays in ``.peers/artifacts`` for :func:`aoti_latency`.
    """
    from nequip.scripts._compile_utils import PAIR_NEQUIP_INPUTS, single_frame_batch_map_settings
    from nequip.utils.aot import aot_export_model

    dim = torch.export.Dim
    batch_map = single_frame_batch_map_settings(
        {"graph": None, "node": dim("num_nodes", min=2), "edge": dim("num_edges", min=2)}
    )
    row: Row = {"pipeline": "nequip.utils.aot.aot_export_model", "stage": "build"}
    try:
        start = time.perf_counter()
        path = aot_export_model(
            model=subject.fresh_copy(),
            device="cpu",
            input_fields=PAIR_NEQUIP_INPUTS,
            output_fields=[OUTPUTS[key] for key in OWN_OUTPUTS],
            data=_pair_nequip_args(SIZES[0])[0],
            batch_map=batch_map,
            output_path=os.fspath(subject.artifact("nequip")),
            seed=1,  # what nequip-compile uses
        )
        row["build_s"] = time.perf_counter() - start
        row["stage"] = "run"
        packaged = _own_package(path)
        results = {n: _own_outputs(packaged(*_pair_nequip_args(n))) for n in SIZES}
        reference = {n: _own_outputs(subject.model(*subject.make_args(n))) for n in SIZES}
        diffs = [max_abs_diff(results[n], reference[n]) for n in SIZES]
        row["aoti_diff"] = None if None in diffs else max(diffs)
    except Exception as exc:  # the pipeline's own failure is the result
        return [{**row, "status": "failed", **describe_error(exc)}]
    equal = all(close(results[n], reference[n]) for n in SIZES)
    return [{**row, "stage": "done", "status": "ok" if equal else "differs"}]


def aoti_latency(subject: Subject) -> list[Row]:
    """The AOTI packages of this run side by side, at the middle size, one thread:
    torchstitch's two (``export`` check: the model's whole input and output dicts;
    ``export_ef`` check: pair_nequip's inputs, energies and forces; each call checked
    against the package's input spec) and NequIP's own (``own_aoti`` check: pair_nequip's
    inputs, energies and forces), with eager for scale; median per call of interleaved
    rounds (:func:`harness.interleaved_ms`)."""
    n = SIZES[1]
    row: Row = {"atoms": n, "stage": "load"}
    try:
        theirs, theirs_args = _own_package(subject.artifact("nequip")), _pair_nequip_args(n)
        eager_args = subject.make_args(n)
        calls = {"eager": lambda: subject.model(*eager_args), "nequip": lambda: theirs(*theirs_args)}
        for name, kind, args in (
            ("torchstitch", "torchstitch", subject.make_args(n)),
            ("torchstitch_ef", "torchstitch-ef", _pair_nequip_args(n)),
        ):
            if subject.artifact(kind).exists():  # its check may not have run
                calls[name] = functools.partial(ts.load(subject.artifact(kind)), *args)
        row["stage"] = "time"
        ms = interleaved_ms(calls)
    except Exception as exc:  # a package missing (its build failed) or failing
        return [{**row, "status": "failed", **describe_error(exc)}]
    row.update({f"{name}_ms": value for name, value in ms.items()})
    if "torchstitch" in ms:
        row["ratio"] = ms["torchstitch"] / ms["nequip"]
    if "torchstitch_ef" in ms:
        row["ratio_ef"] = ms["torchstitch_ef"] / ms["nequip"]
    return [{**row, "stage": "done", "status": "ok"}]


BUILDERS = {"NequIP": nequip_model, "Allegro": allegro_model}
CHECKS = {
    "eager": (checks.eager, 300),
    "torchscript": (torchscript, 300),
    "export": (checks.export_and_aoti, 600),
    "export_ef": (export_like_for_like, 600),
    "own_aoti": (own_aoti, 600),
    "aoti_latency": (aoti_latency, 300),
}

if __name__ == "__main__":
    PACKAGES = ("torch", "e3nn", "nequip", "nequip-allegro", "torchstitch")
    sys.exit(main("nequip", BUILDERS, CHECKS, packages=PACKAGES))
