"""Claims: who says which strategy compiles a module, with what strength, and the user's rules."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable
from typing import Any

import attrs
import torch

from .errors import PlanError

__all__ = [
    "BUILTIN_MODES",
    "Claim",
    "ClaimKind",
    "Rule",
    "compile_mode",
    "get_compile_mode",
    "set_compile_mode",
    "decorator_claim",
]

#: strategy names the decorator accepts without asking the plugin manager
BUILTIN_MODES = ("script", "trace", "unsupported", None)

# Class- and instance-level attribute written by @compile_mode / set_compile_mode.
# Distinct from e3nn's ``__e3nn_compile_mode__`` (read by the e3nn plugin) on purpose.
_MODE_ATTR = "__torchstitch_compile_mode__"
# Sentinel for "no decorator anywhere in the MRO".
_UNSET = object()


class ClaimKind(enum.IntEnum):
    """The kind of evidence behind a claim; a larger value is stronger."""

    #: nothing claimed the node: it is compiled as part of its nearest compiled ancestor
    DEFAULT = 0
    #: a plugin's rule by type or predicate ("every fx.GraphModule is scripted")
    RULE = 1
    #: a plugin reading another library's convention (e3nn's ``__e3nn_compile_mode__``)
    ATTRIBUTE = 2
    #: torchstitch's ``@compile_mode`` or ``set_compile_mode``
    DECORATOR = 3
    #: the caller's ``rules=``, and the root forced by ``script()`` / ``trace()``
    OVERRIDE = 4

    def __str__(self) -> str:
        return self.name.lower()


def _to_kind(value: ClaimKind | str) -> ClaimKind:
    if isinstance(value, ClaimKind):
        return value
    try:
        return ClaimKind[str(value).upper()]
    except KeyError:
        valid = ", ".join(str(k) for k in ClaimKind)
        raise ValueError(f"unknown claim kind {value!r}; valid kinds: {valid}") from None


@attrs.frozen
class Claim:
    """ "This node is compiled with strategy ``strategy``", and who says so.

    Plugins return claims from ``torchstitch_claim``.
    """

    #: name of the strategy (``"script"``, ``"trace"``, a plugin's name)
    strategy: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: strength of the evidence
    kind: ClaimKind = attrs.field(converter=_to_kind)
    #: who made the claim, for messages: ``"@compile_mode on pkg.Cls"``, ``"plugin e3nn"``
    claimant: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: why, in a few words
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "strategy": self.strategy,
            "kind": str(self.kind),
            "claimant": self.claimant,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------
# @compile_mode
# --------------------------------------------------------------------------


def is_known_compile_mode(mode: object) -> bool:
    """Whether ``mode`` is ``None`` or names a strategy of the default plugin manager
    (the built-in names are known without creating it)."""
    if mode in BUILTIN_MODES:
        return True
    if not isinstance(mode, str):
        return False
    # A plugin's strategy: only now is the default plugin manager worth creating.
    from .plugin_manager import default_strategy_names

    return mode in default_strategy_names()


def known_compile_modes() -> list[str]:
    """Every strategy name ``@compile_mode`` accepts (besides ``None``), sorted."""
    from .plugin_manager import default_strategy_names

    return sorted(set(default_strategy_names()) | {m for m in BUILTIN_MODES if m})


def _check_mode(mode: object) -> None:
    if mode in BUILTIN_MODES:
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


# --------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------

# a component: plain characters, or [class] / [!class] with at least one character
_COMPONENT = re.compile(r"^(?:[^.\[\]]|\[!?[^\]!][^\]]*\])+$")


def _compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a path glob to a regex.

    ``*`` matches within one dotted component, ``**`` matches any number of
    components (including none), ``?`` one character, ``[abc]``/``[!abc]`` a
    character class.  ``""`` matches only the root.
    """
    if pattern == "":
        return re.compile(r"\Z")
    parts = pattern.split(".")
    out: list[str] = []
    for i, part in enumerate(parts):
        if part == "**":
            if i == 0:
                out.append(".*" if len(parts) == 1 else r"(?:[^.]+\.)*")
            else:
                out.append(r"(?:\.[^.]+)*")
            continue
        if not part or not _COMPONENT.match(part) or "**" in part:
            raise PlanError(
                f"malformed path glob {pattern!r}: component {i} ({part!r}) is empty, has an "
                "unbalanced '[' or ']', or uses '**' inside a component"
            )
        # "**.x" already ends in a dot; "a.**.x" does not
        if i > 0 and not (i == 1 and parts[0] == "**"):
            out.append(r"\.")
        out.append(_component_regex(part))
    # "*" and friends never match the root's empty path; only "" and "**" do
    regex = ("" if pattern == "**" else r"(?!\Z)") + "".join(out)
    try:
        return re.compile(regex + r"\Z")
    except re.error as exc:
        raise PlanError(f"malformed path glob {pattern!r}: {exc}") from None


