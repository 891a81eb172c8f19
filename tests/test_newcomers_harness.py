"""The newcomers check (``.ci/newcomers``, ``benchmarks/newcomers.py``) without transformers:
its driver's command line, its pins and its table.  The check itself runs in its own
environment with ``bash .ci/newcomers``, not here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import newcomers  # noqa: E402


def test_driver_refuses_an_unknown_argument_before_installing_anything():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "newcomers"), "--bogus"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown argument '--bogus'" in proc.stderr


def test_transformers_is_pinned_with_the_torch_ci_uses():
    lines = (ROOT / ".ci" / "peers-constraints-transformers.txt").read_text().splitlines()
    assert "torch==2.13.0" in lines
    assert any(line.startswith("transformers==") for line in lines)
    assert all(line.startswith("#") or "==" in line for line in lines if line.strip())


def test_the_table_has_a_row_per_model_and_says_where_a_road_failed():
    ok = {
        "model": "BERT (BertModel)",
        "config": "2 layers",
        "status": "ok",
        "dynamic": "s0 = input_ids[0]",
        "ts_compile_s": 2.0,
        "ts_save_s": 30.0,
        "torch_build_s": 31.0,
        "ts_export_diff": 0.0,
        "ts_aoti_diff": 4.8e-7,
        "torch_aoti_diff": 4.8e-7,
        "eager_ms": 1.0,
        "torchstitch_ms": 0.15,
        "torch_ms": 0.12,
    }
    failed = {
        "model": "GPT-2",
        "status": "failed",
        "stage": "torchstitch: ts.compile",
        "error": "E",
        "message": "a|b",
    }
    table = newcomers.report([ok, failed], "torch 2.13.0").splitlines()
    rows = [line for line in table if line.startswith("| BERT") or line.startswith("| GPT-2")]
    assert len(rows) == 2
    assert "| 1.25x |" in rows[0] and "`s0 = input_ids[0]`" in rows[0] and "4.8e-07" in rows[0]
    assert rows[1].endswith("| torchstitch: ts.compile: E: a\\|b |")  # a pipe in a message stays in its cell
