"""Build ``deploy_check.cpp`` against the running interpreter's torch, run it, and read and
write the tensor files it takes.

Shared by the deployment test (tests/test_cpp_deploy.py, the main environment's torch) and
the peers' C++ check (benchmarks/peers/, each peer environment's torch): the same compile
command, the same cache key, the same file format.  Not part of the package.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().with_name("deploy_check.cpp")
#: dtype codes of deploy_check.cpp's tensor files
CODES = {torch.float32: 0, torch.float64: 1, torch.int64: 2, torch.bool: 3}
DTYPES = {v: k for k, v in CODES.items()}


def build_command(compiler: str, output: str | os.PathLike[str]) -> list[str]:
    """The full g++ command line for the deployment check, linked against this torch."""
    # imported here, so that a test can point library_paths elsewhere
    from torch.utils.cpp_extension import include_paths, library_paths

    lib = library_paths()[0]
    command = [compiler, "-std=c++20", "-O1", "-w", str(SOURCE), "-o", str(output)]
    command += [f"-I{p}" for p in include_paths()]
    command += [f"-L{lib}", f"-Wl,-rpath,{lib}", "-ltorch", "-ltorch_cpu", "-lc10"]
    command += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"]
    return command


def cache_key(compiler: str) -> str:
    """Everything the binary depends on: the source, the compiler and its version, the
    include and library directories (the rpath points into them), and torch's version.

    A clone in another folder, a rebuilt venv or another compiler gets its own entry.
    """
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    parts = [SOURCE.read_bytes(), version.encode(), torch.__version__.encode(), sys.platform.encode()]
    parts += [arg.encode() for arg in build_command(compiler, "OUT")]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


def build(compiler: str, cache: str | os.PathLike[str]) -> Path:
    """The deployment check's binary, built into ``cache`` unless it is there already.

    :param compiler: the C++ compiler (g++ or compatible).
    :param cache: the folder that keeps binaries between runs, one subfolder per
        :func:`cache_key`.
    :raises RuntimeError: the compiler failed (its last output lines in the message).
    """
    binary = Path(cache) / f"torchstitch-cpp-{cache_key(compiler)}" / "deploy_check"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    # a private name, then an atomic rename: concurrent runs never see a partial binary
    fd, partial = tempfile.mkstemp(dir=binary.parent, prefix="deploy_check.")
    os.close(fd)
    try:
        done = subprocess.run(build_command(compiler, partial), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stderr[-3000:]}")
        os.chmod(partial, 0o755)
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return binary


def write_tensors(path: str | os.PathLike[str], tensors: Sequence[torch.Tensor]) -> None:
    """``tensors`` in deploy_check.cpp's input format."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(tensors)))
        for t in tensors:
            t = t.detach().contiguous()
            f.write(struct.pack("<ii", CODES[t.dtype], t.dim()))
            f.write(struct.pack(f"<{t.dim()}q", *t.shape))
            f.write(t.numpy().tobytes())


def read_tensors(path: str | os.PathLike[str]) -> list[torch.Tensor | None]:
    """The tensors of a file deploy_check.cpp wrote; ``None`` for an undefined one."""
    data = Path(path).read_bytes()
    (count,), offset = struct.unpack_from("<i", data), 4
    out: list[torch.Tensor | None] = []
    for _ in range(count):
        code, ndim = struct.unpack_from("<ii", data, offset)
        offset += 8
        if code == -1:
            out.append(None)
            continue
        shape = struct.unpack_from(f"<{ndim}q", data, offset)
        offset += 8 * ndim
        t = torch.empty(shape, dtype=DTYPES[code])
        n = t.numel() * t.element_size()
        t.view(-1).numpy().view("u1")[:] = bytearray(data[offset : offset + n])
        offset += n
        out.append(t)
    return out


def run(
    binary: str | os.PathLike[str],
    kind: str,
    model: str | os.PathLike[str],
    inputs: Sequence[torch.Tensor],
    workdir: str | os.PathLike[str],
) -> tuple[list[torch.Tensor | None], str]:
    """Run the deployment check on ``model`` (``kind``: ``torchscript`` or ``aoti``).

    :returns: the output tensors (``None`` for an undefined one) and what the program printed.
    :raises RuntimeError: the program failed (its error output in the message).
    """
    workdir = Path(workdir)
    write_tensors(workdir / "in.bin", inputs)
    done = subprocess.run(
        [str(binary), kind, str(model), str(workdir / "in.bin"), str(workdir / "out.bin")],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deploy_check exited {done.returncode}: {done.stderr.strip()}")
    return read_tensors(workdir / "out.bin"), done.stdout
