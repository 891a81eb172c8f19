"""Inductor's CPU vector-ISA check, run beside an AOTInductor build instead of inside it.

Before it generates its first C++ kernel, Inductor asks which vector instruction sets
the CPU and the C++ compiler support (``torch._inductor.cpu_vec_isa.pick_vec_isa``): for
each candidate it builds a small program and loads it in a child process.  On an empty
Inductor cache that is about 7 s of g++ on this project's 2-core machines, on a warm one
about 1 s of probe processes, every new process.  Inductor asks it some 9 s into a build
of a small network, after lowering, which is Python on one core.

:func:`isa_checked_alongside` asks the same question in a thread as the build starts, so
the compiler runs on another core while the main thread lowers.  torch caches the answer
per process (``functools.cache``), so when lowering asks, it is there.  If lowering asks
first, it takes the lock torch holds per candidate's build, waits for it, and reuses the
built program: the answer is torch's own either way, and never computed twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["isa_checked_alongside"]

log = logging.getLogger(__name__)


@contextmanager
def isa_checked_alongside(
    program: torch.export.ExportedProgram, configs: Mapping[str, Any]
) -> Iterator[None]:
    """Run the body (an AOTInductor build of ``program`` with inductor ``configs``) while
    a thread runs Inductor's vector-ISA check; the thread is joined before this returns.

    Nothing is started when the program has no CPU tensors, when this process already
    has the answer, or when ``configs`` patch Inductor's C++ settings (``cpp.*``: the
    check reads the global settings, which the build patches only in its own thread).
    """
    thread = None
    if _worth_starting(program, configs):
        thread = threading.Thread(target=_check, name="torchstitch-vec-isa", daemon=True)
        thread.start()
    try:
        yield
    finally:
        if thread is not None:
            thread.join()


def _worth_starting(program: torch.export.ExportedProgram, configs: Mapping[str, Any]) -> bool:
    # what the check imports, imported here: two threads importing torch._inductor's
    # modules (which import each other) at once could deadlock on the import locks
    from torch._inductor import codecache, cpp_builder, cpu_vec_isa  # noqa: F401

    if any(str(key).startswith("cpp.") for key in configs):
        return False
    if cpu_vec_isa.valid_vec_isa_list.cache_info().currsize:  # asked before in this process
        return False
    tensors = [*program.state_dict.values(), *program.constants.values()]
    devices = {t.device.type for t in tensors if isinstance(t, torch.Tensor)}
    return not devices or "cpu" in devices


def _check() -> None:
    from torch._inductor import cpu_vec_isa

    try:
        log.debug("AOTInductor: vector ISA %s (checked beside the build)", cpu_vec_isa.pick_vec_isa())
    except Exception:  # the build asks again and reports its own failure
        log.debug("AOTInductor: vector ISA check beside the build failed", exc_info=True)
