"""What the peers' check scripts share: models under test, timed checks, JSON rows.

A check script (``check_mace.py``, ``check_nequip.py``) runs inside its peer's virtual
environment (made by ``.ci/peers``).  It names its models (:class:`Subject` builders) and
its checks (functions ``check(subject) -> list of rows``), then calls :func:`main`.  Each
(model, check) pair runs in a child process of its own, with a timeout, its own empty
Inductor cache and one thread, so that a hang, a crash or a cache warmed by an earlier
check cannot spoil the others; a child that times out or dies still leaves a row saying so.
Rows are JSON objects, one per line, which ``report.py`` assembles into the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: the atom counts of the systems every model runs on: the export is compiled on the first
#: two (each dimension that differs between them should become dynamic), the third is a
#: size it has never seen
SIZES = (6, 9, 12)
#: the folder .ci/peers keeps its environments in; the checks keep there what outlives one
#: check: the C++ loader's binaries (per environment's torch) and the packages a later
#: check of the same run compares (``artifacts/MODEL.KIND.pt2``)
PEERS_DIR = Path(__file__).resolve().parents[2] / ".peers"
#: outputs this close to eager count as equal (float64 models)
ATOL = 1e-8
RTOL = 1e-6

Outputs = dict[str, torch.Tensor]
Row = dict[str, Any]


@dataclass
class Subject:
    """A model under test and how to call it.

    :param name: how the table names the model.
    :param model: the eager model; checks compile deep copies of it, never it.
    :param make_args: fresh positional arguments for ``forward`` on a system of ``n`` atoms
        (fresh because peers write into their input dicts: MACE sets ``requires_grad``).
    :param outputs: the named output tensors of one call (energy, forces, ...), detached.
    :param edges: the number of edges of the ``n``-atom system.
    :param extra: fields every eager row carries (how the model was configured).
    :param root_strategy: ``ts.compile``'s ``root_strategy`` for the export check, where
        nothing claims the model's root (``target="export"`` then exports the claimed
        submodules only, and an AOTI package needs an exported root).
    """

    name: str
    model: torch.nn.Module
    make_args: Callable[[int], tuple[Any, ...]]
    outputs: Callable[[Any], Outputs]
    edges: Callable[[int], int]
    extra: dict[str, Any] = field(default_factory=dict)
    root_strategy: str | None = None

    def run(self, module: Any, n: int) -> Outputs:
        """``module``'s named outputs on the ``n``-atom system."""
        return self.outputs(module(*self.make_args(n)))

    def artifact(self, kind: str) -> Path:
        """Where this model's package of ``kind`` is kept for later checks of the run."""
        folder = PEERS_DIR / "artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.name}.{kind}.pt2"

    def fresh_copy(self) -> torch.nn.Module:
        """A deep copy of the eager model, for a compiler to change as it likes."""
        return copy.deepcopy(self.model)


Check = Callable[[Subject], list[Row]]


def cluster(n: int) -> tuple[list[list[float]], list[str]]:
    """A fixed random molecule-like cluster of ``n`` atoms: positions (Å) and elements.

    Every third atom is oxygen, the others hydrogen; the box grows with ``n`` so that the
    number of neighbours within 3 Å stays about the same (more atoms, more edges).
    """
    generator = torch.Generator().manual_seed(n)
    side = 1.6 * n ** (1 / 3)
    positions = (torch.rand(n, 3, generator=generator, dtype=torch.float64) * side).tolist()
    return positions, ["O" if i % 3 == 0 else "H" for i in range(n)]


# -- measuring ----------------------------------------------------------------------------


def median_call_ms(fn: Callable[[], Any], calls: int = 30, warmup: int = 3) -> float:
    """Median milliseconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def interleaved_ms(
    fns: Mapping[str, Callable[[], Any]], rounds: int = 15, calls: int = 20
) -> dict[str, float]:
    """Median milliseconds per call of each of ``fns``, timed side by side: after warm-up
    calls, round after round, each round timing ``calls`` calls of each in turn (so that the
    drift of a shared machine falls on all of them alike)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def detached(outputs: Mapping[str, Any]) -> Outputs:
    """The tensor values of ``outputs``, detached (``None`` values dropped)."""
    return {k: v.detach() for k, v in outputs.items() if isinstance(v, torch.Tensor)}


# A NaN where the other side has a NaN too counts as equal: the stress of a cluster without
# a cell is NaN in eager as well (nequip divides the virial by the cell's volume).


