"""Benchmarks of torchstitch against e3nn.util.jit and eager PyTorch (``python benchmarks/run.py``).

``python benchmarks/run.py`` runs the full set (a few minutes on a 2-core
machine); ``--smoke`` runs tiny sizes in seconds (CI: tests/test_benchmarks_smoke.py);
``--aoti-only`` runs only the AOTI rows (issue 14) and rewrites just that section of
``benchmarks/RESULTS.md``.
Results go to ``benchmarks/results/latest.md`` and ``latest.json`` (git-ignored);
a full run also writes the table to ``benchmarks/RESULTS.md`` (committed).

Models (``tests/reference_models.py``, shared with the tests): the seed example (an ``o3.Norm`` under a
data-dependent ``if``), the reference network of ``shared/BASELINES.md``
(``GatePoints``: e3nn's gate-points ``Convolution`` + ``Gate`` per layer) at its
``medium`` and ``large`` sizes, and a synthetic tree of 10,000 small modules for
planning.  An extra model, ``nequip_medium`` (``NequIPStyle``, the previous
benchmark network: a ``FullyConnectedTensorProduct`` with 1536 per-edge weights,
GEMM-bound), is timed in the compile and latency sections only; no target is
judged on it.

Method, section by section:

compile
    Wall time of one compile, torchstitch (``ts.compile`` without and with
    ``example_inputs``; ``ts.script`` for the seed example, whose root is not
    decorated) against ``e3nn.util.jit.script`` (``compile`` with the root
    scripted, ``in_place=True``: e3nn's fastest).  Every run gets a fresh model
    instance built *outside* the timed region; the alternatives are interleaved
    round by round in one process after one warm-up round, and the median is
    reported.  Ratios measured side by side are what to compare: absolute times
    on a shared machine drift by ~25%.
overhead
    During those same timed runs ``torch.jit.script``, ``torch.jit.trace``,
    ``torch.jit.trace_module`` and ``torch.jit.freeze`` are wrapped with timers
    (outermost call only).  torchstitch's overhead is the rest of the compile's
    wall time: planning, shells, input recording, verification, plugin hooks.
    The same split is shown for e3nn.
memory
    Extra peak resident memory of one compile that keeps the caller's model
    intact: torchstitch's default (``in_place=False``: shells sharing the
    weights) against e3nn's ``in_place=False`` (a ``copy.deepcopy`` of the
    model).  CPU tensor storage is ``malloc``'ed, so ``tracemalloc`` does not see
    it and torch has no CPU allocator statistics; the kernel's high-water mark
    does.  Each measurement runs in its own process: a small server process
    imports torch/e3nn once and ``fork()``s one child per measurement (it never
    runs a multi-threaded op, so forking is safe).  The child builds the model,
    compiles a tiny model of the same kind with the same tool (faulting in code
    pages and TorchScript's one-time caches), resets ``VmHWM`` by writing ``5``
    to ``/proc/self/clear_refs``, reads ``VmRSS``, compiles, and reports
    ``VmHWM - VmRSS``.  TorchScript itself needs memory to compile, so the
    *extra* cost of keeping the input intact is each variant's increase minus
    that of e3nn's ``in_place=True`` (which mutates the model and copies
    nothing), measured the same way.  Also reported, exactly: the bytes of the
    compiled model's parameters and buffers that do not share storage with the
    input.
latency
    Forward time of eager, e3nn-compiled, torchstitch-compiled, and both frozen
    (``torch.jit.freeze`` of e3nn's result against ``ts.compile(...,
    freeze=True)``), under ``torch.no_grad()``, with 1 thread and with all
    threads.  Each variant gets warm-up calls first (TorchScript's profiling
    executor optimizes after 2-3 calls); then the variants are interleaved
    round by round, each round timing a batch of calls; median per call.
aoti
    The export road (issue 14) on the medium network: ``ts.compile(model,
    target="export", example_inputs=[...])`` from two input sets (the medium atoms and
    40 atoms of the same density), default options and no rules, packaged with
    ``ts.save(..., format="aoti")`` (empty Inductor cache) and loaded with ``ts.load``,
    against e3nn's TorchScript model; latency measured as in the latency section, one
    thread.  Target: <= 0.5x e3nn's TorchScript latency.  Full mode only.
plan
    ``ts.plan`` of a tree of 10,000 small modules against a bare
    ``list(model.named_modules())`` walk, interleaved, median.

The targets of issue 5 are checked at the end (PASS/MISS); in ``--smoke``
mode the sizes are too small for them to mean anything and they are reported
as such.  ``--profile`` writes cProfile reports of torchstitch compiles to the
results folder.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
#: the reference networks live with the tests (tests/reference_models.py), which use them too
TESTS = os.path.join(os.path.dirname(HERE), "tests")
for _folder in (TESTS, HERE):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

import torch  # noqa: E402

import torchstitch as ts  # noqa: E402

# --------------------------------------------------------------------------------------
# configuration

#: the reference networks of BASELINES.md (GatePoints); densities chosen so the edge counts
#: match BASELINES.md (588, 2,754): 586 and 2,757 edges
NETWORKS = {
    "full": {
        "medium": {"model": dict(n_layers=3, lmax=1, channels=16), "atoms": 50, "density": 0.2055},
        "large": {"model": dict(n_layers=6, lmax=2, channels=32), "atoms": 200, "density": 0.18},
    },
    "smoke": {
        "medium": {"model": dict(n_layers=1, lmax=1, channels=4), "atoms": 12, "density": 0.2},
        "large": {"model": dict(n_layers=2, lmax=2, channels=4), "atoms": 16, "density": 0.2},
    },
}
#: the previous benchmark network, kept as an extra model (compile and latency sections only,
#: no targets): NequIPStyle at the medium size, on the medium atoms
EXTRA = {
    "full": {"nequip_medium": {"model": dict(n_layers=3, lmax=1, channels=16), "like": "medium"}},
    "smoke": {"nequip_medium": {"model": dict(n_layers=1, lmax=1, channels=4), "like": "medium"}},
}
SETTINGS = {
    "full": dict(
        tree_modules=10_000,
        plan_repeats=15,
        compile_repeats={"seed": 9, "medium": 5, "large": 3, "nequip_medium": 5},
        memory_repeats=3,
        latency_rounds=25,
        latency_batch_s=0.06,
        latency_all_threads=True,
        latency_budget_s=12.0,
    ),
    "smoke": dict(
        tree_modules=1_000,
        plan_repeats=3,
        compile_repeats={"seed": 1, "medium": 1, "large": 1, "nequip_medium": 1},
        memory_repeats=1,
        latency_rounds=2,
        latency_batch_s=0.003,
        latency_all_threads=False,  # 2-thread timings need more rounds than a smoke run has
        latency_budget_s=1.0,
    ),
}

TARGETS_TEXT = {
    "compile": "compile time <= 0.8x e3nn's, both network sizes",
    "memory": "extra peak memory <= 0.1x e3nn's in_place=False",
    "latency": "compiled forward latency within 3% of e3nn-compiled",
    "plan": "plan() of 10,000 modules <= 5x the bare walk and < 0.25 s",
    "overhead": "torchstitch overhead < 5% of compile time",
}


# --------------------------------------------------------------------------------------
# models


def seed_model() -> torch.nn.Module:
    """The first seed scenario, as the README's main job builds it."""
    from torchstitch.demo import build_seed_model

    return build_seed_model()


