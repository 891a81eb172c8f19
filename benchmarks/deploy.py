"""Deployment benchmarks (issue 6): AOTInductor and regional torch.compile on the medium network.

``python benchmarks/deploy.py`` runs the full set on the medium reference network of
``run.py`` (``GatePoints``, BASELINES.md's medium: e3nn's gate-points ``Convolution`` +
``Gate`` per layer; same construction, same atoms; a few minutes on a 2-core machine);
``--smoke`` uses a tiny model and skips the compiler builds (see below), for
tests/test_deploy_benchmark_smoke.py.  Results go to ``benchmarks/results/deploy.md`` and
``deploy.json`` (git-ignored); a full run also writes ``benchmarks/DEPLOY_RESULTS.md``.

Method:

build
    Every artifact is built in its own fresh Python process (``--child``) with an empty
    ``TORCHINDUCTOR_CACHE_DIR`` of its own, one thread, under ``torch.no_grad()``.  Before
    the timed build the child does the same kind of build on something else (a tiny
    ``GatePoints`` model for TorchScript/AOTI; an unrelated two-layer MLP for torch.compile,
    then ``torch._dynamo.reset()``), so process-wide one-time costs (imports, Inductor's
    precompiled header, compile workers) are paid outside the timed region; they are
    reported separately as ``one-time``.  Nothing can leak between the alternatives: no
    Dynamo cache (separate processes) and no FX-graph/AOTAutograd/C++ cache (separate
    cache dirs).  Timed:

    - e3nn TorchScript: ``e3nn.util.jit.script(model)`` + ``torch.jit.save``.
    - torchstitch AOTI: ``ts.Engine(target="export", rules=whole_model_rules(), dims)``
      ``.compile(model, example_inputs=...)`` + ``ts.save(result, path, format="aoti")``.
    - direct AOTI: ``torch.export.export`` (the same dynamic dims) +
      ``torch._inductor.aoti_compile_and_package``.
    - torch.compile (whole): ``torch.compile(model)`` + the first call (it is lazy).
    - torchstitch regional inductor: ``ts.compile(model, example_inputs=..., rules=REGIONAL)``
      (root eager, each ``layers.*`` GatePointsLayer ``torch.compile``-d, the e3nn leaves
      outside the layers keep their ``script`` claims) + the first call.
latency
    In this process: eager; the TorchScript file (``torch.jit.load``); both AOTI packages
    (``ts.load`` and ``torch._inductor.aoti_load_package``); whole and regional
    torch.compile (compiled again here: latency does not depend on where it was built).
    One thread, ``torch.no_grad()``, warm-up calls, outputs checked against eager; then the
    variants are interleaved round by round, each round timing a batch of calls, and the
    median per call is reported.  A ``GEMM floor`` row times only the radial MLPs'
    matrix products with the model's shapes (``torch.mm``), interleaved with the rest: a
    lower bound every variant pays (see the diagnostics; on the gate-points network it is
    small, unlike on the previous NequIPStyle network, whose 1536 per-edge weights made it
    GEMM-bound).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402
from run import NETWORKS, machine, median  # noqa: E402

import torchstitch as ts  # noqa: E402

SETTINGS = {
    "full": dict(latency_rounds=11, latency_batch_s=0.05, latency_budget_s=25.0, warmup_builds=True),
    "smoke": dict(latency_rounds=3, latency_batch_s=0.003, latency_budget_s=1.0, warmup_builds=False),
}
#: builds run in smoke mode.  AOTI and torch.compile builds are skipped there: measured on this
#: 2-core machine with the smoke model, each in a fresh process without warm-up, ts_aoti 14.8 s,
#: direct_aoti 15.2 s, torch.compile 11.7 s, regional inductor 10.4 s (64 s of process wall
#: time together), far over the ~20 s a smoke run may spend on them
SMOKE_BUILDS = ("e3nn_torchscript",)
SMOKE_SKIP_REASON = (
    "smoke mode: the AOTI and torch.compile builds (measured ~15 s each for AOTI, ~10-12 s each for "
    "torch.compile, tiny model, fresh process) are skipped; run the full benchmark for them"
)

DIMS = {"atoms": {"pos": 0, "species": 0}, "edges": {"edge_index": 1}}
BUILDS = ("e3nn_torchscript", "ts_aoti", "direct_aoti", "torch_compile_whole", "ts_inductor_regional")
LABELS = {
    "eager": "eager",
    "e3nn_torchscript": "e3nn TorchScript (jit.save/load)",
    "ts_aoti": "torchstitch AOTI (ts.save/ts.load)",
    "direct_aoti": "whole-model AOTI (torch.export + aoti_compile_and_package)",
    "torch_compile_whole": "torch.compile(model) (whole)",
    "ts_inductor_regional": "torchstitch regional inductor (layers.*)",
    "gemm_floor": "GEMM floor: radial-MLP matmuls only",
}
TARGETS_TEXT = {
    "aoti": "torchstitch AOTI latency <= 0.5x e3nn TorchScript",
    "regional_build": "regional inductor build <= 0.5x whole-model torch.compile build",
    "regional_latency": "regional inductor latency within 10% of whole-model torch.compile",
}


def regional_rules() -> list:
    """Root eager, each GatePointsLayer one torch.compile region (inheriting its children)."""
    return [
        ts.Rule("unsupported", path=""),
        ts.Rule("inductor", path="layers.*"),
        ts.Rule(None, path="layers.*.**"),
    ]


# --------------------------------------------------------------------------------------
# the model


def spec(mode: str) -> dict:
    return NETWORKS[mode]["medium"]


def build_model(mode: str, tiny: bool = False) -> torch.nn.Module:
    from reference_models import GatePoints

    torch.manual_seed(0)
    kw = dict(n_layers=1, lmax=1, channels=2) if tiny else spec(mode)["model"]
    return GatePoints(**kw).eval()


def inputs(mode: str, tiny: bool = False) -> tuple:
    from reference_models import atoms

    if tiny:
        return atoms(8, density=0.2, seed=1)
    s = spec(mode)
    return atoms(s["atoms"], density=s["density"], seed=0)


def describe(mode: str) -> str:
    kw, x = spec(mode)["model"], inputs(mode)
    n_modules = sum(1 for _ in build_model(mode).named_modules())
    return (
        f"GatePoints medium ({mode}; e3nn gate-points Convolution + Gate): {kw['n_layers']} layers, "
        f"lmax {kw['lmax']}, {kw['channels']} ch, "
        f"{x[0].shape[0]} atoms, {x[2].shape[1]} edges, {n_modules} modules"
    )


# --------------------------------------------------------------------------------------
# builders (each returns what the latency section needs to rebuild or load it)


def _dynamic_shapes():
    from torch.export import Dim

    atoms_dim, edges_dim = Dim("atoms"), Dim("edges")
    return {"pos": {0: atoms_dim}, "species": {0: atoms_dim}, "edge_index": {1: edges_dim}}


def build_e3nn_torchscript(model, x, path):
    from e3nn.util import jit as e3nn_jit

    torch.jit.save(e3nn_jit.script(model, in_place=True), path)


def build_ts_aoti(model, x, path):
    from torchstitch.plugins.export import whole_model_rules

    engine = ts.Engine(
        target="export", rules=whole_model_rules(), strategy_options={"export": {"dims": DIMS}}
    )
    ts.save(engine.compile(model, example_inputs=x), path, format="aoti")


def build_direct_aoti(model, x, path):
    program = torch.export.export(model, x, dynamic_shapes=_dynamic_shapes())
    torch._inductor.aoti_compile_and_package(program, package_path=path)


def build_torch_compile_whole(model, x, path=None):
    compiled = torch.compile(model)
    compiled(*x)
    return compiled


def build_ts_inductor_regional(model, x, path=None):
    result = ts.compile(model, example_inputs=x, rules=regional_rules())
    result(*x)
    return result


BUILDERS = {
    "e3nn_torchscript": build_e3nn_torchscript,
    "ts_aoti": build_ts_aoti,
    "direct_aoti": build_direct_aoti,
    "torch_compile_whole": build_torch_compile_whole,
    "ts_inductor_regional": build_ts_inductor_regional,
}
ARTIFACT_SUFFIX = {"e3nn_torchscript": ".pt", "ts_aoti": ".pt2", "direct_aoti": ".pt2"}


def _warm_up(kind: str, mode: str, workdir: str) -> None:
    """The same kind of build on something else: pays process-wide one-time costs."""
    if kind in ARTIFACT_SUFFIX:
        BUILDERS[kind](
            build_model(mode, tiny=True),
            inputs(mode, tiny=True),
            os.path.join(workdir, "warm" + ARTIFACT_SUFFIX[kind]),
        )
        return
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    torch.compile(mlp)(torch.randn(4, 5))
    torch._dynamo.reset()


def child(request: dict) -> dict:
    """One build in this (fresh) process; prints a JSON line."""
    from torch._dynamo.utils import counters

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    kind, mode, workdir = request["kind"], request["mode"], request["workdir"]
    with torch.no_grad():
        start = time.perf_counter()
        if request["warmup"]:
            _warm_up(kind, mode, workdir)
        one_time = time.perf_counter() - start
        model, x = build_model(mode), inputs(mode)
        counters.clear()
        path = os.path.join(workdir, kind + ARTIFACT_SUFFIX[kind]) if kind in ARTIFACT_SUFFIX else None
        start = time.perf_counter()
        BUILDERS[kind](model, x, path)
        seconds = time.perf_counter() - start
    out = {"kind": kind, "build_s": seconds, "one_time_s": one_time, "warmed_up": request["warmup"]}
    if path:
        out["path"] = path
        out["artifact_mib"] = os.path.getsize(path) / 2**20
    if kind in ("torch_compile_whole", "ts_inductor_regional"):
        out["dynamo"] = {
            "unique_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()),
            "recompiles": sum(counters["recompiles"].values()),
        }
    return out


def run_child(kind: str, mode: str, warmup: bool, workdir: str) -> dict:
    cache = tempfile.mkdtemp(prefix=f"inductor-{kind}-", dir=workdir)
    request = {"kind": kind, "mode": mode, "workdir": workdir, "warmup": warmup}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": cache}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(request)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"build {kind} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["process_wall_s"] = wall
    print(f"  build {kind}: {result['build_s']:.1f} s", file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------------------
# diagnostics


def aoti_kernels(path: str) -> dict:
    """Counts in an AOTI package's generated wrapper: fused C++ kernels and extern GEMM calls."""
    with zipfile.ZipFile(path) as archive:
        source = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith("wrapper.cpp"))
    import re

    fused = re.findall(r"\b(cpp_fused_\w+)\(", source)
    return {
        "fused_kernel_calls": len(fused),
        "fused_kernels": len(set(fused)),
        "mm_calls": source.count("aoti_torch_cpu_mm_out("),
        "bmm_calls": source.count("aoti_torch_cpu_bmm_out("),
        "addmm_calls": source.count("aoti_torch_cpu_addmm_out("),
    }


