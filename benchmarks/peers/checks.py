"""The checks every peer runs on each of its models: eager, TorchScript drop-in, export/AOTI.

Each check takes a :class:`harness.Subject` and returns rows (dicts) for ``report.py``;
a check never raises for what it measures: a failure is a row with the exception's type,
the node path torchstitch names and the first line of its message.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import e3nn.util.jit as e3nn_jit
import torch
import torch.utils._pytree as pytree
from harness import (
    PEERS_DIR,
    SIZES,
    Outputs,
    Row,
    Subject,
    close,
    describe_error,
    identical,
    max_abs_diff,
)

import torchstitch as ts
from torchstitch.plugins.e3nn import jit as ts_jit

# the C++ loader's build, shared with tests/test_cpp_deploy.py
sys.path.insert(0, str(PEERS_DIR.parent / "cpp"))
import deploy_build  # noqa: E402

#: compile calls of the TorchScript drop-in, timed this many times each (median)
COMPILE_REPEATS = 3
#: calls before outputs count as "warm": TorchScript's profiling executor optimizes the
#: graph after its first runs, which may change the last bits of a result
WARM_CALLS = 3


def eager(subject: Subject) -> list[Row]:
    """The eager model's outputs on every system size (the reference of every other check)."""
    modules = sum(1 for _ in subject.model.modules())
    parameters = sum(p.numel() for p in subject.model.parameters())
    rows = []
    for n in SIZES:
        out = subject.run(subject.model, n)
        rows.append(
            {
                "status": "ok",
                "atoms": n,
                "edges": subject.edges(n),
                "energy": float(out["energy"].sum()),
                "max_force": float(out["forces"].abs().max()) if "forces" in out else None,
                "outputs": sorted(out),
                "modules": modules,
                "parameters": parameters,
                **subject.extra,
            }
        )
    return rows


