"""Shared fixtures: every test gets its own plugin manager, never the process default."""

from __future__ import annotations

import sys

import pluggy
import pytest
import torch

import torchstitch as ts


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


AUTOLOAD_ENV = "TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD"


@pytest.fixture
def default_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    """A fresh default plugin manager without entry points, for this test's duration.

    ``ts.get_plugin_manager()`` returns it, and ``plugins=[...]`` calls build their
    private managers without entry points too.  Unit tests of the core and of the
    built-in plugins use it for every test (autouse in their conftest.py files), so
    that they do not depend on which third-party plugins are installed.
    """
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    fresh = ts.make_plugin_manager(autoload=False)
    # The one private hook point: the lazily created default that get_plugin_manager()
    # returns (its module's ``_default_pm``), found through the public function so that
    # the fixture follows the function wherever it is defined.
    home = sys.modules[ts.get_plugin_manager.__module__]
    monkeypatch.setattr(home, "_default_pm", fresh)
    assert ts.get_plugin_manager() is fresh, "get_plugin_manager() no longer reads _default_pm"
    return fresh


@pytest.fixture
def pm():
    """A fresh plugin manager, private to the test: the built-ins, and the entry points
    unless the test runs under ``default_plugin_manager`` (tests/core/, tests/plugins/builtin/)."""
    return ts.make_plugin_manager()


def _value(tensor: torch.Tensor):
    """A tensor's values, or what stands for them where there are none (lazy, meta)."""
    if isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):
        return "uninitialized"
    if tensor.is_meta:
        return ("meta", tensor.dtype, tuple(tensor.shape))
    return tensor.clone()


def state_of(module: torch.nn.Module) -> dict:
    """What must not change when torchstitch compiles ``module`` without ``in_place``."""
    return {
        "state_dict": {k: _value(v) for k, v in module.state_dict().items()},
        "modules": [(name, id(m)) for name, m in module.named_modules(remove_duplicate=False)],
        "dicts": {name: sorted(m.__dict__) for name, m in module.named_modules()},
    }


def assert_unchanged(module: torch.nn.Module, before: dict) -> None:
    after = state_of(module)
    assert after["modules"] == before["modules"], "submodule identities changed"
    assert after["dicts"] == before["dicts"], "attributes were added or removed"
    assert after["state_dict"].keys() == before["state_dict"].keys()
    for key, value in before["state_dict"].items():
        now = after["state_dict"][key]
        if isinstance(value, torch.Tensor) and isinstance(now, torch.Tensor):
            assert torch.equal(now, value), f"{key} changed"
        else:
            assert type(now) is type(value) and now == value, f"{key} changed"


@pytest.fixture
def watch():
    """``check = watch(model)`` records the model's state; ``check()`` asserts nothing changed
    (state_dict values, submodule identities, attribute names of every submodule)."""

    def watch(module: torch.nn.Module):
        before = state_of(module)
        return lambda: assert_unchanged(module, before)

    return watch
