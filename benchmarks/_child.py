"""One measurement in a fresh Python process: the benchmark script again, with ``--child REQUEST``.

``deploy.py`` and ``export_cache.py`` build every artifact (and time latency) in a child
process of their own, with an environment of its own (one thread, a private Inductor
cache); the child prints its answer as one JSON line last on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping


def ask_child(script: str, request: dict, env: Mapping[str, str], what: str) -> tuple[dict, str]:
    """Run ``script --child <request as JSON>`` in a fresh interpreter and read its answer.

    :param script: the benchmark's file (its ``__file__``); its ``main`` handles ``--child``.
    :param request: what the child measures; it reaches the child as JSON.
    :param env: the child's whole environment.
    :param what: the measurement, for the error (``"build medium ts_aoti"``).
    :returns: the last JSON line the child printed, and its stderr.
    :raises RuntimeError: when the child fails or prints no JSON line; with its stderr's end.
    """
    proc = subprocess.run(
        [sys.executable, os.path.abspath(script), "--child", json.dumps(request)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1]), proc.stderr