def _interleaved_compiles(compilers: dict[str, Callable[[], Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each compiler, called round by round; the last compiled model of each.

    Each compiler is given its own deep copy of the model, made outside the timed region.
    """
    times: dict[str, list[float]] = {name: [] for name in compilers}
    compiled: dict[str, Any] = {}
    for _ in range(COMPILE_REPEATS):
        for name, compile_copy in compilers.items():
            seconds, compiled[name] = compile_copy()
            times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}, compiled


def _timed_on_copy(subject: Subject, fn: Callable[[torch.nn.Module], Any]) -> Callable[[], tuple[float, Any]]:
    def run() -> tuple[float, Any]:
        model = subject.fresh_copy()
        start = time.perf_counter()
        result = fn(model)
        return time.perf_counter() - start, result

    return run


def _warm_outputs(subject: Subject, module: Any, n: int) -> tuple[Outputs, Outputs]:
    """Outputs of the first call on ``n`` atoms, and of the call after :data:`WARM_CALLS` more."""
    first = subject.run(module, n)
    for _ in range(WARM_CALLS):
        warm = subject.run(module, n)
    return first, warm


def _load_seconds(compiled: dict[str, Any]) -> dict[str, float | None]:
    """CPU seconds of ``torch.jit.load`` of each saved model (what a libtorch host pays per
    load): median of :data:`COMPILE_REPEATS`, interleaved; ``None`` each where a root is not
    a ``ScriptModule`` (NequIP's ``GraphModel`` stays in Python: nothing to save whole)."""
    if not all(isinstance(module, torch.jit.ScriptModule) for module in compiled.values()):
        return {name: None for name in compiled}
    saved = {}
    for name, module in compiled.items():
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        saved[name] = buffer.getvalue()
    times: dict[str, list[float]] = {name: [] for name in saved}
    for _ in range(COMPILE_REPEATS):
        for name, data in saved.items():
            start = time.process_time()
            torch.jit.load(io.BytesIO(data))
            times[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def torchscript_drop_in(subject: Subject, call: str = "compile") -> list[Row]:
    """``torchstitch.plugins.e3nn.jit.<call>`` against ``e3nn.util.jit.<call>`` on deep copies.

    Bit-identical outputs, on the first call and once warm, at the two compile-time sizes
    (the status is ``ok`` when the warm outputs are identical); compile seconds of each
    (median of :data:`COMPILE_REPEATS`, interleaved), and CPU seconds of ``torch.jit.load``
    of each saved model (:func:`_load_seconds`).
    """
    row: Row = {"call": call}
    try:
        seconds, compiled = _interleaved_compiles(
            {
                "e3nn": _timed_on_copy(subject, getattr(e3nn_jit, call)),
                "torchstitch": _timed_on_copy(subject, getattr(ts_jit, call)),
            }
        )
    except Exception as exc:  # record what the compilers say
        return [{**row, "status": "failed", **describe_error(exc)}]
    row.update(e3nn_s=seconds["e3nn"], torchstitch_s=seconds["torchstitch"])
    row["ratio"] = seconds["torchstitch"] / seconds["e3nn"]
    loads = _load_seconds(compiled)
    row.update(e3nn_load_s=loads["e3nn"], torchstitch_load_s=loads["torchstitch"])
    first_same, warm_same, e3nn_stable, diffs, vs_eager = True, True, True, [], []
    for n in SIZES[:2]:
        e3nn_first, e3nn_warm = _warm_outputs(subject, compiled["e3nn"], n)
        ts_first, ts_warm = _warm_outputs(subject, compiled["torchstitch"], n)
        first_same &= identical(e3nn_first, ts_first)
        warm_same &= identical(e3nn_warm, ts_warm)
        e3nn_stable &= identical(e3nn_first, e3nn_warm)
        diffs += [max_abs_diff(e3nn_first, ts_first), max_abs_diff(e3nn_warm, ts_warm)]
        vs_eager.append(max_abs_diff(ts_warm, subject.run(subject.model, n)))
    row.update(
        identical_first=first_same,
        identical_warm=warm_same,
        # whether e3nn's own model gives the same bits before and after warm-up: where it
        # does not, a first-call difference is TorchScript's executor, not the drop-in
        e3nn_stable=e3nn_stable,
        max_diff=None if None in diffs else max(diffs),
        vs_eager=None if None in vs_eager else max(vs_eager),
        scripted=sum(isinstance(m, torch.jit.ScriptModule) for m in compiled["torchstitch"].modules()),
        status="ok" if warm_same else "differs",
    )
    return [row]


def export_and_aoti(subject: Subject, kind: str = "torchstitch") -> list[Row]:
    """``ts.compile(target="export")`` on the first two sizes, then AOTI; both against eager.

    The exported model runs on every size; the AOTI package (``ts.save(format="aoti")``,
    ``ts.load``) too, the last size being one the export never saw, in Python and in C++
    (:func:`cpp_run`).  The package stays in ``.peers/artifacts`` for later checks, as
    ``kind``.  A failure is recorded with the stage it happened in.
    """
    reference = {n: subject.run(subject.model, n) for n in SIZES}
    row: Row = {"stage": "compile", "root_strategy": subject.root_strategy}
    try:
        start = time.perf_counter()
        # the form: two input sets, every axis that differs between them dynamic,
        # no dims and no strategy options (make_fx is chosen for the forces' autograd.grad)
        sets = [subject.make_args(n) for n in SIZES[:2]]
        compiled = ts.compile(
            subject.fresh_copy(), target="export", example_inputs=sets, root_strategy=subject.root_strategy
        )
        row["build_s"] = time.perf_counter() - start
        row.update(_root_notes(compiled))
        row["stage"] = "run export"
        exported = {n: subject.run(compiled, n) for n in SIZES}
        row["export_diff"] = _worst(exported, reference)
        row["stage"] = "save aoti"
        path = subject.artifact(kind)
        path.unlink(missing_ok=True)  # a later check must not time an earlier run's package
        start = time.perf_counter()
        ts.save(compiled, path, format="aoti")
        row["aoti_build_s"] = time.perf_counter() - start
        row["stage"] = "load aoti"
        loaded = ts.load(path)
        row["stage"] = "run aoti"
        packaged = {n: subject.run(loaded, n) for n in SIZES}
        row["aoti_diff"] = _worst(packaged, reference)
    except Exception as exc:  # the table shows where the road ends today
        return [{**row, "status": "failed", **describe_error(exc)}]
    equal = all(close(exported[n], reference[n]) and close(packaged[n], reference[n]) for n in SIZES)
    return [
        {**row, "stage": "done", "status": "ok" if equal else "differs"},
        cpp_run(subject, loaded, path, SIZES[-1]),
    ]


def _root_notes(compiled: torch.nn.Module) -> Row:
    """What the plan says about how the root was exported: its dims and the way traced."""
    plan = ts.plan_of(compiled)
    outcome = None if plan is None else plan.root.outcome
    notes = {} if outcome is None else dict(outcome.notes)
    return {"dynamic": notes.get("dynamic"), "via": notes.get("via", "torch.export")}


def cpp_run(subject: Subject, loaded: Any, package: os.PathLike[str], n: int) -> Row:
    """The AOTI package run from C++ (``cpp/deploy_check.cpp``) on the ``n``-atom system,
    against the loaded package in Python (``ts.load``'s artifact): the same flat tensors in,
    the same out.

    The program is built against this environment's torch (the compile command and cache
    key of tests/test_cpp_deploy.py), once per environment, in ``.peers/cpp``.
    """
    row: Row = {"section": "cpp", "atoms": n, "stage": "build"}
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return {**row, "status": "skipped", "message": "no C++ compiler (g++ or $CXX) on PATH"}
    try:
        start = time.perf_counter()
        binary = deploy_build.build(compiler, PEERS_DIR / "cpp")
        row["build_s"] = time.perf_counter() - start
        row["stage"] = "run"
        args = subject.make_args(n)
        # the package's inputs as C++ passes them: the flattened arguments, in the order
        # the package metadata's torchstitch.inputs names them
        _, _, flat = loaded.module.input_spec.check(args, {})
        inputs = [value for value in flat if isinstance(value, torch.Tensor)]
        with tempfile.TemporaryDirectory(prefix="cpp-") as workdir:
            outputs, _ = deploy_build.run(binary, "aoti", package, inputs, workdir)
        expected, structure = pytree.tree_flatten(loaded(*args))
        row["outputs"] = len(outputs)
        # a None output (MACE's virials when not asked for) is an undefined tensor in C++:
        # compared by position, so the names differ if one side has it and not the other
        got = {str(i): t for i, t in enumerate(outputs) if t is not None}
        want = {str(i): t.detach() for i, t in enumerate(expected) if t is not None}
        row["cpp_diff"] = max_abs_diff(got, want)
        in_cpp = subject.outputs(pytree.tree_unflatten(outputs, structure))
        row["vs_eager"] = max_abs_diff(in_cpp, subject.run(subject.model, n))
    except Exception as exc:  # the row says what failed
        return {**row, "status": "failed", **describe_error(exc)}
    return {**row, "stage": "done", "status": "ok" if close(got, want) else "differs"}


def _worst(outputs: dict[int, Outputs], reference: dict[int, Outputs]) -> float | None:
    diffs = [max_abs_diff(outputs[n], reference[n]) for n in outputs]
    return None if None in diffs else max(diffs)
