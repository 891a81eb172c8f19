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


@pytest.fixture(scope="session")
def deploy_check():
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) on PATH")
    from torch.utils.cpp_extension import include_paths, library_paths

    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / f"torchstitch-cpp-{key}" / "deploy_check"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        lib = library_paths()[0]
        command = [compiler, "-std=c++20", "-O1", "-w", str(SOURCE), "-o", str(binary) + ".tmp"]
        command += [f"-I{p}" for p in include_paths()]
        command += [f"-L{lib}", f"-Wl,-rpath,{lib}", "-ltorch", "-ltorch_cpu", "-lc10"]
        command += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}"]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        os.replace(str(binary) + ".tmp", binary)
    return binary


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
