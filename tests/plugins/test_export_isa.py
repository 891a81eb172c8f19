"""Inductor's vector-ISA check beside an AOTInductor build (plugins/export/isa.py).

torch's check is replaced by a fake here: the real one builds programs with g++ (seconds),
and whether it ran beside the build is what is tested, not its answer.
"""

import functools
import threading

import pytest
import torch
from torch._inductor import cpu_vec_isa

from torchstitch.plugins.export.isa import isa_checked_alongside


@pytest.fixture
def program():
    return torch.export.export(torch.nn.Linear(3, 2), (torch.randn(4, 3),))


@pytest.fixture
def fake_check(monkeypatch):
    """torch's check, faked: ``asked`` holds the thread each ask came from; the check
    waits for ``release`` (so a test can see it run while the body runs)."""
    state = {"asked": [], "release": threading.Event(), "done": threading.Event(), "fail": False}

    def pick_vec_isa():
        state["asked"].append(threading.current_thread().name)
        assert state["release"].wait(timeout=30)
        state["done"].set()
        if state["fail"]:
            raise RuntimeError("g++ not found")
        return cpu_vec_isa.invalid_vec_isa

    monkeypatch.setattr(cpu_vec_isa, "pick_vec_isa", pick_vec_isa)
    # torch's answer is cached per process; a fresh cache says "not asked yet"
    monkeypatch.setattr(cpu_vec_isa, "valid_vec_isa_list", functools.cache(lambda: []))
    return state


def test_the_check_runs_in_another_thread_during_the_build_and_ends_with_it(program, fake_check):
    with isa_checked_alongside(program, {}):
        fake_check["release"].set()  # the check can only finish once the build is under way
        assert fake_check["done"].wait(timeout=30)
    assert fake_check["asked"] == ["torchstitch-vec-isa"]
    assert not any(t.name == "torchstitch-vec-isa" for t in threading.enumerate())


def test_the_build_is_not_held_up_by_the_check(program, fake_check):
    with isa_checked_alongside(program, {}):
        # the check is still waiting here: the body runs meanwhile
        assert not fake_check["done"].is_set()
        fake_check["release"].set()
    assert fake_check["done"].is_set()  # joined before the context ends


def test_a_failing_check_is_left_to_the_build_to_report(program, fake_check):
    fake_check["fail"] = True
    fake_check["release"].set()
    with isa_checked_alongside(program, {}):
        pass
    assert fake_check["asked"] == ["torchstitch-vec-isa"]


@pytest.mark.parametrize(
    "why",
    ["asked before in this process", "configs patch the C++ settings", "no CPU tensors"],
)
def test_no_thread_when_the_check_is_not_worth_starting(program, fake_check, why):
    configs = {}
    if why == "asked before in this process":
        cpu_vec_isa.valid_vec_isa_list()
    elif why == "configs patch the C++ settings":
        configs = {"cpp.vec_isa_ok": False}
    else:
        meta = torch.nn.Linear(3, 2, device="meta")
        program = torch.export.export(meta, (torch.randn(4, 3, device="meta"),))
    fake_check["release"].set()
    with isa_checked_alongside(program, configs):
        pass
    assert fake_check["asked"] == []
