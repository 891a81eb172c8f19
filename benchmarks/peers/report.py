"""Assemble the peers' JSON rows into the results table (``benchmarks/PEERS_RESULTS.md``).

``bash .ci/peers`` runs each peer's check script in that peer's environment, then this
(standard library only, any Python 3.10+):

    python benchmarks/peers/report.py rows/mace.jsonl rows/nequip.jsonl --out benchmarks/PEERS_RESULTS.md

A row is a JSON object with ``peer``, ``model``, ``section`` (the check: ``eager``,
``torchscript``, ``torchscript_refusal``, ``export``, ``export_ef`` (rows with ``io``: a
package of other inputs and outputs than the model's own), ``cpp``, ``own_aoti``,
``aoti_latency``; ``meta`` for the
versions and machine) and the check's fields; a row whose check timed out or crashed has
``status`` ``timeout``/``crashed`` and a ``message``.  Unknown fields are ignored; missing
ones show as ``-``.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any

Row = dict[str, Any]
Format = Callable[[Any], str]

#: longest message shown in a cell (torchstitch's plan errors can be kilobytes on one line)
MESSAGE_CHARS = 160


def text(value: Any) -> str:
    """A table cell: one line, pipes escaped, long messages cut."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    flat = " ".join(str(value).split()).replace("|", "\\|")
    return flat if len(flat) <= MESSAGE_CHARS else flat[: MESSAGE_CHARS - 1] + "…"


def code(value: Any) -> str:
    return f"`{text(value)}`"


def fixed(digits: int, suffix: str = "") -> Format:
    return lambda value: f"{value:.{digits}f}{suffix}"


def diff(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def cell(row: Row, key: str, fmt: Format = text) -> str:
    value = row.get(key)
    return "-" if value is None else fmt(value)


Columns = list[tuple[str, str, Format]]

EAGER: Columns = [
    ("model", "model", text),
    ("atoms", "atoms", text),
    ("edges", "edges", text),
    ("energy", "energy", fixed(6)),
    ("max abs force", "max_force", fixed(4)),
    ("outputs", "outputs", lambda v: ", ".join(v)),
    ("modules", "modules", text),
    ("parameters", "parameters", text),
    ("status", "status", text),
]
TORCHSCRIPT: Columns = [
    ("model", "model", text),
    ("call", "call", code),
    ("e3nn s", "e3nn_s", fixed(3)),
    ("torchstitch s", "torchstitch_s", fixed(3)),
    ("ratio", "ratio", fixed(2, "x")),
    ("e3nn load s", "e3nn_load_s", fixed(3)),
    ("torchstitch load s", "torchstitch_load_s", fixed(3)),
    ("identical, first call", "identical_first", text),
    ("identical, warm", "identical_warm", text),
    ("e3nn's own first = warm", "e3nn_stable", text),
    ("max abs diff", "max_diff", diff),
    ("vs eager", "vs_eager", diff),
    ("status", "status", text),
    ("error", "error", text),
    ("message", "message", text),
]
#: what a package built from the model itself takes and gives (the rows without ``io``)
OWN_IO = "the model's own"
IO_COLUMN = ("inputs -> outputs", "io", text)

EXPORT: Columns = [
    ("model", "model", text),
    IO_COLUMN,
    ("status", "status", text),
    ("stage", "stage", text),
    ("root_strategy", "root_strategy", code),
    ("error", "error", text),
    ("path", "path", code),
    ("first line of the message", "message", text),
    ("export s", "build_s", fixed(1)),
    ("via", "via", text),
    ("dynamic (the plan's note)", "dynamic", code),
    ("export max abs diff", "export_diff", diff),
    ("AOTI build s", "aoti_build_s", fixed(1)),
    ("AOTI max abs diff", "aoti_diff", diff),
]
CPP: Columns = [
    ("model", "model", text),
    IO_COLUMN,
    ("status", "status", text),
    ("atoms", "atoms", text),
    ("output tensors", "outputs", text),
    ("C++ vs Python max abs diff", "cpp_diff", diff),
    ("C++ vs eager", "vs_eager", diff),
    ("loader build s", "build_s", fixed(1)),
    ("stage", "stage", text),
    ("error", "error", text),
    ("message", "message", text),
]
OWN_AOTI: Columns = [
    ("model", "model", text),
    ("status", "status", text),
    ("build s", "build_s", fixed(1)),
    ("max abs diff", "aoti_diff", diff),
    ("stage", "stage", text),
    ("error", "error", text),
    ("message", "message", text),
]
#: issue 14's targets for torchstitch's AOTI against NequIP's own on the same model
BUILD_TARGET = 0.8
LATENCY_TARGET = 1.05


def table(columns: Columns, rows: Iterable[Row]) -> list[str]:
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(cell(row, key, fmt) for _, key, fmt in columns) + " |" for row in rows]
    return lines


