"""core.provenance: the plan rides on the compiled object only, and copies do not inherit it."""

import copy
import pickle

import pytest
import torch

import torchstitch as ts
from torchstitch.core.provenance import attach_plan, plan_of


@pytest.fixture
def plan():
    return ts.plan(torch.nn.Sequential(torch.nn.Linear(2, 2)), rules=[ts.Rule("script", path="")])


def test_attached_plan_is_found_on_that_object_only(plan):
    module = torch.nn.Linear(2, 2)
    assert plan_of(module) is None
    assert attach_plan(module, plan)
    assert plan_of(module) is plan
    assert plan_of(copy.deepcopy(module)) is None
    assert plan_of(copy.copy(module)) is None


def test_a_module_carrying_a_plan_pickles_and_the_copy_has_none(plan, tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    attach_plan(module, plan)
    clone = pickle.loads(pickle.dumps(module))
    assert plan_of(clone) is None
    torch.save(module, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = torch.randn(3, 2)
    torch.testing.assert_close(loaded(x), module(x))
    assert plan_of(loaded) is None


def test_objects_without_a_dict_or_weak_references_carry_no_plan(plan):
    assert not attach_plan(3, plan)
    assert not attach_plan({}, plan)
    assert plan_of(3) is None and plan_of({}) is None
