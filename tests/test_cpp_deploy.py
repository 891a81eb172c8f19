"""Deployment check: a C++ program built against the wheel's libtorch loads and runs artifacts."""

import os
import shutil
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

# the build, its cache key and the tensor files are shared with the peers' C++ check
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpp"))
import deploy_build  # noqa: E402


@pytest.fixture(scope="session")
def deploy_check():
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) on PATH")
    # cached in the system temp dir so that repeated runs skip a slow build
    return deploy_build.build(compiler, tempfile.gettempdir())


def test_cache_key_follows_the_library_directory(monkeypatch):
    """Two clones (two venvs) must not share a binary whose rpath names the other's libtorch."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) on PATH")
    import torch.utils.cpp_extension as cpp_extension

    here = deploy_build.cache_key(compiler)
    assert deploy_build.cache_key(compiler) == here
    monkeypatch.setattr(cpp_extension, "library_paths", lambda *a, **k: ["/elsewhere/torch/lib"])
    assert deploy_build.cache_key(compiler) != here


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
    outputs, _ = deploy_build.run(deploy_check, "torchscript", tmp_path / "model.pt", inputs, tmp_path)
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
    outputs, stdout = deploy_build.run(deploy_check, "aoti", tmp_path / "model.pt2", inputs, tmp_path)
    assert 'torchstitch.inputs=["pos", "index"]' in stdout
    for got, want in zip(outputs, model(*inputs), strict=True):
        torch.testing.assert_close(got, want)