def of(rows: list[Row], section: str) -> list[Row]:
    return [row for row in rows if row.get("section") == section]


def models(rows: list[Row]) -> list[tuple[str, str]]:
    """(peer, model) pairs in the order the rows first name them."""
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        if row.get("section") != "meta" and row.get("model"):
            seen[(row.get("peer", "-"), row["model"])] = None
    return list(seen)


# -- summary ------------------------------------------------------------------------------


def _failure(row: Row) -> str:
    if row.get("status") in ("timeout", "crashed"):
        return f"{row['status']}: {text(row.get('message', ''))}"
    where = f" at {code(row['path'])}" if row.get("path") else ""
    stage = f" ({row['stage']})" if row.get("stage") else ""
    return f"{row.get('error', row.get('status'))}{where}{stage}"


def _drop_in_summary(rows: list[Row]) -> str:
    parts = []
    for row in rows:
        name = code(row.get("call", "?"))
        if row.get("status") not in ("ok", "differs"):
            parts.append(f"{name}: fails, {_failure(row)}")
            continue
        if row.get("identical_warm"):
            same = "bit-identical"
        else:
            same = f"differs by {diff(row.get('max_diff') or 0)}"
        if row.get("identical_warm") and not row.get("identical_first"):
            same += " once warm"
        ratio = f", {row['ratio']:.2f}x e3nn's compile time" if row.get("ratio") is not None else ""
        if row.get("e3nn_load_s") and row.get("torchstitch_load_s") is not None:
            ratio += f", loads in {row['torchstitch_load_s'] / row['e3nn_load_s']:.2f}x e3nn's time"
        parts.append(f"{name}: {same}{ratio}")
    return "; ".join(parts) or "-"


def _export_summary(rows: list[Row]) -> str:
    parts = []
    for row in rows:
        if row.get("status") == "ok":
            parts.append(f"works: max abs diff {diff(row.get('aoti_diff') or 0)} at every size")
        elif row.get("status") == "differs":
            worst = row.get("aoti_diff") or row.get("export_diff") or 0
            parts.append(f"runs, differs from eager by {diff(worst)}")
        else:
            parts.append(f"fails: {_failure(row)}")
    return "; ".join(parts) or "-"


def _cpp_summary(rows: list[Row]) -> str:
    parts = []
    for row in rows:
        if row.get("status") == "ok":
            parts.append(
                f"C++ loader at {row.get('atoms')} atoms: equals Python ({diff(row.get('cpp_diff') or 0)})"
            )
        elif row.get("status") == "skipped":
            parts.append(f"C++ loader: skipped, {text(row.get('message', ''))}")
        else:
            parts.append(f"C++ loader: {_failure(row)}")
    return "; ".join(parts)


def _own_aoti_summary(rows: list[Row], versus: Row | None) -> str:
    parts = []
    for row in rows:
        if row.get("status") in ("ok", "differs"):
            equal = "" if row["status"] == "ok" else f", differs by {diff(row.get('aoti_diff') or 0)}"
            parts.append(f"built in {row.get('build_s', 0):.0f} s{equal}")
        else:
            parts.append(f"fails: {_failure(row)}")
    if versus is not None and versus.get("build_ratio") is not None:
        parts.append(f"torchstitch builds in {versus['build_ratio']:.2f}x its time")
    if versus is not None and versus.get("latency_ratio") is not None:
        parts.append(f"runs in {versus['latency_ratio']:.2f}x its latency")
    return "; ".join(parts) or "-"


#: torchstitch's packages against NequIP's: (export check, suffix of its keys in the latency row)
VERSUS_CHECKS = (("export", ""), ("export_ef", "_ef"))


def versus_nequip(rows: list[Row]) -> list[Row]:
    """Per model with NequIP's own package and per torchstitch package of it (the model's
    own inputs and outputs; NequIP's): both builds and both latencies, side by side."""
    out = []
    for peer, model in models(rows):
        mine = [row for row in rows if row.get("peer") == peer and row.get("model") == model]
        own, latency = of(mine, "own_aoti"), of(mine, "aoti_latency")
        if not own:
            continue
        for check, suffix in VERSUS_CHECKS:
            export = of(mine, check)
            if export:
                out.append(_versus_row(model, own[0], export[0], latency[0] if latency else None, suffix))
    return out