def identical(a: Outputs, b: Outputs) -> bool:
    """Same names and bit-identical tensors (NaN where the other has NaN)."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=0, rtol=0, equal_nan=True) for k in a
    )


def max_abs_diff(a: Outputs, b: Outputs) -> float | None:
    """Largest absolute difference over the outputs both have; ``None`` if the names differ,
    ``inf`` where one side has a NaN and the other not."""
    if a.keys() != b.keys():
        return None
    diffs = []
    for k in a:
        if not a[k].numel():
            continue
        x, y = a[k].double(), b[k].double()
        diff = torch.where(x.isnan() & y.isnan(), 0.0, (x - y).abs())
        diffs.append(float(diff.nan_to_num(nan=float("inf")).max()))
    return max(diffs, default=0.0)


def close(a: Outputs, b: Outputs) -> bool:
    """Same names and every tensor within :data:`ATOL`/:data:`RTOL` of the other."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.allclose(a[k], b[k], atol=ATOL, rtol=RTOL, equal_nan=True)
        for k in a
    )


def describe_error(exc: BaseException) -> Row:
    """Type, node path (torchstitch's errors carry one) and first message line of ``exc``."""
    message = str(getattr(exc, "message", None) or exc).strip()
    path = getattr(exc, "path", None)
    row: Row = {
        "error": type(exc).__name__,
        "path": None if path is None else (path or "<root>"),
        "message": message.splitlines()[0] if message else "(no message)",
    }
    cause = exc.__cause__ or exc.__context__
    if cause is not None:
        text = str(cause).strip()
        row["cause"] = f"{type(cause).__name__}: {text.splitlines()[0] if text else ''}"
    return row


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (``"-"`` where one is missing)."""
    from importlib import metadata

    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def machine() -> str:
    """CPU, cores, kernel and Python of this machine (no paths)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


# -- running ------------------------------------------------------------------------------


def run_child(
    builders: Mapping[str, Callable[[], Subject]], checks: Mapping[str, Check], model: str, check: str
) -> list[Row]:
    """Build ``model`` and run ``check`` on it, in this process."""
    warnings.simplefilter("ignore")  # TorchScript and e3nn warn on every module; rows say what matters
    torch.set_num_threads(1)
    torch.manual_seed(0)
    subject = builders[model]()
    rows = checks[check](subject)
    for row in rows:
        row.setdefault("model", subject.name)
    return rows


def spawn(script: str, model: str, check: str, timeout: float) -> list[Row]:
    """Run one (model, check) pair in a fresh process; a row of its failure if it has no rows."""
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        out = os.path.join(tmp, "rows.json")
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "inductor"), OMP_NUM_THREADS="1")
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, script, "--child", model, check, "--out", out],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=tmp,  # artifacts the checks write land in the temporary folder
            )
        except subprocess.TimeoutExpired:
            return [{"status": "timeout", "message": f"no result after {timeout:.0f} s"}]
        if proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["(no output)"]
        return [
            {
                "status": "crashed",
                "message": f"exit {proc.returncode} after {time.perf_counter() - start:.0f} s: {tail[0]}",
            }
        ]


def main(
    peer: str,
    builders: Mapping[str, Callable[[], Subject]],
    checks: Mapping[str, tuple[Check, float]],
    packages: tuple[str, ...],
    argv: list[str] | None = None,
) -> int:
    """Command line of a check script: every (model, check) pair, each in its own process.

    :param peer: the peer's name (``mace``, ``nequip``), the first field of every row.
    :param builders: model name -> function building the :class:`Subject`.
    :param checks: check name -> (check function, timeout in seconds).
    :param packages: distributions whose versions the table reports.
    """
    parser = argparse.ArgumentParser(description=f"Integration checks of torchstitch on {peer}.")
    parser.add_argument("--out", required=True, help="JSON-lines file the rows are appended to")
    parser.add_argument("--models", default=",".join(builders), help="comma-separated models")
    parser.add_argument("--checks", default=",".join(checks), help="comma-separated checks")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CHECK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    functions = {name: fn for name, (fn, _) in checks.items()}
    if args.child:
        rows = run_child(builders, functions, *args.child)
        with open(args.out, "w") as f:
            json.dump(rows, f)
        return 0

    script = os.path.abspath(sys.argv[0])
    with open(args.out, "a") as out:
        meta = {"peer": peer, "section": "meta", "machine": machine(), "versions": versions(*packages)}
        out.write(json.dumps(meta) + "\n")
        for model in args.models.split(","):
            for check in args.checks.split(","):
                print(f"[{peer}] {model}: {check} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                for row in spawn(script, model, check, timeout=checks[check][1]):
                    row = {"peer": peer, "model": model, "section": check, **row}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                seconds = time.perf_counter() - start
                print(f"[{peer}] {model}: {check} done in {seconds:.0f} s", file=sys.stderr)
    return 0
