"""Models a newcomer starts with: Hugging Face transformers, through the export road.

Run by ``bash .ci/newcomers`` inside its own environment (``.peers/transformers``: torch
2.13.0 and the transformers release pinned in ``.ci/peers-constraints-transformers.txt``);
writes ``benchmarks/NEWCOMERS_RESULTS.md``.  Tiny models built from configs (no downloads).

After one tiny AOTI build to warm the disk caches, for each model, each step in a fresh
process (one thread, an empty Inductor cache; a first AOTI build in a process pays
one-time costs that must not fall on one road only):

1. what a newcomer types: ``ts.compile(model, target="export", example_inputs=[a, b])``
   with two input sets of different sizes and nothing else (no claims, rules, dims or
   options), then ``ts.save(..., format="aoti")`` and ``ts.load``;
2. the same by hand with torch alone, as torch's docs show it: ``torch.export.export``
   with the dims written out, ``torch._inductor.aoti_compile_and_package``,
   ``aoti_load_package``;
3. both packages loaded in one process, checked against eager on an input of a size
   neither saw, and timed side by side (median of interleaved rounds,
   :func:`peers.harness.interleaved_ms`).

torchvision is not here: its PyPI wheels are CUDA builds whose C ops do not load with a
CPU torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers.harness import interleaved_ms  # noqa: E402

#: the inputs of a model for (batch, length)
Inputs = Callable[[int, int], tuple[torch.Tensor, ...]]


def _token_ids(batch: int, seq: int) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(batch * seq)),)


def _pixels(batch: int, _: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch)),)


def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
    )
    return BertModel(config)


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        vocab_size=100,
        n_positions=64,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def _vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    return ViTModel(config)


def _token_dims(max_seq: int) -> Callable[[], Any]:
    def dims() -> Any:
        dim = torch.export.Dim
        return ({0: dim("batch", min=1, max=1024), 1: dim("seq", min=2, max=max_seq)},)

    return dims


def _batch_dims() -> Any:
    return ({0: torch.export.Dim("batch", min=1, max=1024)},)


#: name -> (model builder, inputs by (batch, size), what torch's own export is told)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Inputs, Callable[[], Any], str]] = {
    "BERT (BertModel)": (_bert, _token_ids, _token_dims(512), "2 layers, hidden 32, 2 heads"),
    "GPT-2 (GPT2LMHeadModel)": (_gpt2, _token_ids, _token_dims(64), "2 layers, n_embd 32, use_cache=False"),
    "ViT (ViTModel)": (_vit, _pixels, _batch_dims, "2 layers, hidden 32, 32x32 images, patch 8"),
}
#: (batch, size) of the two compile-time input sets and of the unseen one
SETS = ((2, 8), (3, 12))
UNSEEN = (4, 10)


def _tensors(outputs: Any) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]


def _max_diff(got: Any, expected: Any) -> float:
    pairs = list(zip(_tensors(got), _tensors(expected), strict=True))
    return max(float((a - b).abs().max()) for a, b in pairs)


def _model_and_inputs(name: str) -> tuple[torch.nn.Module, Inputs, tuple[torch.Tensor, ...]]:
    build, inputs, _, _ = MODELS[name]
    torch.manual_seed(0)
    return build().eval(), inputs, inputs(*UNSEEN)


def torchstitch_road(name: str, workdir: Path) -> dict[str, Any]:
    """What a newcomer types: ``ts.compile`` with two input sets, ``ts.save`` AOTI, ``ts.load``."""
    import torchstitch as ts

    model, inputs, unseen = _model_and_inputs(name)
    row: dict[str, Any] = {"stage": "ts.compile"}
    start = time.perf_counter()
    compiled = ts.compile(model, target="export", example_inputs=[inputs(*s) for s in SETS])
    row["ts_compile_s"] = time.perf_counter() - start
    row["dynamic"] = dict(ts.plan_of(compiled).root.outcome.notes).get("dynamic", "-")
    with torch.no_grad():
        row["ts_export_diff"] = _max_diff(compiled(*unseen), model(*unseen))
    row["stage"] = "ts.save aoti"
    start = time.perf_counter()
    ts.save(compiled, workdir / "torchstitch.pt2", format="aoti")
    row["ts_save_s"] = time.perf_counter() - start
    return {**row, "stage": "done"}


def torch_road(name: str, workdir: Path) -> dict[str, Any]:
    """The same with torch alone, the dims written by hand."""
    model, inputs, _ = _model_and_inputs(name)
    start = time.perf_counter()
    program = torch.export.export(model, inputs(*SETS[0]), dynamic_shapes=MODELS[name][2]())
    torch._inductor.aoti_compile_and_package(program, package_path=str(workdir / "torch.pt2"))
    return {"torch_build_s": time.perf_counter() - start, "stage": "done"}


def compare(name: str, workdir: Path) -> dict[str, Any]:
    """Both packages against eager on the unseen size, and timed side by side."""
    import torchstitch as ts

    model, _, unseen = _model_and_inputs(name)
    ours = ts.load(workdir / "torchstitch.pt2")
    theirs = torch._inductor.aoti_load_package(str(workdir / "torch.pt2"))
    with torch.no_grad():
        expected = model(*unseen)
        row: dict[str, Any] = {
            "ts_aoti_diff": _max_diff(ours(*unseen), expected),
            "torch_aoti_diff": _max_diff(theirs(*unseen), expected),
        }
        ms = interleaved_ms(
            {
                "eager": lambda: model(*unseen),
                "torchstitch": lambda: ours(*unseen),
                "torch": lambda: theirs(*unseen),
            }
        )
    return {**row, **{f"{k}_ms": v for k, v in ms.items()}, "stage": "done"}


def warm_up(_: str, workdir: Path) -> dict[str, Any]:
    """One tiny AOTI build before the models, so that the first road timed does not also pay
    for reading the compiler and torch's headers from disk."""
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(4, 3),))
    torch._inductor.aoti_compile_and_package(program, package_path=str(workdir / "warm-up.pt2"))
    return {"stage": "done"}


