"""Shared fixtures: every test gets its own plugin manager, never the process default."""

from __future__ import annotations

import pytest
import torch

import torchstitch as ts


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def pm():
    """A fresh plugin manager (built-ins and entry points), private to the test."""
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