@ts.compile_mode("script")
class ScriptedLeaf(torch.nn.Linear):
    """A decorated leaf of the planning tree: the claim hooks find a claim on it."""


@ts.compile_mode("trace")
class TracedLeaf(torch.nn.Linear):
    """Another decorated leaf: two strategies in one tree."""


#: depth of the planning tree: the root, four levels of Sequentials, the leaves
TREE_DEPTH = 6


def deep_tree(n_modules: int, depth: int = TREE_DEPTH) -> torch.nn.Module:
    """Exactly ``n_modules`` small modules nested ``depth`` levels deep (the root is level 1):
    Sequentials of 3 modules down to the leaves, which mix decorated (``script``, ``trace``)
    and undecorated modules (Linear, ReLU, Identity); the remainder hangs off the root."""
    leaves = (
        lambda: torch.nn.Linear(4, 4),
        lambda: ScriptedLeaf(4, 4),
        torch.nn.ReLU,
        lambda: TracedLeaf(4, 4),
        torch.nn.Identity,
    )
    made = 0

    def block(level: int) -> torch.nn.Module:
        nonlocal made
        made += 1
        if level == depth:
            return leaves[made % len(leaves)]()
        return torch.nn.Sequential(*[block(level + 1) for _ in range(3)])

    per_block = sum(3**i for i in range(depth - 1))  # a level-2 subtree
    children = [block(2) for _ in range((n_modules - 1) // per_block)]
    children += [torch.nn.Identity() for _ in range(n_modules - 1 - made)]
    return torch.nn.Sequential(*children)


class Case:
    """One benchmark model: how to build it fresh, its example inputs, and how each tool compiles it."""

    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        if name == "seed":
            self.description = "seed example (o3.Norm + data-dependent if)"
            self.build_kwargs = None
            torch.manual_seed(0)
            self.inputs = (torch.randn(64, seed_model().norm.irreps_in.dim),)
        else:
            from reference_models import atoms

            extra = EXTRA[mode].get(name)
            self.model_class = "NequIPStyle" if extra else "GatePoints"
            spec = NETWORKS[mode][extra["like"]] if extra else NETWORKS[mode][name]
            self.build_kwargs = extra["model"] if extra else spec["model"]
            self.inputs = atoms(spec["atoms"], density=spec["density"], seed=0)
            kw = self.build_kwargs
            label = (
                f"NequIPStyle (extra, previous benchmark network) at the {extra['like']} size"
                if extra
                else f"GatePoints {name} (e3nn gate-points Convolution + Gate)"
            )
            self.description = (
                f"{label}: {kw['n_layers']} layers, lmax {kw['lmax']}, "
                f"{kw['channels']} ch, {spec['atoms']} atoms, {self.inputs[2].shape[1]} edges"
            )

    def build(self, tiny: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        if self.name == "seed":
            return seed_model().eval()
        import reference_models

        kw = dict(n_layers=1, lmax=self.build_kwargs["lmax"], channels=2) if tiny else self.build_kwargs
        return getattr(reference_models, self.model_class)(**kw).eval()

    def n_modules(self) -> int:
        return sum(1 for _ in self.build().named_modules())

    # the alternatives; each takes a fresh model
    def e3nn(self, model, in_place=True):
        from e3nn.util import jit as e3nn_jit

        return e3nn_jit.script(model, in_place=in_place)

    def ts(self, model, example_inputs=None, **kw):
        if self.name == "seed":  # root not decorated: force it, as e3nn's script() does
            return ts.script(model, example_inputs=example_inputs, **kw)
        return ts.compile(model, example_inputs=example_inputs, **kw)


# --------------------------------------------------------------------------------------
# timing helpers


class JitTimer:
    """Wraps torch.jit's compile entry points with timers (outermost call only)."""

    NAMES = ("script", "trace", "trace_module", "freeze")

    def __init__(self) -> None:
        self.depth = 0
        self.seconds = 0.0
        self.calls: dict[str, int] = {}
        self._saved: dict[str, object] = {}

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, {}

    def _wrap(self, name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            self.calls[name] = self.calls.get(name, 0) + 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.depth -= 1

        return wrapper

    def __enter__(self):
        for name in self.NAMES:
            self._saved[name] = getattr(torch.jit, name)
            setattr(torch.jit, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(torch.jit, name, fn)


def median(values):
    return statistics.median(values)


def interleaved_compiles(case: Case, variants: dict, repeats: int, timer: JitTimer) -> dict:
    """Run each variant ``repeats`` times, interleaved, fresh model each time (built untimed)."""
    runs = {name: [] for name in variants}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, fn in variants.items():
            model = case.build()
            gc.collect()
            timer.reset()
            start = time.perf_counter()
            fn(model)
            total = time.perf_counter() - start
            if round_:
                runs[name].append({"total": total, "jit": timer.seconds, "calls": dict(timer.calls)})
            del model
    return runs


# --------------------------------------------------------------------------------------
# sections


def bench_compile(cases: list[Case], settings: dict) -> tuple[dict, dict]:
    compile_results, overhead_results = {}, {}
    with JitTimer() as timer:
        for case in cases:
            x = case.inputs
            variants = {
                "e3nn.util.jit": case.e3nn,
                "torchstitch": case.ts,
                "torchstitch(example_inputs)": lambda m, x=x, case=case: case.ts(m, example_inputs=x),
            }
            runs = interleaved_compiles(case, variants, settings["compile_repeats"][case.name], timer)
            base = median([r["total"] for r in runs["e3nn.util.jit"]])
            compile_results[case.name] = {}
            overhead_results[case.name] = {}
            for name, rs in runs.items():
                total = median([r["total"] for r in rs])
                compile_results[case.name][name] = {
                    "seconds": total,
                    "vs_e3nn": total / base,
                    "runs": [r["total"] for r in rs],
                }
                overhead_results[case.name][name] = {
                    "total_s": total,
                    "jit_s": median([r["jit"] for r in rs]),
                    "outside_jit_s": median([r["total"] - r["jit"] for r in rs]),
                    "outside_fraction": median([(r["total"] - r["jit"]) / r["total"] for r in rs]),
                    "jit_calls": rs[-1]["calls"],
                }
            print(f"  compile {case.name}: done", file=sys.stderr, flush=True)
    return compile_results, overhead_results


def bench_plan(settings: dict) -> dict:
    model = deep_tree(settings["tree_modules"])
    count = sum(1 for _ in model.named_modules())
    ts.plan(model)  # warm up: plugin manager, entry points
    runs = {"named_modules": [], "ts.plan": []}
    fns = {"named_modules": lambda: list(model.named_modules()), "ts.plan": lambda: ts.plan(model)}
    for _ in range(settings["plan_repeats"]):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    walk, plan_s = median(runs["named_modules"]), median(runs["ts.plan"])
    return {"modules": count, "named_modules_s": walk, "ts_plan_s": plan_s, "ratio": plan_s / walk}


def time_batch(fn, args, n):
    """Seconds per call of ``fn(*args)``, over ``n`` calls in a row."""
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - start) / n


def interleaved_latency(variants: dict, x: tuple, settings: dict) -> dict:
    """Median ms per call of each variant on ``x`` and its ratio to ``variants["eager"]``.

    Under ``torch.no_grad()``: warm-up calls (TorchScript's profiling executor optimizes
    after 2-3), each output checked against eager, then the variants interleaved round by
    round, each round timing a batch of calls.
    """
    with torch.no_grad():
        reference = variants["eager"](*x)
        per_call = {}
        for name, fn in variants.items():
            for _ in range(5):  # profiling executor: optimizes after 2-3 calls
                out = fn(*x)
            torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
            per_call[name] = time_batch(fn, x, 3)
        batch = {
            name: max(1, int(settings["latency_batch_s"] / max(t, 1e-7))) for name, t in per_call.items()
        }
        runs = {name: [] for name in variants}
        # a round costs sum(batch * per-call); cap each model's rounds to the time budget
        round_s = sum(batch[n] * per_call[n] for n in variants)
        rounds = max(3, min(settings["latency_rounds"], int(settings["latency_budget_s"] / round_s)))
        rounds = min(rounds, settings["latency_rounds"])
        for _ in range(rounds):
            for name, fn in variants.items():
                runs[name].append(time_batch(fn, x, batch[name]))
    eager_s = median(runs["eager"])
    return {name: {"ms": median(r) * 1e3, "vs_eager": median(r) / eager_s} for name, r in runs.items()}


def bench_latency(cases: list[Case], settings: dict, all_threads: int) -> dict:
    from e3nn.util import jit as e3nn_jit

    results = {}
    for case in cases:
        x = case.inputs
        eager = case.build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e3nn_compiled = e3nn_jit.script(copy.deepcopy(eager), in_place=True)
            variants = {
                "eager": eager,
                "e3nn": e3nn_compiled,
                "torchstitch": case.ts(eager),
                "e3nn + torch.jit.freeze": torch.jit.freeze(copy.deepcopy(e3nn_compiled)),
                "torchstitch freeze=True": case.ts(eager, freeze=True),
            }
        results[case.name] = {}
        for threads in sorted({1, all_threads if settings["latency_all_threads"] else 1}):
            torch.set_num_threads(threads)
            results[case.name][f"threads={threads}"] = interleaved_latency(variants, x, settings)
        torch.set_num_threads(1)
        print(f"  latency {case.name}: done", file=sys.stderr, flush=True)
    return results


# -- aoti: the export road on the medium network (issue 14) -------------------------------

#: the AOTI rows' second input set: the medium network's density, this many atoms (every
#: size that differs from the first set's becomes dynamic)
AOTI_SECOND_ATOMS = 40
#: issue 14's target: torchstitch's AOTI latency against e3nn's TorchScript model
AOTI_TARGET = 0.5


def bench_aoti(case: Case, settings: dict) -> dict:
    """AOTInductor through torchstitch against e3nn's TorchScript model, on ``case``.

    torchstitch: ``ts.compile(model, target="export", example_inputs=[set, second set])``
    with default options and no rules, ``ts.save(..., format="aoti")``, ``ts.load``;
    built with an empty Inductor cache of its own.  e3nn: ``e3nn.util.jit.script``.
    Latency as in the latency section (one thread, interleaved), on the case's inputs.
    """
    import tempfile

    from e3nn.util import jit as e3nn_jit
    from reference_models import atoms

    density = NETWORKS["full"][case.name]["density"]
    second = atoms(AOTI_SECOND_ATOMS, density=density, seed=1)
    eager = case.build()
    torch.set_num_threads(1)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="aoti-") as tmp:
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        scripted = e3nn_jit.script(copy.deepcopy(eager), in_place=True)
        e3nn_s = time.perf_counter() - start
        path = os.path.join(tmp, "model.pt2")
        cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tmp, "inductor")
        try:
            start = time.perf_counter()
            compiled = ts.compile(eager, target="export", example_inputs=[case.inputs, second])
            export_s = time.perf_counter() - start
            ts.save(compiled, path, format="aoti")
            build_s = time.perf_counter() - start
        finally:
            if cache is None:
                del os.environ["TORCHINDUCTOR_CACHE_DIR"]
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        loaded = ts.load(path)
        notes = dict(ts.plan_of(compiled).root.outcome.notes)
        variants = {"eager": eager, "e3nn TorchScript": scripted, "torchstitch AOTI": loaded}
        latency = interleaved_latency(variants, case.inputs, settings)
    ratio = latency["torchstitch AOTI"]["ms"] / latency["e3nn TorchScript"]["ms"]
    print(f"  aoti {case.name}: done", file=sys.stderr, flush=True)
    return {
        case.name: {
            "second_set": f"{AOTI_SECOND_ATOMS} atoms, {second[2].shape[1]} edges",
            "dynamic": notes.get("dynamic", "none"),
            "via": notes.get("via", "torch.export"),
            "build_s": {"e3nn TorchScript": e3nn_s, "torchstitch AOTI": build_s},
            "export_s": export_s,
            "latency": latency,
            "ratio": ratio,
            "status": "PASS" if ratio <= AOTI_TARGET else "MISS",
        }
    }


def render_aoti(aoti: dict) -> str:
    """The AOTI section of the results (issue 14's latency target)."""
    lines = ["### AOTInductor through torchstitch (issue 14)", ""]
    lines += [
        '`ts.compile(model, target="export", example_inputs=[set, second set])`, default options,',
        'no rules, then `ts.save(..., format="aoti")` and `ts.load`, against `e3nn.util.jit.script`.',
        "One thread, `torch.no_grad()`, interleaved, median per call on the first set; build with an",
        "empty Inductor cache (compile + save).",
        "",
    ]
    lines += [
        "| model | variant | ms | vs eager | vs e3nn TorchScript | build s |",
        "|---|---|---|---|---|---|",
    ]
    for model, row in aoti.items():
        base = row["latency"]["e3nn TorchScript"]["ms"]
        for variant, t in row["latency"].items():
            build = row["build_s"].get(variant)
            lines.append(
                f"| {model} | {variant} | {t['ms']:.3f} | {t['vs_eager']:.2f} | {t['ms'] / base:.2f}x "
                f"| {'-' if build is None else f'{build:.2f}'} |"
            )
    lines.append("")
    for model, row in aoti.items():
        lines.append(
            f"- {model}: second set {row['second_set']}; the export took {row['export_s']:.1f} s "
            f"(via {row['via']}), dynamic: {row['dynamic']}."
        )
        lines.append(
            f"- Target: torchstitch AOTI latency <= {AOTI_TARGET}x e3nn's TorchScript model: "
            f"{row['ratio']:.2f}x, {row['status']}."
        )
    return "\n".join(lines) + "\n"


def update_results_section(text: str, section: str) -> str:
    """``text`` (RESULTS.md) with ``section`` in place of the section of the same heading,
    or inserted before the targets table if there is none yet."""
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        end = text.find("\n### ", start + len(heading))
        return text[:start] + section + (text[end + 1 :] if end != -1 else "")
    anchor = text.find("### Targets")
    if anchor == -1:
        return text.rstrip("\n") + "\n\n" + section
    return text[:anchor] + section + "\n" + text[anchor:]


# -- memory: a fork server in its own process ----------------------------------------------

#: peak-RSS differences below this are page/malloc-arena noise (see the memory section)
MEMORY_NOISE_FLOOR_MIB = 1.0

MEMORY_VARIANTS = ("e3nn in_place=True", "e3nn in_place=False", "torchstitch", "torchstitch(example_inputs)")


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _storage_ptrs(module: torch.nn.Module) -> set[int]:
    tensors = list(module.state_dict(keep_vars=True).values())
    return {t.untyped_storage().data_ptr() for t in tensors if isinstance(t, torch.Tensor)}


def _duplicated_bytes(original: set[int], compiled: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in compiled.state_dict(keep_vars=True).values():
        if not isinstance(t, torch.Tensor):
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() in original or storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def _memory_child(case: Case, variant: str) -> dict:
    warnings.simplefilter("ignore")

    def run(model, inputs):
        if variant.startswith("e3nn"):
            return case.e3nn(model, in_place=variant.endswith("True"))
        if variant == "torchstitch":
            return case.ts(model)
        return case.ts(model, example_inputs=inputs)

    tiny = case.build(tiny=True)
    if case.name == "seed":
        tiny_inputs = case.inputs
    else:
        from reference_models import atoms

        tiny_inputs = atoms(8, density=0.2, seed=1)
    run(tiny, tiny_inputs)  # code pages and TorchScript's one-time caches
    del tiny
    model = case.build()
    original = _storage_ptrs(model)
    gc.collect()
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        reset = False
    before = _proc_status()
    compiled = run(model, case.inputs)
    after = _proc_status()
    return {
        "peak_increase": after["VmHWM"] - (before["VmRSS"] if reset else before["VmHWM"]),
        "hwm_reset": reset,
        "duplicated_weight_bytes": _duplicated_bytes(original, compiled),
        "model_weight_bytes": sum(t.untyped_storage().nbytes() for t in model.state_dict().values()),
    }


def memory_server(request: dict) -> None:
    """Runs in its own process: fork one child per measurement, print one JSON line each."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    cases = {name: Case(name, request["mode"]) for name in request["cases"]}
    import e3nn.util.jit  # noqa: F401  (imported before forking)

    for _ in range(request["repeats"]):
        for name, case in cases.items():
            for variant in MEMORY_VARIANTS:
                read, write = os.pipe()
                pid = os.fork()
                if pid == 0:  # child
                    os.close(read)
                    try:
                        result = _memory_child(case, variant)
                    except BaseException as exc:  # report, never fall back into the server loop
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    os.write(write, json.dumps(result).encode())
                    os._exit(0)
                os.close(write)
                with os.fdopen(read) as f:
                    data = f.read()
                os.waitpid(pid, 0)
                result = json.loads(data) if data else {"error": "child died"}
                print(json.dumps({"case": name, "variant": variant, **result}), flush=True)


def bench_memory(case_names: list[str], mode: str, repeats: int) -> dict:
    request = {"mode": mode, "cases": case_names, "repeats": repeats}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-server", json.dumps(request)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode:
        raise RuntimeError(f"memory server failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    errors = [r for r in rows if "error" in r]
    if errors:
        raise RuntimeError(f"memory measurement failed: {errors[0]}")
    results = {}
    for name in case_names:
        by_variant = {
            v: [r for r in rows if r["case"] == name and r["variant"] == v] for v in MEMORY_VARIANTS
        }
        base = median([r["peak_increase"] for r in by_variant["e3nn in_place=True"]])
        results[name] = {}
        for variant, rs in by_variant.items():
            peak = median([r["peak_increase"] for r in rs])
            results[name][variant] = {
                "peak_increase_mib": peak / 2**20,
                "extra_mib": max(0.0, peak - base) / 2**20,
                "duplicated_weight_mib": rs[0]["duplicated_weight_bytes"] / 2**20,
                "model_weight_mib": rs[0]["model_weight_bytes"] / 2**20,
                "runs_mib": [r["peak_increase"] / 2**20 for r in rs],
                "hwm_reset": rs[0]["hwm_reset"],
            }
    return results


# --------------------------------------------------------------------------------------
# profiling (``--profile``): where torchstitch spends a compile


def profile_compiles(cases: list[Case], out_dir: str, top: int = 30) -> dict[str, str]:
    reports = {}
    for case in cases:
        if case.name == "seed":
            continue
        for label, kw in (("plain", {}), ("example_inputs", {"example_inputs": case.inputs})):
            case.ts(case.build(), **kw)  # warm
            model = case.build()
            profiler = cProfile.Profile()
            profiler.enable()
            case.ts(model, **kw)
            profiler.disable()
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text).strip_dirs()
            stats.sort_stats("cumulative").print_stats(top)
            stats.sort_stats("tottime").print_stats(top)
            path = os.path.join(out_dir, f"profile_{case.name}_{label}.txt")
            with open(path, "w") as f:
                f.write(text.getvalue())
            reports[f"{case.name}/{label}"] = path
    return reports


# --------------------------------------------------------------------------------------
# targets and report


def check_targets(results: dict) -> list[dict]:
    targets = []

    def add(key, what, value, limit, ok):
        targets.append(
            {
                "target": key,
                "what": what,
                "value": value,
                "limit": limit,
                "status": "n/a" if ok is None else "PASS" if ok else "MISS",
            }
        )

    for size in ("medium", "large"):
        c = results["compile"][size]
        for variant in ("torchstitch", "torchstitch(example_inputs)"):
            r = c[variant]["vs_e3nn"]
            add("compile", f"{size}: {variant} / e3nn compile time", round(r, 3), 0.8, r <= 0.8)
    for size in ("medium", "large"):
        m = results["memory"][size]
        e3nn_extra = m["e3nn in_place=False"]["extra_mib"]
        for variant in ("torchstitch", "torchstitch(example_inputs)"):
            extra = m[variant]["extra_mib"]
            what = f"{size}: {variant} / e3nn in_place=False extra peak"
            if e3nn_extra < MEMORY_NOISE_FLOOR_MIB:
                # page- and malloc-arena-sized noise: no verdict (the model's weights are too small)
                add("memory", what + f" (e3nn's extra {e3nn_extra:.2f} MiB < noise floor)", None, 0.1, None)
                continue
            ratio = extra / e3nn_extra
            add("memory", what, round(ratio, 3), 0.1, ratio <= 0.1)
    for size in ("seed", "medium", "large"):  # not the extra models
        for threads, row in results["latency"][size].items():
            for ts_name, e3nn_name in (
                ("torchstitch", "e3nn"),
                ("torchstitch freeze=True", "e3nn + torch.jit.freeze"),
            ):
                r = row[ts_name]["ms"] / row[e3nn_name]["ms"]
                add("latency", f"{size} {threads}: {ts_name} / {e3nn_name}", round(r, 3), 1.03, r <= 1.03)
    p = results["plan"]
    add(
        "plan",
        f"ts.plan / named_modules() ({p['modules']} modules)",
        round(p["ratio"], 2),
        5.0,
        p["ratio"] <= 5,
    )
    add("plan", "ts.plan seconds", round(p["ts_plan_s"], 4), 0.25, p["ts_plan_s"] < 0.25)
    for size in ("seed", "medium", "large"):
        for variant in ("torchstitch", "torchstitch(example_inputs)"):
            f = results["overhead"][size][variant]["outside_fraction"]
            add("overhead", f"{size}: {variant} time outside torch.jit / total", round(f, 3), 0.05, f < 0.05)
    return targets


def render(results: dict) -> str:
    lines = [f"Machine: {results['machine']}", f"Mode: {results['mode']}.  {results['noise']}", ""]
    lines += ["Models:", ""] + [f"- `{k}`: {v}" for k, v in results["models"].items()] + [""]

    lines += ["### Compile wall time (median, fresh model per run, interleaved)", ""]
    lines += [
        "| model | variant | seconds | vs e3nn | time in torch.jit | outside torch.jit |",
        "|---|---|---|---|---|---|",
    ]
    for model, rows in results["compile"].items():
        for variant, row in rows.items():
            o = results["overhead"][model][variant]
            lines.append(
                f"| {model} | {variant} | {row['seconds']:.3f} | {row['vs_e3nn']:.2f}x | "
                f"{o['jit_s']:.3f} s ({_calls(o['jit_calls'])}) | {o['outside_jit_s']:.3f} s "
                f"({o['outside_fraction'] * 100:.1f}%) |"
            )
    lines.append("")

    lines += ["### Extra peak memory while compiling (peak RSS increase, fresh process each, median)", ""]
    lines += [
        "| model | variant | peak RSS increase | extra vs e3nn in_place=True "
        "| weights not shared with input |",
        "|---|---|---|---|---|",
    ]
    for model, rows in results["memory"].items():
        for variant, row in rows.items():
            lines.append(
                f"| {model} | {variant} | {row['peak_increase_mib']:.1f} MiB | {row['extra_mib']:.1f} MiB | "
                f"{row['duplicated_weight_mib']:.2f} of {row['model_weight_mib']:.2f} MiB |"
            )
    lines.append("")

    lines += ["### Forward latency (median per call, torch.no_grad, after warm-up)", ""]
    lines += ["| model | threads | variant | ms | vs eager |", "|---|---|---|---|---|"]
    for model, by_threads in results["latency"].items():
        for threads, rows in by_threads.items():
            for variant, row in rows.items():
                lines.append(
                    f"| {model} | {threads.split('=')[1]} | {variant} | {row['ms']:.3f} "
                    f"| {row['vs_eager']:.2f} |"
                )
    lines.append("")

    p = results["plan"]
    lines += ["### plan() of a synthetic tree", ""]
    lines += ["| modules | named_modules() | ts.plan() | ratio |", "|---|---|---|---|"]
    lines.append(
        f"| {p['modules']} | {p['named_modules_s'] * 1e3:.1f} ms | "
        f"{p['ts_plan_s'] * 1e3:.1f} ms | {p['ratio']:.1f}x |"
    )
    lines.append("")

    if "aoti" in results:
        lines += [render_aoti(results["aoti"])]

    lines += ["### Targets (issue 5)", ""]
    if results["mode"] == "smoke":
        lines += ["Smoke mode: tiny sizes, the verdicts below are not meaningful.", ""]
    lines += ["| target | measured | value | limit | status |", "|---|---|---|---|---|"]
    for t in results["targets"]:
        lines.append(
            f"| {TARGETS_TEXT[t['target']]} | {t['what']} | {t['value']} | {t['limit']} | {t['status']} |"
        )
    if results["mode"] == "full":
        lines += ["", "### Analysis", "", ANALYSIS]
    return "\n".join(lines) + "\n"


ANALYSIS = """\
Written by hand from profiles (`--profile` writes them next to the JSON); the tables above are
this run's numbers.

- Compile time (about 0.5x e3nn).  torchstitch makes e3nn's `torch.jit.script` calls, and
  three things make TorchScript and torchstitch do less work for them:
  - fx gives every `GraphModule` a class of its own, so TorchScript's type cache never saw
    two copies of e3nn's generated tensor-product code as alike.  torchstitch scripts private
    shells that share one class per distinct code (`plugins/graph_modules.py`).  TorchScript then
    compiles each kernel once, and each parent holding identical kernels once too.
  - TorchScript tried, and failed, to compile the `torch.fx.Graph` attribute of every
    `GraphModule` as a TorchScript class, re-reading the source of all its methods: about 40%
    of the time spent scripting generated code.  The shells tell TorchScript to ignore it.
  - e3nn runs `opt_einsum_fx.jitable` on every generated kernel, regenerating its Python, so
    that old TorchScript accepts `tensordot(dims=...)` and `permute(*dims)`.  TorchScript in
    torch 2.13 compiles both as written, to the same code (a test checks every kernel of both
    networks), so torchstitch skips the rewrite there.  On older torch it rewrites each
    distinct kernel once.
- Overhead (time outside torch.jit): about 3% on the networks (PASS), about 5-6% on seed
  (MISS by a millisecond).
  - Measured without a profiler: medium 12 ms, of which verifying the 15 traced nodes 3 ms,
    tracing inputs 1 ms and shells 1 ms; large 28 ms, of which verification 8 ms, inputs
    3 ms and shells 2 ms.  Planning, hooks and bookkeeping make up the rest.
  - Seed: 1.5 ms out of about 30 ms, half of it verifying its one traced node, which
    DESIGN.md asks for on every traced node.
  - Verification runs compiled modules without TorchScript's graph optimizer.  Their first
    optimized calls are profiling runs (2.35 ms against 0.61 ms for seed's traced node), and
    would fix the shapes TorchScript specializes for from tracing inputs.  The caller's first
    real calls do that instead, as after e3nn's compile.
- With `example_inputs`: one eager run to record inputs and one run of the compiled model to
  verify it, both without autograd graphs and the second without the graph optimizer.  What
  the recording keeps (inputs and outputs of the recorded modules) and the two runs'
  activations are the extra peak memory (about 60 MiB on large); `verify=False` skips the
  second run.
- Latency rows compare the same TorchScript programs (torchstitch makes e3nn's script and
  trace calls), so their ratios scatter around 1.00.  On this shared 2-core machine a single
  row can land a few percent off: the 2-thread rows of large have the fewest calls per
  round.
- Architecture step (issue 13: pluggy calls the hooks, TorchScript moved into its plugin,
  the engine split into rooms), measured side by side with the commit before it, alternating
  processes, 3 rounds each (median): compile time and its part outside torch.jit unchanged
  within this machine's noise (medium: 0.58/0.68 s before, 0.57/0.60 s after; large with
  example_inputs 1.51/1.60 s before, 1.49/1.53 s after; outside torch.jit, medium 43/52 ms
  before, 42/48 ms after).  `plan()` of the six-level tree of mixed decorated and
  undecorated leaves: 5.0-5.2x the bare walk before, 4.8-5.3x after (62 ms either way).
  Called through pluggy (`pm.hook.torchstitch_claim(...)`) the claim hook made that 6.9x
  (112 ms against 93 ms before, same tree): pluggy's call costs about 2 us per module, more
  than the claims themselves.  So `PluginSet.claims` (core/plugin_manager.py) is the one hook
  torchstitch calls itself, and only while no wrapper is registered on it and
  `TORCHSTITCH_DEBUG` is off; then pluggy calls it.  After the planner's hot loop was
  trimmed (the path index built on first use, claim implementations called by their
  argument form): 4.5-4.8x in isolated runs, 4.2x in this table.
- Overhead outside torch.jit rose from 3.1%/3.3% (medium/large, stop 9) to about 6%: the
  guarantees of issue 12 (every run from the caller's buffers, the tensor guard around each
  plugin call, private copies of tracing inputs, a shell for every module).  Restoring the
  caller's buffers only around strategies that run the node (trace, export; not script)
  took back about 19 ms of a medium compile; what is left is spread over those guarantees
  (profile: inputs snapshot, node verification, guard, state, each a few ms).  Compile time
  against e3nn: 0.52x/0.49x (stop 9: 0.50x/0.48x)."""


def _calls(calls: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(calls.items())) or "none"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import e3nn

    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, e3nn {e3nn.__version__}, torchstitch {ts.__version__}"
    )


# --------------------------------------------------------------------------------------


def run(mode: str, out_dir: str, profile: bool = False, write_results_md: bool | None = None) -> dict:
    settings = SETTINGS[mode]
    all_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    cases = [Case(name, mode) for name in ("seed", "medium", "large", *EXTRA[mode])]
    results: dict = {
        "mode": mode,
        "machine": machine(),
        "noise": (
            "Shared machine: absolute times drift by ~25% between runs; compare ratios "
            "measured side by side (alternatives interleaved in one process)."
        ),
        "models": {c.name: f"{c.description}, {c.n_modules()} modules" for c in cases},
        "settings": settings,
    }
    results["models"]["tree"] = (
        f"synthetic tree of {settings['tree_modules']} small modules, {TREE_DEPTH} levels deep, "
        "decorated and undecorated leaves"
    )
    sections = results["section_seconds"] = {}

    def section(name, fn):
        print(f"{name}...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        out = fn()
        sections[name] = time.perf_counter() - start
        return out

    results["memory"] = section(
        "memory", lambda: bench_memory(["medium", "large"], mode, settings["memory_repeats"])
    )
    results["plan"] = section("plan", lambda: bench_plan(settings))
    results["compile"], results["overhead"] = section("compile", lambda: bench_compile(cases, settings))
    results["latency"] = section("latency", lambda: bench_latency(cases, settings, all_threads))
    if mode == "full":  # an AOTI build takes about 15 s: not in smoke runs
        results["aoti"] = section("aoti", lambda: bench_aoti(cases[1], settings))
    results["targets"] = check_targets(results)
    results["seconds"] = time.perf_counter() - started
    if profile:
        os.makedirs(out_dir, exist_ok=True)
        results["profiles"] = profile_compiles(cases, out_dir)

    table = render(results)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(results, f, indent=2)
    if write_results_md if write_results_md is not None else mode == "full":
        with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
            f.write(
                "# Benchmark results\n\n"
                "Written by `python benchmarks/run.py` (full mode); see that file's docstring "
                "for the method of each section.\n\n" + table
            )
    return results


def run_aoti_only(out_dir: str) -> int:
    """The AOTI section alone, measured on the medium network; written to ``out_dir/aoti.md``
    and in place of that section of RESULTS.md (the other sections keep their numbers)."""
    warnings.simplefilter("ignore")
    section = render_aoti(bench_aoti(Case("medium", "full"), SETTINGS["full"]))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "aoti.md"), "w") as f:
        f.write(section)
    results_md = os.path.join(HERE, "RESULTS.md")
    with open(results_md) as f:
        text = f.read()
    with open(results_md, "w") as f:
        f.write(update_results_section(text, section))
    print(section)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (CI)")
    parser.add_argument("--profile", action="store_true", help="also write cProfile reports of ts compiles")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    parser.add_argument("--memory-server", help=argparse.SUPPRESS)
    parser.add_argument(
        "--aoti-only",
        action="store_true",
        help="only the AOTI rows (medium network, about a minute); rewrites that section of RESULTS.md",
    )
    args = parser.parse_args(argv)
    if args.memory_server:
        memory_server(json.loads(args.memory_server))
        return 0
    if args.aoti_only:
        return run_aoti_only(args.out)
    results = run("smoke" if args.smoke else "full", args.out, profile=args.profile)
    print(render(results))
    counts = {s: sum(t["status"] == s for t in results["targets"]) for s in ("PASS", "MISS", "n/a")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({results['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