def _component_regex(part: str) -> str:
    rx = ""
    j = 0
    while j < len(part):
        c = part[j]
        if c == "*":
            rx += r"[^.]*"
        elif c == "?":
            rx += r"[^.]"
        elif c == "[":
            end = part.index("]", j)
            body = part[j + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            # keep ranges ("0-9") working; escape what regex classes treat specially
            body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            rx += "[" + ("^" if negate else "") + body + "]"
            j = end
        else:
            rx += re.escape(c)
        j += 1
    return rx


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@attrs.frozen(repr=False)
class Rule:
    """An override rule passed to ``compile(rules=...)``: the first matching rule wins.

    A rule matches a node when *every* given condition holds.

    :param strategy: the strategy to use, or ``None`` to force the node to
        inherit (compile as part of its parent) whatever else claims it.
    :param type: a class or tuple of classes (``isinstance``).
    :param path: a glob over dotted paths: ``*`` within one component, ``**``
        across components, ``""`` for the root.
    :param where: a predicate ``where(module, path) -> bool``.
    """

    strategy: str | None = attrs.field(validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    type: type | tuple[type, ...] | None = attrs.field(default=None, kw_only=True)
    path: str | None = attrs.field(default=None, kw_only=True)
    where: Callable[[torch.nn.Module, str], Any] | None = attrs.field(default=None, kw_only=True, eq=False)
    _regex: re.Pattern[str] | None = attrs.field(init=False, eq=False)

    @type.validator
    def _check_type(self, _attr, value):
        if value is None:
            return
        classes = value if isinstance(value, tuple) else (value,)
        if not classes or not all(inspect.isclass(c) for c in classes):
            raise TypeError(f"Rule(type=...) must be a class or a tuple of classes, got {value!r}")

    @path.validator
    def _check_path(self, _attr, value):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"Rule(path=...) must be a glob string, got {value!r}")

    @where.validator
    def _check_where(self, _attr, value):
        if value is not None and not callable(value):
            raise TypeError(f"Rule(where=...) must be callable, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.type is None and self.path is None and self.where is None:
            raise PlanError(f"Rule({self.strategy!r}) has no condition: give type=, path= or where=")
        regex = None if self.path is None else _compile_glob(self.path)
        object.__setattr__(self, "_regex", regex)

    def matches(self, module: torch.nn.Module, path: str) -> bool:
        """Whether the rule applies to ``module`` at ``path``."""
        if self.type is not None and not isinstance(module, self.type):
            return False
        if self._regex is not None and not self._regex.match(path):
            return False
        if self.where is not None and not self.where(module, path):
            return False
        return True

    def describe(self) -> str:
        """``Rule('trace', path='layers.*')``: how the rule shows in plans and errors."""
        parts = [repr(self.strategy)]
        if self.type is not None:
            classes = self.type if isinstance(self.type, tuple) else (self.type,)
            names = ", ".join(_type_name(c) for c in classes)
            parts.append(f"type={names}")
        if self.path is not None:
            parts.append(f"path={self.path!r}")
        if self.where is not None:
            parts.append(f"where={getattr(self.where, '__qualname__', repr(self.where))}")
        return f"Rule({', '.join(parts)})"

    __repr__ = describe
