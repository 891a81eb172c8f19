"""Deployment check: a C++ program built against the wheel's libtorch loads and runs artifacts."""

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import torchstitch as ts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
]

SOURCE = Path(__file__).resolve().parents[1] / "cpp" / "deploy_check.cpp"
CODES = {torch.float32: 0, torch.float64: 1, torch.int64: 2}
DTYPES = {v: k for k, v in CODES.items()}


def write_tensors(path, tensors):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(tensors)))
        for t in tensors:
            t = t.contiguous()
            f.write(struct.pack("<ii", CODES[t.dtype], t.dim()))
            f.write(struct.pack(f"<{t.dim()}q", *t.shape))
            f.write(t.numpy().tobytes())


def read_tensors(path):
    data = Path(path).read_bytes()
    (count,), offset = struct.unpack_from("<i", data), 4
    out = []
    for _ in range(count):
        code, ndim = struct.unpack_from("<ii", data, offset)
        offset += 8
        shape = struct.unpack_from(f"<{ndim}q", data, offset)
        offset += 8 * ndim
        t = torch.empty(shape, dtype=DTYPES[code])
        n = t.numel() * t.element_size()
        t.view(-1).numpy().view("u1")[:] = bytearray(data[offset : offset + n])
        offset += n
        out.append(t)
    return out


def build_command(compiler, output):
    """The full g++ command line for the deployment check, linked against this torch."""
    from torch.utils.cpp_extension import include_paths, library_paths

    lib = library_paths()[0]
    command = [compiler, "-std=c++20", "-O1", "-w", str(SOURCE), "-o", str(output)]
    command += [f"-I{p}" for p in include_paths()]
    command += [f"-L{lib}", f"-Wl,-rpath,{lib}", "-ltorch", "-ltorch_cpu", "-lc10"]
    command += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"]
    return command


def cache_key(compiler):
    """Everything the binary depends on: the source, the compiler and its version, the
    include and library directories (the rpath points into them), and torch's version.

    The binary is cached in the system temp dir so that repeated runs skip a slow build;
    a clone in another folder, a rebuilt venv or another compiler gets its own entry.
    """
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    parts = [SOURCE.read_bytes(), version.encode(), torch.__version__.encode(), sys.platform.encode()]
    parts += [arg.encode() for arg in build_command(compiler, "OUT")]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]


@pytest.fixture(scope="session")
def deploy_check():
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) on PATH")
    binary = Path(tempfile.gettempdir()) / f"torchstitch-cpp-{cache_key(compiler)}" / "deploy_check"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        # a private name, then an atomic rename: concurrent sessions never see a partial binary
        fd, partial = tempfile.mkstemp(dir=binary.parent, prefix="deploy_check.")
        os.close(fd)
        try:
            done = subprocess.run(build_command(compiler, partial), capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            os.chmod(partial, 0o755)
            os.replace(partial, binary)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return binary


def test_cache_key_follows_the_library_directory(monkeypatch):
    """Two clones (two venvs) must not share a binary whose rpath names the other's libtorch."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) on PATH")
    import torch.utils.cpp_extension as cpp_extension

    here = cache_key(compiler)
    assert cache_key(compiler) == here
    monkeypatch.setattr(cpp_extension, "library_paths", lambda *a, **k: ["/elsewhere/torch/lib"])
    assert cache_key(compiler) != here


def run(binary, kind, model, inputs, tmp_path):
    write_tensors(tmp_path / "in.bin", inputs)
    done = subprocess.run(
        [str(binary), kind, str(model), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return read_tensors(tmp_path / "out.bin"), done.stdout


class Energy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, pos, index):
        h = torch.tanh(self.lin(pos))
        return h.sum(), torch.zeros(2, 4).index_add_(0, index, h)


def test_torchscript_artifact_runs_in_cpp(deploy_check, tmp_path):
    model = Energy()
    inputs = [torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])]
    ts.save(ts.script(model), tmp_path / "model.pt")
    outputs, _ = run(deploy_check, "torchscript", tmp_path / "model.pt", inputs, tmp_path)
    for got, want in zip(outputs, model(*inputs), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.skipif(sys.platform != "linux", reason="AOTInductor packages are built for this host")
def test_aoti_package_runs_in_cpp(deploy_check, tmp_path):
    model = Energy()
    engine = ts.Engine(
        rules=[ts.Rule("export", path="")],
        strategy_options={"export": {"dims": {"atoms": {"pos": 0, "index": 0}}}},
    )
    result = engine.compile(model, example_inputs=(torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])))
    ts.save(result, tmp_path / "model.pt2", format="aoti")
    inputs = [torch.randn(7, 3), torch.tensor([1, 0, 1, 1, 0, 0, 1])]
    outputs, stdout = run(deploy_check, "aoti", tmp_path / "model.pt2", inputs, tmp_path)
    assert 'torchstitch.inputs=["pos", "index"]' in stdout
    for got, want in zip(outputs, model(*inputs), strict=True):
        torch.testing.assert_close(got, want)
