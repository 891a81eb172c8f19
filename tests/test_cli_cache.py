"""``torchstitch cache info`` and ``torchstitch cache clear``."""

import pytest
import torch

import torchstitch as ts
from torchstitch.cli import main
from torchstitch.core.cache import ENV_VAR

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


def test_info_lists_the_entries_and_clear_removes_them(tmp_path, capsys):
    ts.compile(torch.nn.Linear(3, 3), root_strategy="script", cache_dir=tmp_path)
    assert main(["cache", "info", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "1 entries" in out and "oldest" in out and "script   <root> (torch.nn.modules.linear.Linear)" in out
    )
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_the_variable_names_the_folder_and_without_it_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert main(["cache", "info"]) == 0
    assert "0 entries" in capsys.readouterr().out
    monkeypatch.delenv(ENV_VAR)
    assert main(["cache", "clear"]) == 2
    assert ENV_VAR in capsys.readouterr().err
