"""progress=True: a one-line display over the nodes being compiled, on terminals only."""

import io

import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@ts.compile_mode("script")
class Scaled(torch.nn.Module):
    def forward(self, x):
        return x * 2.0


def model():
    return torch.nn.Sequential(Scaled(), torch.nn.Sequential(Scaled(), Scaled()))


def test_progress_names_every_compiled_node_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    m = model()
    compiled = ts.compile(m, progress=True)
    out = terminal.getvalue()
    for i, path in enumerate(["0", "1.0", "1.1"], start=1):
        assert f"[{i}/3]" in out and f"{path} (script)" in out
    assert out.endswith("\r")  # the line is cleared at the end
    x = torch.randn(2, 3)
    torch.testing.assert_close(compiled(x), m(x))


def test_progress_is_silent_when_not_a_terminal(monkeypatch):
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    ts.compile(model(), progress=True)
    assert pipe.getvalue() == ""


def test_no_progress_by_default(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    ts.compile(model())
    assert terminal.getvalue() == ""
