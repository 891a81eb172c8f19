"""Which plan a compiled module was built with, carried by the compiled object itself.

``ts.compile`` returns a plain ``nn.Module``; ``ts.save(compiled, path)`` must still
embed the plan it was compiled with.  The plan rides in the compiled object's
``__dict__`` (never on the caller's modules), tagged with a weak reference to that
very object, so that:

- TorchScript's ``save``/``torch.save`` of the compiled module work as before (the
  tag pickles to nothing, and TorchScript never serialises Python attributes);
- a copy (``copy.deepcopy``), a re-scripted or a re-loaded module is a different
  object: its tag, if any, names another object, and it has no plan.
"""

from __future__ import annotations

import weakref
from typing import Any

from .ir import Plan

__all__ = ["attach_plan", "cache_dir_of", "plan_of"]

_KEY = "_torchstitch_plan"


class _PlanTag:
    """A plan and the one object it belongs to, and the compile cache folder it was
    compiled with (``None``: none was given to the compile call)."""

    __slots__ = ("cache_dir", "owner", "plan")

    def __init__(self, owner: Any, plan: Plan, cache_dir: str | None) -> None:
        self.owner = weakref.ref(owner)
        self.plan = plan
        self.cache_dir = cache_dir

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # a pickled copy is another object: it carries no plan, and needs no torchstitch to load
        return dict, ()

    def __repr__(self) -> str:
        return f"<torchstitch plan of {len(self.plan)} nodes>"


def attach_plan(module: Any, plan: Plan, *, cache_dir: str | None = None) -> bool:
    """Record that ``module`` was compiled with ``plan`` (and the ``cache_dir`` the compile
    call was given); ``False`` if it cannot carry one.

    Only call this on objects torchstitch created: it writes ``module.__dict__``.
    """
    state = getattr(module, "__dict__", None)
    if state is None:
        return False
    try:
        state[_KEY] = _PlanTag(module, plan, cache_dir)
    except TypeError:  # no weak references to this type
        return False
    return True


def cache_dir_of(module: Any) -> str | None:
    """The ``cache_dir`` the compile call that returned ``module`` was given, or ``None``
    (none given, or a module torchstitch did not return itself)."""
    tag = _tag_of(module)
    return None if tag is None else tag.cache_dir


def plan_of(module: Any) -> Plan | None:
    """The plan ``module`` was compiled with by torchstitch, or ``None``.

    ``None`` for a module torchstitch did not compile, and for a copy, a re-scripted
    or a re-loaded module (``ts.load(path).plan`` has the saved plan).
    """
    tag = _tag_of(module)
    return None if tag is None else tag.plan


def _tag_of(module: Any) -> _PlanTag | None:
    state = getattr(module, "__dict__", None)
    tag = None if state is None else state.get(_KEY)
    return tag if isinstance(tag, _PlanTag) and tag.owner() is module else None