def _versus_row(model: str, own: Row, export: Row, latency: Row | None, suffix: str) -> Row:
    row: Row = {"model": model, "io": export.get("io", OWN_IO), "nequip_build_s": own.get("build_s")}
    if export.get("aoti_build_s") is not None:
        row["torchstitch_build_s"] = export["build_s"] + export["aoti_build_s"]
        if row["nequip_build_s"]:
            row["build_ratio"] = row["torchstitch_build_s"] / row["nequip_build_s"]
    if latency is not None and latency.get("status") == "ok":
        row.update(
            atoms=latency.get("atoms"),
            eager_ms=latency.get("eager_ms"),
            nequip_ms=latency.get("nequip_ms"),
            torchstitch_ms=latency.get(f"torchstitch{suffix}_ms"),
            latency_ratio=latency.get(f"ratio{suffix}"),
        )
    elif latency is not None:
        row["latency_error"] = _failure(latency)
    return row


def _verdict(limit: float) -> Format:
    return lambda value: f"{value:.2f}x ({'PASS' if value <= limit else 'MISS'}, <= {limit}x)"


VERSUS: Columns = [
    ("model", "model", text),
    ("torchstitch's inputs -> outputs", "io", text),
    ("NequIP build s", "nequip_build_s", fixed(1)),
    ("torchstitch build s (compile + save)", "torchstitch_build_s", fixed(1)),
    ("build ratio", "build_ratio", _verdict(BUILD_TARGET)),
    ("atoms", "atoms", text),
    ("eager ms", "eager_ms", fixed(3)),
    ("NequIP AOTI ms", "nequip_ms", fixed(3)),
    ("torchstitch AOTI ms", "torchstitch_ms", fixed(3)),
    ("latency ratio", "latency_ratio", _verdict(LATENCY_TARGET)),
    ("latency not measured", "latency_error", text),
]


def summary(rows: list[Row]) -> list[str]:
    lines = [
        '| model | peer | TorchScript drop-in vs e3nn.util.jit | ts.compile(target="export") + AOTI '
        "| NequIP's own AOTI |",
        "|---|---|---|---|---|",
    ]
    # the like-for-like comparison where there is one (the last row of each model)
    versus = {row["model"]: row for row in versus_nequip(rows)}
    for peer, model in models(rows):
        mine = [row for row in rows if row.get("peer") == peer and row.get("model") == model]
        cpp = [row for row in of(mine, "cpp") if "io" not in row]  # of the model's own package
        export = "; ".join(filter(None, [_export_summary(of(mine, "export")), _cpp_summary(cpp)]))
        own = _own_aoti_summary(of(mine, "own_aoti"), versus.get(model))
        lines.append(f"| {model} | {peer} | {_drop_in_summary(of(mine, 'torchscript'))} | {export} | {own} |")
    return lines


# -- the document -------------------------------------------------------------------------


def _with_io(rows: list[Row]) -> list[Row]:
    return [{"io": OWN_IO, **row} for row in rows]


def header(rows: list[Row], date: str, commit: str | None, not_run: dict[str, str]) -> list[str]:
    at = f" at torchstitch commit `{commit}`" if commit else ""
    lines = [
        "# Real peers: integration checks",
        "",
        f"Written by `bash .ci/peers` on {date}{at} (issue 14, item 7); the method is in the",
        "docstrings of `benchmarks/peers/`.  Tiny float64 models built in code (no downloads), on",
        "clusters of 6, 9 and 12 atoms; compiled models are checked against eager.  One thread;",
        "times drift by ~25% between runs on this shared machine.",
        "",
    ]
    metas = of(rows, "meta")
    if metas:
        lines.append(f"Machine: {metas[0].get('machine', '-')}")
        lines.append("")
    for meta in metas:
        pins = ", ".join(f"{name} {version}" for name, version in meta.get("versions", {}).items())
        lines.append(f"- `.peers/{meta.get('peer')}`: {pins}")
    for peer, why in not_run.items():
        lines.append(f"- `.peers/{peer}`: not run: {why}")
    return [*lines, ""]


def notes(rows: list[Row], section: str, key: str) -> list[str]:
    """One bullet per distinct ``key`` of the section's rows (e.g. each model's config)."""
    seen: dict[str, None] = {}
    for row in of(rows, section):
        if row.get(key):
            seen[f"- {row.get('model', '-')}: {text(row[key])}"] = None
    return list(seen)


