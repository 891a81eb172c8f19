"""``@compile_mode`` and ``set_compile_mode``: the user's annotation of which strategy
compiles a class or an instance, read back as a ``decorator`` claim.

An unknown mode is refused when it is written, naming the valid ones; a plugin's
strategy name is checked against the default plugin manager's strategies, so this
module sits above ``plugin_manager`` (and ``claims``, which defines what a claim is,
below it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from .claims import Claim, ClaimKind
from .plugin_manager import builtin_strategy_names, default_strategy_names

__all__ = [
    "builtin_modes",
    "compile_mode",
    "get_compile_mode",
    "set_compile_mode",
    "decorator_claim",
    "is_known_compile_mode",
    "known_compile_modes",
]


def builtin_modes() -> tuple[str | None, ...]:
    """The modes known without the default plugin manager: the built-in plugins' strategy
    names (asked of them, not listed here) and ``None``."""
    return (*builtin_strategy_names(), None)


# Class- and instance-level attribute written by @compile_mode / set_compile_mode.
# Distinct from e3nn's ``__e3nn_compile_mode__`` (read by the e3nn plugin) on purpose.
_MODE_ATTR = "__torchstitch_compile_mode__"
# Sentinel for "no decorator anywhere in the MRO".
_UNSET = object()


def is_known_compile_mode(mode: object) -> bool:
    """Whether ``mode`` is ``None`` or names a strategy of the default plugin manager
    (the built-in names are known without creating it)."""
    if mode in builtin_modes():
        return True
    # A plugin's strategy: only now is the default plugin manager worth creating.
    return isinstance(mode, str) and mode in default_strategy_names()


def known_compile_modes() -> list[str]:
    """Every strategy name ``@compile_mode`` accepts (besides ``None``), sorted."""
    return sorted(set(default_strategy_names()) | {m for m in builtin_modes() if m})


def _check_mode(mode: object) -> None:
    if mode in builtin_modes():
        return
    if not isinstance(mode, str):
        raise TypeError(
            f"compile mode must be a strategy name (str) or None, got {type(mode).__name__}: "
            f"{mode!r}; valid modes: {_valid_modes_text()}"
        )
    if not is_known_compile_mode(mode):
        raise ValueError(f"unknown compile mode {mode!r}; valid modes: {_valid_modes_text()}")


def _valid_modes_text() -> str:
    return ", ".join(repr(n) for n in known_compile_modes()) + ", None"


def compile_mode(mode: str | None) -> Callable[[type], type]:
    """Class decorator: compile every instance of the class with strategy ``mode``.

    ``None`` cancels a mode inherited from a base class.  The nearest decorated
    class in the MRO wins; :func:`set_compile_mode` on an instance beats both.

    :param mode: ``"script"``, ``"trace"``, ``"unsupported"``, ``None``, or the
        name of a strategy a plugin registers.
    :raises ValueError: for an unknown mode (the message lists the valid ones).
    :raises TypeError: when the decorated object is not an ``nn.Module`` subclass.
    """
    _check_mode(mode)

    def decorator(cls: type) -> type:
        if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
            raise TypeError(
                f"@torchstitch.compile_mode can only decorate subclasses of torch.nn.Module, got {cls!r}"
            )
        # Written into the class's own __dict__, so subclasses inherit it through the MRO.
        setattr(cls, _MODE_ATTR, mode)
        return cls

    return decorator


def set_compile_mode(module: torch.nn.Module, mode: str | None) -> None:
    """Set the compile mode of one instance; it beats the class's ``@compile_mode``.

    This is the one place torchstitch writes to a user's module, at the user's
    request.  ``None`` makes the instance inherit even if its class is decorated.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"set_compile_mode expects a torch.nn.Module, got {type(module).__name__}")
    _check_mode(mode)
    module.__dict__[_MODE_ATTR] = mode


def get_compile_mode(module: torch.nn.Module) -> str | None:
    """The mode set by :func:`set_compile_mode` or ``@compile_mode``, or ``None``.

    Only torchstitch's own annotations are read here; what plugins claim (e3nn's
    attribute, rules) shows in :func:`torchstitch.plan`.
    """
    mode = module.__dict__.get(_MODE_ATTR, _UNSET)
    if mode is _UNSET:
        mode = getattr(type(module), _MODE_ATTR, None)
    return mode


def decorator_claim(module: torch.nn.Module) -> Claim | None:
    """The ``decorator`` claim for ``module``, or ``None`` if nothing (or ``None``) was set."""
    mode = module.__dict__.get(_MODE_ATTR, _UNSET)
    if mode is not _UNSET:
        if mode is None:
            return None
        return Claim(mode, ClaimKind.DECORATOR, "set_compile_mode on the instance")
    cls = type(module)
    # Read through the type, not the instance: nn.Module.__getattr__ is slow.
    mode = getattr(cls, _MODE_ATTR, None)
    if mode is None:
        return None
    owner = next(k for k in cls.__mro__ if _MODE_ATTR in k.__dict__)
    return Claim(mode, ClaimKind.DECORATOR, f"@compile_mode on {owner.__module__}.{owner.__qualname__}")