#: the steps of one model, each in a fresh process (a first AOTI build in a process pays
#: one-time costs of ~20 s here, which must not fall on whichever road goes first)
STEPS: dict[str, Callable[[str, Path], dict[str, Any]]] = {
    "torchstitch": torchstitch_road,
    "torch": torch_road,
    "compare": compare,
}


def check(name: str) -> dict[str, Any]:
    """Every step of one model, in one work folder; a row of the table."""
    row: dict[str, Any] = {"model": name, "config": MODELS[name][3]}
    with tempfile.TemporaryDirectory() as workdir:
        for step in STEPS:
            got = run_child(name, step, workdir)
            row.update(got)
            if got.get("status") == "failed":
                return {**row, "stage": f"{step}: {got.get('stage')}"}
    return {**row, "status": "ok"}


def run_child(name: str, step: str, workdir: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(workdir, f"inductor-{step}"),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--step", step, "--workdir", workdir],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {
            "status": "failed",
            "stage": "died",
            "error": f"exit {proc.returncode}",
            "message": tail[:300],
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(name: str, step: str, workdir: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    try:
        return (warm_up if step == "warm-up" else STEPS[step])(name, workdir)
    except Exception as exc:  # the failure is the finding
        lines = str(exc).strip().splitlines()
        return {"status": "failed", "error": type(exc).__name__, "message": (lines[0] if lines else "")[:300]}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1e}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def report(rows: list[dict[str, Any]]) -> str:
    import transformers

    import torchstitch

    lines = [
        "# Models a newcomer starts with",
        "",
        "Written by `bash .ci/newcomers` (method in benchmarks/newcomers.py's docstring): tiny Hugging",
        'Face models built from configs; `ts.compile(model, target="export", example_inputs=[a, b])`',
        'with nothing else, then `ts.save(format="aoti")` + `ts.load`, against torch\'s own export +',
        "AOTI with the dims written by hand; each build in a fresh process with an empty Inductor",
        "cache; outputs against eager on a size neither saw; latency of both packages side by side",
        "in one process, one thread.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"torchstitch {torchstitch.__version__}.",
        f"Input sets (batch, length): {SETS[0]} and {SETS[1]}; checked on {UNSEEN}.",
        "",
        "| model | status | dynamic (the plan's note) | ts.compile s | ts.save aoti s "
        "| torch export + AOTI s | max abs diff: exported, AOTI, torch's AOTI | eager ms "
        "| torchstitch AOTI ms | torch AOTI ms | torchstitch / torch | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diffs = ", ".join(_fmt(row.get(k)) for k in ("ts_export_diff", "ts_aoti_diff", "torch_aoti_diff"))
        ours, theirs = row.get("torchstitch_ms"), row.get("torch_ms")
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
        error = "-"
        if row["status"] != "ok":
            error = f"{row.get('stage', '-')}: {row.get('error')}: {row.get('message')}"
        cells = [
            f"{row['model']} ({row.get('config', '')})",
            row["status"],
            f"`{_fmt(row.get('dynamic'))}`",
            *(_fmt(row.get(k), 1) for k in ("ts_compile_s", "ts_save_s", "torch_build_s")),
            diffs,
            *(_fmt(row.get(k)) for k in ("eager_ms", "torchstitch_ms", "torch_ms")),
            ratio,
            _fmt(error),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "NEWCOMERS_RESULTS.md"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.step, Path(args.workdir))))
        return 0
    with tempfile.TemporaryDirectory() as workdir:
        run_child("-", "warm-up", workdir)
    rows = []
    for name in MODELS:
        print(f"[newcomers] {name} ...", file=sys.stderr)
        rows.append(check(name))
    Path(args.out).write_text(report(rows))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(row["status"] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
