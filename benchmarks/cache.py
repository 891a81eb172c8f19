"""Benchmark of the compile cache (``python benchmarks/cache.py``; ``--smoke``: tiny sizes).

For the medium and large reference networks (``GatePoints``, as in benchmarks/run.py),
each measurement runs in a fresh subprocess that builds the model with new random weights
(a seed of its own) and times one ``ts.compile(model, example_inputs=...)``:

- *uncached*: no ``cache_dir``;
- *cold* (a miss): an empty cache folder; the compile also writes the entry;
- *warm* (a hit): the folder the cold run filled, other weights, another process.

Runs of the variants are interleaved, ``--repeats`` rounds, median reported.  The table
goes to benchmarks/CACHE_RESULTS.md (full mode).  Targets (issue 15): warm <= 0.1x cold;
a miss < 3% over uncached.
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
#: report seconds, the root's cache word, the seconds in ``torch.jit.load`` and those of one
#: eager forward after it (what a verified hit cannot avoid)
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
    start = time.perf_counter()
    try:
        return jit_load(*args, **kwargs)
    finally:
        loads.append(time.perf_counter() - start)
torch.jit.load = timed_load
start = time.perf_counter()
result = ts.Engine(cache_dir=spec["cache_dir"]).compile(model, example_inputs=inputs)
seconds = time.perf_counter() - start
with torch.no_grad():
    start = time.perf_counter()
    expected = model(*inputs)
    eager = time.perf_counter() - start
torch.testing.assert_close(result.module(*inputs), expected)
print(json.dumps({{"seconds": seconds, "cache": result.plan.root.outcome.cache, "load": sum(loads), "eager": eager}}))
"""


def run_child(spec: dict) -> dict:
    code = CHILD.format(tests=TESTS, spec=json.dumps(spec))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(name: str, network: dict, repeats: int) -> dict:
    times: dict[str, list[float]] = {"uncached": [], "cold": [], "warm": [], "load": [], "eager": []}
    seed = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            for variant in ("uncached", "cold", "warm"):
                seed += 1
                spec = {**network, "seed": seed, "cache_dir": None if variant == "uncached" else folder}
                got = run_child(spec)
                expected = {"uncached": None, "cold": "miss", "warm": "hit"}[variant]
                word = got["cache"]
                assert (word is None) if expected is None else word.startswith(expected), (variant, word)
                times[variant].append(got["seconds"])
                if variant == "warm":
                    times["load"].append(got["load"])
                    times["eager"].append(got["eager"])
    return {variant: statistics.median(values) for variant, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    mode = "smoke" if args.smoke else "full"
    repeats = args.repeats or (1 if args.smoke else 5)
    rows = []
    for name, network in NETWORKS[mode].items():
        result = bench(name, network, repeats)
        rows.append(
            f"| {name} | {result['uncached']:.3f} | {result['cold']:.3f} | {result['warm']:.3f} "
            f"| {result['warm'] / result['cold']:.2f}x "
            f"| {100 * (result['cold'] / result['uncached'] - 1):+.1f}% "
            f"| {result['load']:.3f} | {result['eager']:.3f} |"
        )
        print(rows[-1], flush=True)
    import torch

    table = "\n".join(
        [
            "# Compile cache benchmark",
            "",
            "Written by `python benchmarks/cache.py` (full mode); method in that file's docstring.",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}.  Shared machine: absolute times drift; compare within a row.",
            f"Mode: {mode}, {repeats} rounds, median; TorchScript (`ts.compile`, root `script`, traced "
            "children) with `example_inputs`; each run a fresh process with new weights, one thread.",
            "",
            "| network | uncached s | cold (miss) s | warm (hit) s | warm / cold | miss vs uncached "
            "| hit's torch.jit.load s | eager forward s |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
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
