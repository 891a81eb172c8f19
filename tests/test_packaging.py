"""Packaging: the repository root is the package, and a wheel holds only the package."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_from_any_directory(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torchstitch, pathlib; print(pathlib.Path(torchstitch.__file__).parent)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert pathlib.Path(out.stdout.strip()) == ROOT


@pytest.mark.slow
def test_wheel_holds_only_the_package(tmp_path):
    pytest.importorskip("setuptools")
    # build from a copy: setuptools writes build/ and *.egg-info/ into the source tree, and a
    # stale build/ from an earlier run would leak removed modules into the next wheel
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".peers", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("torchstitch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"torchstitch", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "torchstitch/__init__.py" in names
    assert "torchstitch/py.typed" in names
    assert "torchstitch/core/engine.py" in names
    unwanted = (
        "torchstitch/tests/",
        "torchstitch/benchmarks/",
        "torchstitch/examples/",
        "torchstitch/docs/",
        "torchstitch/.ci",
    )
    assert not [n for n in names if n.startswith(unwanted)]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[torchstitch]" in text and "e3nn = torchstitch.plugins.e3nn" in text