def gemm_floor(model: torch.nn.Module, n_edges: int):
    """A callable doing only the radial MLPs' matrix products (``torch.mm``, the model's shapes)."""
    from e3nn.nn import FullyConnectedNet

    mats = []
    for radial in (m for m in model.modules() if isinstance(m, FullyConnectedNet)):
        for sub in radial.modules():
            weight = getattr(sub, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                mats.append((torch.randn(n_edges, weight.shape[0]), weight.detach().clone(), None))
    mats = [(a, b, torch.empty(a.shape[0], b.shape[1])) for a, b, _ in mats]

    def run(*_):
        for a, b, out in mats:
            torch.mm(a, b, out=out)

    shapes = [f"[{a.shape[0]},{a.shape[1]}]x[{b.shape[0]},{b.shape[1]}]" for a, b, _ in mats]
    return run, shapes


# --------------------------------------------------------------------------------------
# latency


def _time_batch(fn, args, n):
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - start) / n


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def bench_latency(mode: str, settings: dict, builds: dict) -> tuple[dict, dict]:
    model, x = build_model(mode), inputs(mode)
    variants = {"eager": model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "e3nn_torchscript" in builds:
            variants["e3nn_torchscript"] = torch.jit.load(builds["e3nn_torchscript"]["path"])
        if "ts_aoti" in builds:
            variants["ts_aoti"] = ts.load(builds["ts_aoti"]["path"])
        if "direct_aoti" in builds:
            variants["direct_aoti"] = torch._inductor.aoti_load_package(builds["direct_aoti"]["path"])
        with torch.no_grad():
            if "torch_compile_whole" in builds:
                variants["torch_compile_whole"] = build_torch_compile_whole(build_model(mode), x)
            if "ts_inductor_regional" in builds:
                variants["ts_inductor_regional"] = build_ts_inductor_regional(build_model(mode), x)
    floor, floor_shapes = gemm_floor(model, x[2].shape[1])
    variants["gemm_floor"] = floor
    with torch.no_grad():
        reference = model(*x)
        per_call = {}
        for name, fn in variants.items():
            for _ in range(5):  # TorchScript's profiling executor optimizes after 2-3 calls
                out = fn(*x)
            if name != "gemm_floor":
                torch.testing.assert_close(_first(out), reference, atol=1e-4, rtol=1e-4)
            per_call[name] = _time_batch(fn, x, 3)
        batch = {n: max(1, int(settings["latency_batch_s"] / max(t, 1e-7))) for n, t in per_call.items()}
        round_s = sum(batch[n] * per_call[n] for n in variants)
        rounds = max(3, min(settings["latency_rounds"], int(settings["latency_budget_s"] / round_s)))
        runs = {name: [] for name in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                runs[name].append(_time_batch(fn, x, batch[name]))
    eager_s = median(runs["eager"])
    rows = {
        name: {"ms": median(r) * 1e3, "vs_eager": median(r) / eager_s, "runs_ms": [v * 1e3 for v in r]}
        for name, r in runs.items()
    }
    return rows, {"rounds": rounds, "calls_per_batch": batch, "gemm_floor_shapes": floor_shapes}


# --------------------------------------------------------------------------------------
# targets and report


def check_targets(results: dict) -> list[dict]:
    lat, builds, targets = results["latency"], results["builds"], []

    def add(key, what, value, limit, ok, note=""):
        status = "skipped" if ok is None else "PASS" if ok else "MISS"
        targets.append(
            {"target": key, "what": what, "value": value, "limit": limit, "status": status, "note": note}
        )

    if "ts_aoti" in lat:
        r = lat["ts_aoti"]["ms"] / lat["e3nn_torchscript"]["ms"]
        add("aoti", "torchstitch AOTI / e3nn TorchScript latency", round(r, 3), 0.5, r <= 0.5)
    else:
        add("aoti", "torchstitch AOTI / e3nn TorchScript latency", None, 0.5, None, results["skipped"])
    if "ts_inductor_regional" in lat:
        r = builds["ts_inductor_regional"]["build_s"] / builds["torch_compile_whole"]["build_s"]
        add(
            "regional_build", "regional / whole build time (after one-time costs)", round(r, 3), 0.5, r <= 0.5
        )
        r = lat["ts_inductor_regional"]["ms"] / lat["torch_compile_whole"]["ms"]
        add("regional_latency", "regional / whole latency", round(r, 3), 1.1, r <= 1.1)
    else:
        for key in ("regional_build", "regional_latency"):
            add(key, TARGETS_TEXT[key], None, None, None, results["skipped"])
    return targets


def render(results: dict) -> str:
    lines = [f"Machine: {results['machine']}", "", f"Mode: {results['mode']}.  {results['noise']}", ""]
    lines += [f"Model: {results['model']}", ""]
    if results.get("skipped"):
        lines += [f"Skipped: {results['skipped']}", ""]
    lines += ["### Forward latency and build time", ""]
    lines += [
        "One thread, `torch.no_grad()`, median per call of interleaved rounds; build in a fresh "
        "process with an empty Inductor cache, after that process's one-time costs.",
        "",
        "| variant | ms | vs eager | vs e3nn TorchScript | build s | one-time s | artifact |",
        "|---|---|---|---|---|---|---|",
    ]
    lat, builds = results["latency"], results["builds"]
    base = lat.get("e3nn_torchscript", {}).get("ms")
    for name, row in lat.items():
        b = builds.get(name, {})
        vs = f"{row['ms'] / base:.2f}" if base else "-"
        build = f"{b['build_s']:.2f}" if b else "-"
        one_time = f"{b['one_time_s']:.1f}" if b.get("warmed_up") else "-"
        size = f"{b['artifact_mib']:.2f} MiB" if "artifact_mib" in b else "-"
        cells = [LABELS[name], f"{row['ms']:.3f}", f"{row['vs_eager']:.2f}", vs, build, one_time, size]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    diag = results["diagnostics"]
    lines += ["### Diagnostics", ""]
    for key, value in diag.items():
        lines.append(f"- `{key}`: {json.dumps(value)}")
    lines.append("")
    lines += ["### Targets (issue 6)", ""]
    if results["mode"] == "smoke":
        lines += ["Smoke mode: tiny model, the verdicts below are not meaningful.", ""]
    lines += ["| target | measured | value | limit | status |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        lines.append(
            f"| {TARGETS_TEXT[t['target']]} | {t['what']} | {t['value']} | {t['limit']} | {t['status']} |"
        )
    if results.get("analysis"):
        lines += ["", "### Analysis", "", results["analysis"]]
    return "\n".join(lines) + "\n"


ANALYSIS = """\
- The network is BASELINES.md's medium reference network (`GatePoints`): per layer e3nn's
  gate-points `Convolution` (species-attributed `FullyConnectedTensorProduct`s `sc`, `lin1`,
  `lin2`; a radial `FullyConnectedNet` `[8, 16, 16, w]` giving `w` = 32 or 64 per-edge
  weights to a `uvu` `TensorProduct`; a scatter over the edges) and an `e3nn.nn.Gate`.  It is
  not GEMM-bound: the radial MLPs' matrix products (`GEMM floor` row,
  `gemm_floor_vs_e3nn_torchscript`) are a few percent of TorchScript's latency.  The time
  goes into many small ops, i.e. per-op dispatch, which is what a graph compiler removes: the
  AOTI packages fuse the network into a few dozen C++ kernels next to the extern `mm`/`bmm`
  calls (`aoti_kernels`), and land at about 0.15x eager, in line with BASELINES' 0.14x for an
  AOTInductor package of the medium network.  torchstitch's AOTI package and the direct
  `torch.export` + `aoti_compile_and_package` build are the same graph (identical kernel
  counts) and equally fast within noise: the AOTI target passes.
- The previous benchmark network, `NequIPStyle` (a `FullyConnectedTensorProduct` with
  per-edge weights: a `[edges, 16] x [16, 1536]` radial GEMM per layer), was GEMM-bound;
  there AOTI reached only about 0.54x TorchScript, bounded below by the GEMM floor (about
  0.35x).  It stays in `reference_models.py` and in `run.py` (`nequip_medium`, no targets)
  but is no longer the network the deployment targets are judged on.
- Regional build (miss): regional inductor compiles two graphs (`unique_graphs` 2): layer 0
  reads the `16x0e` embedding, so its Convolution has other tensor-product paths and its Gate
  other irreps than layers 1 and 2, which share one graph (the inductor plugin gives private
  copies of e3nn's code-generated `torch.fx.GraphModule`s with identical code one class, so
  Dynamo's type-id guards do not force a recompile per layer).  Whole-model torch.compile
  builds one graph holding all three layers; Inductor's cost follows the distinct code, and
  two of the three layers are distinct code here, so on top of the TorchScript compile of
  `sh`/`embed`/`readout` (claimed `script` by e3nn) and the recording and verification runs
  on `example_inputs`, the regional build stays at roughly 0.8x of whole-model instead of
  <= 0.5x.  The 0.5x target presumes that repeated identical layers dominate the build; with
  3 layers of which 2 distinct it cannot hold whatever torchstitch's own overhead.  Proposal:
  judge it on the large network (6 layers, still 2 distinct graphs expected; not measured
  here, the deployment benchmark builds only medium to stay within its time budget) or
  restate it per distinct layer.
- Regional latency (miss): the absolute gap to whole-model torch.compile (regional minus
  whole, in ms) is about the same as on `NequIPStyle` in the previous run (0.26 ms, at 1.75 vs
  1.49 ms), although the networks' compute differs: it is a fixed per-call cost, not the
  layers' work.  It is the root's glue running eagerly (edge vectors, lengths, the loop), the
  TorchScript calls of `sh`/`embed`/`readout`, and entering three Dynamo-guarded regions (guard
  checks on e3nn modules with many attributes) instead of one.  On a network that whole-model
  Inductor runs in about half a millisecond that fixed cost is about half the latency, so the
  1.1x limit would need the per-call overhead cut to a few tens of microseconds: e.g. a rule
  set that puts the root glue and the layer loop into one region (which is then whole-model
  compile), or cheaper region entry (fewer guards).  This split is inferred from the equal
  absolute gaps, not profiled op by op."""


def run(mode: str, out_dir: str, write_results_md: bool | None = None) -> dict:
    settings = SETTINGS[mode]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="torchstitch-deploy-")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(workdir, "inductor-main"))
    results: dict = {
        "mode": mode,
        "machine": machine(),
        "noise": (
            "Shared machine: absolute times drift by ~25% between runs; compare ratios "
            "measured side by side (latency variants interleaved in one process)."
        ),
        "model": describe(mode),
        "settings": settings,
        "skipped": None,
    }
    kinds = BUILDS if mode == "full" else SMOKE_BUILDS
    if mode == "smoke":
        results["skipped"] = SMOKE_SKIP_REASON
        results["skipped_builds"] = [k for k in BUILDS if k not in kinds]
    try:
        print("builds...", file=sys.stderr, flush=True)
        builds = {kind: run_child(kind, mode, settings["warmup_builds"], workdir) for kind in kinds}
        results["builds"] = builds
        print("latency...", file=sys.stderr, flush=True)
        results["latency"], extra = bench_latency(mode, settings, builds)
        diag = {"latency_rounds": extra["rounds"], "gemm_floor_shapes": extra["gemm_floor_shapes"]}
        lat = results["latency"]
        if "e3nn_torchscript" in lat:
            diag["gemm_floor_vs_e3nn_torchscript"] = round(
                lat["gemm_floor"]["ms"] / lat["e3nn_torchscript"]["ms"], 3
            )
        for name in ("ts_aoti", "direct_aoti"):
            if name in builds:
                diag[f"{name}_kernels"] = aoti_kernels(builds[name]["path"])
                diag[f"{name}_gemm_floor_share"] = round(lat["gemm_floor"]["ms"] / lat[name]["ms"], 3)
        for name in ("torch_compile_whole", "ts_inductor_regional"):
            if name in builds:
                diag[f"{name}_dynamo"] = builds[name]["dynamo"]
        results["diagnostics"] = diag
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = check_targets(results)
    if mode == "full":
        results["analysis"] = ANALYSIS
    results["seconds"] = time.perf_counter() - started

    table = render(results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "deploy.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "deploy.json"), "w") as f:
        json.dump(results, f, indent=2)
    if write_results_md if write_results_md is not None else mode == "full":
        with open(os.path.join(HERE, "DEPLOY_RESULTS.md"), "w") as f:
            f.write(
                "# Deployment benchmark results\n\n"
                "Written by `python benchmarks/deploy.py` (full mode); see that file's docstring "
                "for the method.\n\n" + table
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, no compiler builds (< 60 s)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    results = run("smoke" if args.smoke else "full", args.out)
    print(render(results))
    counts = {s: sum(t["status"] == s for t in results["targets"]) for s in ("PASS", "MISS", "skipped")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
