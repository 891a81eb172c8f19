"""Claims: who says which strategy compiles a module, with what strength, and the user's rules.

The user's ``@compile_mode`` annotation, which becomes a ``decorator`` claim, is in
``core/modes.py``.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable
from typing import Any

import attrs
import torch

from .errors import PlanError

__all__ = ["Claim", "ClaimKind", "Rule"]


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

    Plugins return claims from ``torchstitch_claim``.  A claim is ``portable`` when
    the claimant names the strategy only as *a* way to compile the module (e3nn's
    ``script`` means "scriptable": no data-dependent control flow), not as what its
    code needs (a user's ``@compile_mode("script")`` on a data-dependent branch).
    Under a compile ``target`` of another family, a portable claim goes to that
    family's stand-in strategy (one declaring ``Strategy.replaces``) even when the
    stand-in does not replace the claimed strategy, and inside a region of the target it
    inherits; a claim that is not portable goes only to a stand-in that replaces its
    strategy (else the plan fails), and its node is compiled on its own.
    """

    #: name of the strategy (``"script"``, ``"trace"``, a plugin's name)
    strategy: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: strength of the evidence
    kind: ClaimKind = attrs.field(converter=_to_kind)
    #: who made the claim, for messages: ``"@compile_mode on pkg.Cls"``, ``"plugin e3nn"``
    claimant: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: why, in a few words
    reason: str = ""
    #: whether the claimed strategy is one way to compile the module rather than a need of
    #: its code, so that a compile ``target`` of another family may take it (see above)
    portable: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def to_dict(self) -> dict[str, str | bool]:
        """The claim as JSON-ready data (the plan's JSON; :meth:`Node.from_dict` reads it back)."""
        return {
            "strategy": self.strategy,
            "kind": str(self.kind),
            "claimant": self.claimant,
            "reason": self.reason,
            "portable": self.portable,
        }


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
    #: ``path`` compiled (derived: not compared, not shown)
    _regex: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    @_regex.default
    def _compile_path(self) -> re.Pattern[str] | None:
        # defaults are made before validators run: a path that is no string is _check_path's
        return _compile_glob(self.path) if isinstance(self.path, str) else None

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
