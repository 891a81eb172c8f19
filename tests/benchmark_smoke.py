"""Running a script of benchmarks/ in smoke mode, for the benchmarks' smoke tests."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_smoke(script: str, out: Path, results: str, table: str) -> tuple[dict, str, str]:
    """Run ``benchmarks/<script> --smoke --out <out>`` in a fresh interpreter; it must succeed.

    :param script: the benchmark's file name (``"run.py"``).
    :param out: the folder the benchmark writes its results to.
    :param results: the name of its JSON results file in ``out``.
    :param table: the name of its Markdown table in ``out``.
    :returns: the results, the table and the benchmark's stdout.
    """
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / results) as f:
        return json.load(f), (out / table).read_text(), proc.stdout
