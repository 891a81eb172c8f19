"""No tracked file names a folder of the machine it was written on.

Users and CI clone the project into any folder on any machine: a test that runs
the Python of one home folder's virtual environment, or a doc that points into one
checkout, passes only where it was written.  Paths that are the same everywhere (``/usr/bin/env``,
``/dev/null``, URLs) are fine; relative ones (``.venv/bin/python``) too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What counts as a folder of one machine: a home directory, a work or scratch
# folder, or anything inside a virtual environment or site-packages.  A path only
# counts where it starts a token: not after a word character, a dot, a colon (URLs)
# or another slash (so "https://host/home/x" and "a/home/b" are not absolute paths).
_START = r"(?<![\w.:/~$-])"
MACHINE_PATH = re.compile(
    _START
    + r"(?:"
    + r"/(?:home|Users)/[\w.-]+"  # someone's home
    + r"|/ro"
    r"ot(?=/|\b)"  # root's home (split so that this line does not match itself)
    + r"|/(?:work|workspace|srv|mnt|tmp)/[\w.-]+"  # work and scratch folders
    + r"|/(?:[\w.-]+/)*\.?venv/"  # inside a virtual environment
    + r"|/(?:[\w.-]+/)*site-packages/"  # inside an installation
    + r")"
    + r"|(?<![\w])[A-Za-z]:\\(?:Users|home)\\"  # Windows homes
)


def machine_paths(text: str) -> list[str]:
    """Every machine-specific absolute path in ``text``, as ``line:match``."""
    return [
        f"{number}: {match.group(0)}"
        for number, line in enumerate(text.splitlines(), 1)
        for match in MACHINE_PATH.finditer(line)
    ]


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listing.split("\0") if name]


def test_no_tracked_file_names_a_folder_of_this_machine():
    offenders = []
    for path in tracked_files():
        if not path.is_file():  # deleted in the work tree but still tracked
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        offenders += [f"{path.relative_to(ROOT)}:{hit}" for hit in machine_paths(text)]
    assert not offenders, "tracked files name folders of one machine:\n" + "\n".join(offenders)


# The samples are built from pieces so that this file itself stays clean.
H, W, V = "/ho" + "me", "/wo" + "rk", "ve" + "nv"


@pytest.mark.parametrize(
    "text",
    [
        f'subprocess.run(["{W}/{V}/bin/python", script])',
        f"cd {H}/alice/project",
        "export PATH=/ro" + "ot/.local/bin:$PATH",
        "/o" + f"pt/conda/envs/x/.{V}/bin/python",
        "/usr/lib/python3/site" + "-packages/torch",
        "C:" + "\\Users\\bob\\project",
        f"{W}/main/benchmarks/reference_models.py:174",
        "/t" + "mp/pytest-of-root/x",
    ],
)
def test_the_check_finds_machine_paths(text):
    assert machine_paths(text)


@pytest.mark.parametrize(
    "text",
    [
        "#!/usr/bin/env bash",
        "2>/dev/null",
        ".venv/bin/python -m pytest",
        "https://example.org/home/alice/page",
        "see docs/work/notes.md",
        "a ratio of 3/4, cores/root",
        "~/project",
        "tmp_path / 'x'",
    ],
)
def test_the_check_allows_portable_text(text):
    assert machine_paths(text) == []
