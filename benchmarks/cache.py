"""Benchmark of the compile cache (``python benchmarks/cache.py``; ``--smoke``: tiny sizes).

For the medium and large reference networks (``GatePoints``, as in benchmarks/run.py),
each measurement runs in a fresh subprocess that builds the model with new random weights
(a seed of its own) and times one ``ts.compile(model, example_inputs=...)``:

- *uncached*: no ``cache_dir``;
- *cold* (a miss): an empty cache folder; the compile also writes the entry;
- *warm* (a hit): the folder the cold run filled, other weights, another process.

Each run uses one thread (as benchmarks/run.py), may write Python's bytecode caches (as
an installed package has them; a first, untimed run writes them), and reports the compile's CPU and wall
seconds: on this shared machine the CPU seconds are the stable measure.  Runs of the
variants are interleaved, ``--repeats`` rounds, median reported (of the seconds, and of the
two ratios within each round).  The table goes to benchmarks/CACHE_RESULTS.md (full mode).
Targets (issue 15): warm <= 0.1x cold; a miss < 3% over uncached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")

if HERE not in sys.path:
    sys.path.insert(0, HERE)
from run import NETWORKS  # noqa: E402  (the reference networks, full and smoke sizes)

#: what one subprocess runs: build with new weights, compile once (one thread, as benchmarks/run.py:
#: on a shared 2-core machine two threads make every eager forward stall on the other's core),
#: report the compile's CPU and wall seconds, the root's cache word, the CPU seconds in
#: ``torch.jit.load`` and those of one eager forward after it (what a verified hit cannot avoid)
CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, {tests!r})
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
import torchstitch as ts
from reference_models import GatePoints, atoms
spec = json.loads({spec!r})
torch.manual_seed(spec["seed"])
model = GatePoints(**spec["model"]).eval()
inputs = atoms(spec["atoms"], density=spec["density"], seed=0)
loads = []
jit_load = torch.jit.load
def timed_load(*args, **kwargs):
    start = time.process_time()
    try:
        return jit_load(*args, **kwargs)
    finally:
        loads.append(time.process_time() - start)
torch.jit.load = timed_load
wall, cpu = time.perf_counter(), time.process_time()
result = ts.Engine(cache_dir=spec["cache_dir"]).compile(model, example_inputs=inputs)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
with torch.no_grad():
    start = time.process_time()
    expected = model(*inputs)
    eager = time.process_time() - start
torch.testing.assert_close(result.module(*inputs), expected)
print(json.dumps({{"cpu": cpu, "wall": wall, "cache": result.plan.root.outcome.cache,
                  "load": sum(loads), "eager": eager}}))
"""

VARIANTS = ("uncached", "cold", "warm")


#: the children's environment: Python may cache bytecode (``__pycache__``), as an installed
#: torchstitch has it; with PYTHONDONTWRITEBYTECODE (set on some machines) every child would
#: compile torchstitch's sources again, some 40 ms that no user pays
CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run_child(spec: dict) -> dict:
    code = CHILD.format(tests=TESTS, spec=json.dumps(spec))
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=CHILD_ENV
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(network: dict, repeats: int) -> dict[str, float]:
    """Medians: ``{variant} cpu`` and ``{variant} wall`` of each variant, the ratios
    ``warm/cold`` and ``cold/uncached`` of each round; ``load`` and ``eager``, the warm
    runs' CPU seconds in ``torch.jit.load`` and of one eager forward."""
    samples: dict[str, list[float]] = {}
    run_child({**network, "seed": 0, "cache_dir": None})  # writes the bytecode caches; not timed
    seed = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            for variant in VARIANTS:
                seed += 1
                spec = {**network, "seed": seed, "cache_dir": None if variant == "uncached" else folder}
                got = run_child(spec)
                expected = {"uncached": None, "cold": "miss", "warm": "hit"}[variant]
                word = got["cache"]
                assert (word is None) if expected is None else word.startswith(expected), (variant, word)
                samples.setdefault(f"{variant} cpu", []).append(got["cpu"])
                samples.setdefault(f"{variant} wall", []).append(got["wall"])
                if variant == "warm":
                    samples.setdefault("load", []).append(got["load"])
                    samples.setdefault("eager", []).append(got["eager"])
            for clock in ("cpu", "wall"):  # ratios within a round: the rounds drift apart
                uncached, cold, warm = (samples[f"{variant} {clock}"][-1] for variant in VARIANTS)
                samples.setdefault(f"warm/cold {clock}", []).append(warm / cold)
                samples.setdefault(f"cold/uncached {clock}", []).append(cold / uncached)
    return {name: statistics.median(values) for name, values in samples.items()}


def _row(name: str, result: dict[str, float], clock: str) -> str:
    uncached, cold, warm = (result[f"{variant} {clock}"] for variant in VARIANTS)
    row = (
        f"| {name} | {uncached:.3f} | {cold:.3f} | {warm:.3f} | {result[f'warm/cold {clock}']:.2f}x "
        f"| {100 * (result[f'cold/uncached {clock}'] - 1):+.1f}% |"
    )
    return row + (f" {result['load']:.3f} | {result['eager']:.3f} |" if clock == "cpu" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "full"
    repeats = args.repeats or (1 if args.smoke else 5)
    results = {}
    for name, network in NETWORKS[mode].items():
        results[name] = bench(network, repeats)
        print(_row(name, results[name], "cpu"), flush=True)
    import torch

    header = "| network | uncached s | cold (miss) s | warm (hit) s | warm / cold | miss vs uncached |"
    table = "\n".join(
        [
            "# Compile cache benchmark",
            "",
            "Written by `python benchmarks/cache.py` (full mode); method in that file's docstring.",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}.  Shared machine: wall times drift with the other work on it, "
            "CPU times much less (one thread: CPU time is what the wall time is on an idle machine).",
            f"Mode: {mode}, {repeats} rounds, median; TorchScript (`ts.compile`, root `script`, traced "
            "children) with `example_inputs`; each run a fresh process with new weights, one thread.",
            "",
            "CPU seconds of the compile call; the last two columns are the parts of a hit that it cannot "
            "avoid (docs/cache.md): the CPU seconds in `torch.jit.load`, and one eager forward "
            "(a verified hit runs the eager model once and the loaded one once):",
            "",
            header + " hit's torch.jit.load s | eager forward s |",
            "|---|---|---|---|---|---|---|---|",
            *(_row(name, result, "cpu") for name, result in results.items()),
            "",
            "Wall seconds of the same runs:",
            "",
            header,
            "|---|---|---|---|---|---|",
            *(_row(name, result, "wall") for name, result in results.items()),
            "",
            "Targets (issue 15): warm <= 0.1x cold; a miss < 3% over uncached.",
            "",
        ]
    )
    if mode == "full":
        with open(os.path.join(HERE, "CACHE_RESULTS.md"), "w") as handle:
            handle.write(table)
    print(table)


if __name__ == "__main__":
    main()
