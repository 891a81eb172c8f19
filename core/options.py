"""The options of one compile call, listed once: :class:`CompileOptions`.

``ts.compile``, ``ts.plan`` and :class:`~torchstitch.Engine` spell the same options
out in their signatures (for users and type checkers); :meth:`CompileOptions.from_arguments`
is the one place their sugar (``script_options``/``trace_options``, ``atol``/``rtol``)
becomes fields, and tests/core/test_options.py checks that the three signatures agree
with the fields here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .claims import Rule
from .verify import Tolerance

__all__ = ["CALL_ARGUMENTS", "CompileOptions", "ON_ERROR", "SUGAR", "option_arguments"]

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "fallback")


def _options_dict(value: Mapping[str, Any] | None, option: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{option} must be a dict of keyword arguments, got {type(value).__name__}")
    return dict(value)


def _plugin_tuple(value: Iterable[object] | None) -> tuple[object, ...] | None:
    return None if value is None else tuple(value)


def _check_on_error(_inst, _attr, value) -> None:
    if value not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, got {value!r}")


def _check_n_trace_checks(_inst, _attr, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"n_trace_checks must be an int >= 1, got {value!r}")


@attrs.frozen
class CompileOptions:
    """Everything that shapes one compile call except the model and its inputs."""

    #: override rules, first match wins
    rules: tuple[Rule, ...] = attrs.field(
        default=(), converter=lambda r: (r,) if isinstance(r, Rule) else tuple(r)
    )
    #: plugin objects to add and ``"no:NAME"`` to block; ``None``: the default plugin manager
    plugins: tuple[object, ...] | None = attrs.field(default=None, converter=_plugin_tuple)
    #: swap compiled children into the caller's modules once everything compiled
    in_place: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: claim descendants too; if false only the root is claimed
    recurse: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    #: how many distinct tracing inputs to ask providers for (and to record)
    n_trace_checks: int = attrs.field(default=1, validator=_check_n_trace_checks)
    #: keyword arguments for each strategy's compile, by strategy name
    strategy_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: compare traced nodes and the root with eager
    verify: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    #: ``"raise"`` or ``"fallback"`` (try the strategy's fallbacks, then leave the node to its parent)
    on_error: str = attrs.field(default="raise", validator=_check_on_error)
    #: verification tolerance (``None``: the strategy's own, else by dtype)
    tolerance: Tolerance = attrs.field(factory=Tolerance)
    #: freeze the compiled TorchScript root (inference artifacts; weights are folded into
    #: the graph, so the result no longer shares storage with the input): a finalize step
    #: of the TorchScript plugin
    freeze: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: show a one-line progress display on stderr while compiling (only on a terminal)
    progress: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    #: an artifact family (``"export"``) every compiled node is retargeted to; ``None``: as claimed
    target: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    #: folder of the compile cache (docs/cache.md); ``None``: ``$TORCHSTITCH_CACHE_DIR``, else none
    cache_dir: str | os.PathLike[str] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of((str, os.PathLike)))
    )

    def for_strategy(self, name: str) -> Mapping[str, Any]:
        """The options of the strategy ``name`` (``strategy_options[name]``; ``{}`` when none)."""
        return self.strategy_options.get(name, {})

    @classmethod
    def from_arguments(
        cls,
        *,
        script_options: Mapping[str, Any] | None = None,
        trace_options: Mapping[str, Any] | None = None,
        strategy_options: Mapping[str, Mapping[str, Any]] | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        plugins: Iterable[object | str] | None = None,
        rules: Sequence[Rule] = (),
        **fields: Any,
    ) -> CompileOptions:
        """The options from the keyword arguments of ``ts.compile``/``Engine``: ``script_options``
        and ``trace_options`` are ``strategy_options["script"/"trace"]``, ``atol``/``rtol``
        the ``tolerance``; the others are fields of the same name."""
        per_strategy = {
            k: _options_dict(v, f"strategy_options[{k!r}]")
            for k, v in _options_dict(strategy_options, "strategy_options").items()
        }
        for name, value in (("script", script_options), ("trace", trace_options)):
            if value is not None:
                per_strategy[name] = _options_dict(value, f"{name}_options")
        if isinstance(plugins, (str, bytes)):
            raise TypeError(f"plugins= must be a list, got the string {plugins!r}")
        return cls(
            rules=rules,
            plugins=plugins,
            strategy_options=per_strategy,
            tolerance=Tolerance(atol, rtol),
            **fields,
        )


#: keyword arguments of ``ts.compile`` and ``Engine`` that are not fields, and the field
#: each one sets (``from_arguments``)
SUGAR: dict[str, str] = {
    "script_options": "strategy_options",
    "trace_options": "strategy_options",
    "atol": "tolerance",
    "rtol": "tolerance",
}

#: arguments of ``ts.compile``/``ts.plan`` and ``Engine.compile``/``plan`` that belong to the
#: call (the model and its inputs), not to the options
CALL_ARGUMENTS = frozenset({"module", "example_inputs", "inputs", "root_strategy"})


def option_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The options among the arguments of ``ts.compile``, ``ts.plan`` or ``Engine.__init__``.

    Each of them spells the options out in its signature and passes them on with
    ``option_arguments(locals())`` as its first statement, so that an option is
    forwarded by its name alone (tests/core/test_options.py checks the signatures).

    :param arguments: the caller's ``locals()`` before it binds anything else.
    :returns: every argument but the call's own (:data:`CALL_ARGUMENTS`) and ``self``.
    """
    return {name: value for name, value in arguments.items() if name not in CALL_ARGUMENTS and name != "self"}