def refusals(rows: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in of(rows, "torchscript_refusal"):
        said = f"{row['error']}: {row.get('message', '')}" if row.get("error") else row.get("status", "")
        seen[f"- `{row.get('tool', '-')}` ({row.get('peer')}): {row.get('status')}: {text(said)}"] = None
    return list(seen)


def render(
    rows: list[Row], date: str, commit: str | None = None, not_run: dict[str, str] | None = None
) -> str:
    """The whole Markdown document for ``rows``."""
    lines = header(rows, date, commit, not_run or {})
    lines += ["## Summary", "", *summary(rows), ""]
    lines += ["## Models and eager outputs", "", *notes(rows, "eager", "config"), ""]
    lines += [*table(EAGER, of(rows, "eager")), ""]
    lines += [
        "## TorchScript drop-in",
        "",
        "`torchstitch.plugins.e3nn.jit.<call>` against `e3nn.util.jit.<call>` on deep copies of the",
        "model: compile seconds (median of 3, interleaved), CPU seconds of `torch.jit.load` of each",
        "saved model (median of 3, interleaved: what a libtorch host pays per load), and whether the",
        "outputs are bit-identical",
        "on the first call and after 3 more, at 6 and 9 atoms.  TorchScript's profiling executor",
        "optimizes a graph after its first runs, which can change the last bits: `e3nn's own first",
        "= warm` says whether e3nn's model does that.  e3nn's model is called first, so where it",
        "does, a first-call difference is the executor's, not the drop-in's; `ok` means the warm",
        "outputs are bit-identical.",
        "",
        *table(TORCHSCRIPT, of(rows, "torchscript")),
        "",
    ]
    said = refusals(rows)
    if said:
        lines += ["What the peers' own tools say:", "", *said, ""]
    lines += [
        "## Export and AOTI through torchstitch",
        "",
        '`ts.compile(model, target="export", example_inputs=[set6, set9])` with no dims, rules or',
        "strategy options (`root_strategy` where nothing claims the model's root), then",
        '`ts.save(compiled, "model.pt2", format="aoti")` and `ts.load`; both run on 6, 9 and 12 atoms',
        "(12 never seen at compile time) and are compared with eager (energies, forces, and the",
        "virials and stress where the model computes them; a NaN stress where eager's is NaN counts",
        "as equal).  `stage` is where it stopped; `via` and `dynamic` are the plan's notes on the",
        "root.  Each check runs in a fresh process with an empty Inductor cache.  `inputs -> outputs`:",
        f"{OWN_IO!r} is the model as it is; `pair_nequip inputs -> energies, forces` is what NequIP's",
        'own pipeline compiles (below), exported as a user would (docs/deploying.md, "Only the',
        "outputs you use\"): a wrapper returning energies and forces, given pair_nequip's inputs.",
        "",
        *table(EXPORT, _with_io(of(rows, "export") + of(rows, "export_ef"))),
        "",
        "The same package loaded from C++ (`cpp/deploy_check.cpp`, built against the peer",
        "environment's torch with the command of tests/test_cpp_deploy.py and cached in",
        "`.peers/cpp`), on the 12-atom system's inputs flattened in the order of the package's",
        "`torchstitch.inputs`; its output tensors against the package's in Python, and against eager.",
        "",
        *table(CPP, _with_io(of(rows, "cpp"))),
        "",
    ]
    own = of(rows, "own_aoti")
    if own:
        lines += [
            "## NequIP's own AOTI pipeline (reference)",
            "",
            "`nequip.utils.aot.aot_export_model` (what `nequip-compile --mode aotinductor` calls) on",
            "the same model, compiled on the 6-atom system with dynamic nodes and edges, asked for",
            "energies and forces (pair_nequip's outputs), in a fresh process with an empty Inductor",
            "cache (one-time costs included, as for torchstitch's AOTI build above); its outputs at",
            "6, 9 and 12 atoms against eager.",
            "",
            *table(OWN_AOTI, own),
            "",
            "Against torchstitch's packages: build seconds of each (torchstitch: `ts.compile` +",
            '`ts.save(format="aoti")`, from the export checks), and the packages timed side by side in',
            "one process at 9 atoms, one thread, median of interleaved rounds.  NequIP's takes",
            "pair_nequip's inputs and returns energies and forces.  Of torchstitch's, the like-for-like",
            "one does the same (`pair_nequip inputs -> energies, forces`); the other takes the model's",
            "whole input dict and returns every output, stress and virial too (`the model's own`).",
            "torchstitch's check every call against the package's input spec.  Targets (issue 14),",
            f"for the like-for-like rows: build <= {BUILD_TARGET}x, latency <= {LATENCY_TARGET}x.",
            "",
            *table(VERSUS, versus_nequip(rows)),
            "",
        ]
    return "\n".join(lines)


def read_rows(paths: Iterable[str]) -> list[Row]:
    """Every row of the JSON-lines files, in order."""
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Assemble the peers' rows into a Markdown table.")
    parser.add_argument("rows", nargs="*", help="JSON-lines files written by the check scripts")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    parser.add_argument("--commit", help="the torchstitch commit measured")
    parser.add_argument(
        "--not-run", action="append", default=[], metavar="PEER=WHY", help="a peer not run, and why"
    )
    args = parser.parse_args(argv)
    not_run = dict(item.split("=", 1) for item in args.not_run)
    document = render(read_rows(args.rows), args.date, args.commit, not_run)
    with open(args.out, "w") as f:
        f.write(document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
