"""Benchmarks: planning cost and compile time against e3nn.util.jit (``python benchmarks/run.py``).

Alternatives are interleaved in one process and reported as medians, so the
ratios are comparable even on a noisy shared machine; absolute times are not.
Writes ``benchmarks/results/latest.md`` and ``latest.json``.
"""

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import torch

import torchstitch as ts


def wide_tree(n_modules: int) -> torch.nn.Module:
    """A synthetic tree of ``n_modules`` small modules: blocks of 9 under a Sequential."""
    blocks = []
    per_block = 10  # one Sequential + 9 leaves
    for _ in range(max(1, (n_modules - 1) // per_block)):
        blocks.append(torch.nn.Sequential(*[torch.nn.Identity() for _ in range(per_block - 1)]))
    return torch.nn.Sequential(*blocks)


def seed_model() -> torch.nn.Module:
    from e3nn import o3

    class NormThenBranch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = o3.Norm("8x0e + 4x1o + 2x2e")

        def forward(self, x):
            n = self.norm(x)
            if bool((n > 1.0).any()):
                return n * 2.0
            return n - 1.0

    return NormThenBranch()


def interleaved(fns: dict, repeats: int) -> dict:
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_plan(n_modules: int, repeats: int) -> dict:
    model = wide_tree(n_modules)
    count = sum(1 for _ in model.named_modules())
    ts.plan(model)  # warm up: plugin manager, entry points
    medians = interleaved(
        {
            "named_modules": lambda: list(model.named_modules()),
            "ts.plan": lambda: ts.plan(model),
        },
        repeats,
    )
    return {"modules": count, **medians, "ratio": medians["ts.plan"] / medians["named_modules"]}


def bench_seed_compile(repeats: int) -> dict:
    from e3nn.util import jit as e3nn_jit

    model = seed_model().eval()
    x = torch.randn(16, model.norm.irreps_in.dim)

    def e3nn_compile():
        e3nn_jit.script(seed_model().eval())

    def ts_compile():
        ts.script(seed_model().eval())

    def ts_compile_recorded():
        ts.script(seed_model().eval(), example_inputs=(x,))

    e3nn_compile(), ts_compile()  # warm up TorchScript's caches for both
    medians = interleaved(
        {
            "e3nn.util.jit.script": e3nn_compile,
            "ts.script": ts_compile,
            "ts.script(example_inputs)": ts_compile_recorded,
        },
        repeats,
    )
    base = medians["e3nn.util.jit.script"]
    return {name: {"seconds": s, "vs_e3nn": s / base} for name, s in medians.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    n, repeats = (1_000, 3) if args.smoke else (10_000, 9)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "plan": bench_plan(n, repeats),
    }
    try:
        import e3nn  # noqa: F401

        results["seed_compile"] = bench_seed_compile(3 if args.smoke else 11)
    except ImportError:
        results["seed_compile"] = "skipped: e3nn not installed"

    lines = [f"Machine: {results['machine']}", ""]
    p = results["plan"]
    lines += [
        "| plan() of a tree | modules | named_modules() | ts.plan() | ratio |",
        "|---|---|---|---|---|",
        f"| wide tree | {p['modules']} | {p['named_modules'] * 1e3:.1f} ms | "
        f"{p['ts.plan'] * 1e3:.1f} ms | {p['ratio']:.1f}x |",
        "",
    ]
    if isinstance(results["seed_compile"], dict):
        lines += ["| seed example compile | seconds (median) | vs e3nn |", "|---|---|---|"]
        for name, row in results["seed_compile"].items():
            lines.append(f"| {name} | {row['seconds']:.4f} | {row['vs_e3nn']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
