"""The plugin manager, and the per-call view through which the engine calls hooks."""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, StitchError, exception_summary
from .strategy import Strategy

__all__ = [
    "BUILTIN_PLUGINS",
    "PluginSet",
    "get_plugin_manager",
    "make_plugin_manager",
    "default_strategy_names",
]

log = logging.getLogger(__name__)

#: built-in plugins, registered by name like pytest's default plugins (blockable: ``"no:trace"``)
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("compile_mode", "torchstitch.strategies.compile_mode"),
    ("script", "torchstitch.strategies.script"),
    ("trace", "torchstitch.strategies.trace"),
    ("unsupported", "torchstitch.strategies.unsupported"),
    ("format.torchscript", "torchstitch.strategies.torchscript_format"),
    # registered in reverse order of precedence: pluggy calls the latest registered first
    ("inputs.recorded", "torchstitch.strategies.inputs:RecordedInputs"),
    ("inputs.method", "torchstitch.strategies.inputs:MakeTracingInputs"),
    ("inputs.caller", "torchstitch.strategies.inputs:CallerInputs"),
)

AUTOLOAD_ENV = "TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD"
DEBUG_ENV = "TORCHSTITCH_DEBUG"

_default_pm: pluggy.PluginManager | None = None
_default_lock = threading.Lock()


def _load_builtin(target: str) -> object:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)() if attr else module


def _plugin_name(plugin: object) -> str:
    name = getattr(plugin, "name", None) or getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else type(plugin).__qualname__


def make_plugin_manager(
    plugins: Iterable[object | str] = (), *, autoload: bool | None = None
) -> pluggy.PluginManager:
    """A new plugin manager: hookspecs, built-ins, entry points, then ``plugins``.

    :param plugins: plugin objects to register, or ``"no:NAME"`` to block the
        plugin registered under ``NAME`` (built-in or entry point).
    :param autoload: load the ``torchstitch`` entry-point group; by default
        unless ``TORCHSTITCH_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value.
    """
    extra: list[object] = []
    blocked: list[str] = []
    for item in plugins:
        if isinstance(item, str):
            if not item.startswith("no:") or len(item) == 3:
                raise ValueError(f"plugins= takes plugin objects or 'no:NAME' strings, got {item!r}")
            blocked.append(item[3:])
        else:
            extra.append(item)

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for name, target in BUILTIN_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(_load_builtin(target), name=name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    for plugin in extra:
        name = _plugin_name(plugin)
        if pm.is_registered(plugin):
            continue
        if pm.has_plugin(name):
            raise ValueError(f"a plugin named {name!r} is already registered; give yours a `name`")
        pm.register(plugin, name=name)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide default plugin manager, created on first use.

    Register plugins on it for every later call, or pass ``plugins=`` to a
    single call instead (that builds a private manager and leaves this one alone).
    """
    global _default_pm
    if _default_pm is None:
        with _default_lock:
            if _default_pm is None:
                _default_pm = make_plugin_manager()
    return _default_pm


def default_strategy_names() -> tuple[str, ...]:
    """Names of the strategies the default plugin manager provides."""
    return tuple(PluginSet(get_plugin_manager()).strategies)


class PluginSet:
    """The engine's view of a plugin manager for one call: strategies resolved once,
    each hook implementation called on its own so failures name their plugin."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        #: TORCHSTITCH_DEBUG: log every hook implementation's call and answer (DEBUG level)
        self._debug = bool(os.environ.get(DEBUG_ENV))
        self._impl_cache: dict[str, list[pluggy.HookImpl]] = {}
        self._claimers: list[tuple[pluggy.HookImpl, Any, tuple[str, ...]]] | None = None
        #: strategy name -> Strategy
        self.strategies: dict[str, Strategy] = {}
        #: strategy name -> name of the plugin that provides it
        self.providers: dict[str, str] = {}
        # registration order (pluggy calls newest first): a later plugin re-using a
        # strategy name is the one blamed
        for plugin, result in reversed(self.call_all("torchstitch_strategies")):
            if not isinstance(result, (list, tuple)) or not all(isinstance(s, Strategy) for s in result):
                raise PluginError(
                    f"must return a list of torchstitch.Strategy, got {result!r}",
                    plugin=plugin,
                    hook="torchstitch_strategies",
                )
            for strategy in result:
                if strategy.name in self.strategies:
                    raise PluginError(
                        f"strategy {strategy.name!r} is already provided by plugin "
                        f"{self.providers[strategy.name]!r}; block one of them with "
                        f"plugins=['no:NAME']",
                        plugin=plugin,
                        hook="torchstitch_strategies",
                    )
                self.strategies[strategy.name] = strategy
                self.providers[strategy.name] = plugin

    @classmethod
    def from_plugins(cls, plugins: Iterable[object | str] | None) -> PluginSet:
        """The default manager when ``plugins`` is ``None``, else a private one with them."""
        if plugins is None:
            return cls(get_plugin_manager())
        if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
            raise TypeError(
                f"plugins= must be a list of plugin objects and 'no:NAME' strings, got {plugins!r}"
            )
        return cls(make_plugin_manager(plugins))

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        cached = self._impl_cache.get(hook_name)
        if cached is not None:
            return cached
        caller = getattr(self.pm.hook, hook_name)
        # pluggy calls the last implementation first (tryfirst ones sit at the end)
        impls = list(reversed(caller.get_hookimpls()))
        for impl in impls:
            if impl.wrapper or impl.hookwrapper:
                raise PluginError(
                    "hook wrappers are not supported on torchstitch hooks; "
                    "implement the hook plainly (tryfirst/trylast order it)",
                    plugin=impl.plugin_name,
                    hook=hook_name,
                )
        self._impl_cache[hook_name] = impls
        return impls

    def _call(self, impl: pluggy.HookImpl, hook_name: str, kwargs: Mapping[str, Any]) -> Any:
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
        except StitchError:
            raise  # a plugin's deliberate, already explained error
        except Exception as exc:
            raise _raised(impl, hook_name, exc, _path_of(kwargs)) from exc
        if self._debug:
            where = _path_of(kwargs)
            log.debug(
                "%s%s by %s -> %r",
                hook_name,
                "" if where is None else f" at {where or '<root>'}",
                impl.plugin_name,
                result,
            )
        return result

    def call_all(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Every implementation's non-``None`` result, with the plugin name, in call order."""
        if self._debug:
            return [
                (impl.plugin_name, result)
                for impl in self._impls(hook_name)
                if (result := self._call(impl, hook_name, kwargs)) is not None
            ]
        # Hot path (the claim hook runs once per module): one try around the loop,
        # the failing implementation is the one the loop variable points at.
        results = []
        impl = None
        try:
            for impl in self._impls(hook_name):
                result = impl.function(*[kwargs[name] for name in impl.argnames])
                if result is not None:
                    results.append((impl.plugin_name, result))
        except StitchError:
            raise
        except Exception as exc:
            assert impl is not None
            raise _raised(impl, hook_name, exc, _path_of(kwargs)) from exc
        return results

    def claims(self, module: Any, path: str) -> list[tuple[str, Any]]:
        """``call_all("torchstitch_claim", module=module, path=path)``, specialised: it runs
        once per module of the tree, so planning cost is mostly this loop."""
        if self._debug:
            return self.call_all("torchstitch_claim", module=module, path=path)
        claimers = self._claimers
        if claimers is None:
            claimers = self._claimers = [
                (impl, impl.function, impl.argnames) for impl in self._impls("torchstitch_claim")
            ]
        results = []
        impl = None
        try:
            for impl, function, argnames in claimers:
                if argnames == ("module",):
                    result = function(module)
                elif argnames == ("module", "path"):
                    result = function(module, path)
                else:
                    given = {"module": module, "path": path}
                    result = function(*[given[name] for name in argnames])
                if result is not None:
                    results.append((impl.plugin_name, result))
        except StitchError:
            raise
        except Exception as exc:
            assert impl is not None
            raise _raised(impl, "torchstitch_claim", exc, path) from exc
        return results

    def call_first(self, hook_name: str, **kwargs: Any) -> tuple[list[str], str | None, Any]:
        """``(asked, plugin, result)``: the first non-``None`` result and who was asked."""
        asked: list[str] = []
        for impl in self._impls(hook_name):
            asked.append(impl.plugin_name)
            result = self._call(impl, hook_name, kwargs)
            if result is not None:
                return asked, impl.plugin_name, result
        return asked, None, None

    def call_chain(
        self,
        hook_name: str,
        value: Any,
        arg: str,
        expect: type,
        *,
        after_each: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Thread ``value`` through every implementation as argument ``arg``; each may
        return a replacement of type ``expect`` or ``None`` to keep it.  ``after_each``
        is called with each implementation's plugin name once it returned."""
        for impl in self._impls(hook_name):
            result = self._call(impl, hook_name, {**kwargs, arg: value})
            if after_each is not None:
                after_each(impl.plugin_name)
            if result is None:
                continue
            if not isinstance(result, expect):
                raise PluginError(
                    f"must return a {expect.__module__}.{expect.__qualname__} or None, "
                    f"got {type(result).__name__}",
                    plugin=impl.plugin_name,
                    hook=hook_name,
                    path=_path_of(kwargs),
                )
            value = result
        return value


def _raised(impl: pluggy.HookImpl, hook_name: str, exc: Exception, path: str | None) -> PluginError:
    """The error for a hook implementation that raised (chain ``exc`` when raising it)."""
    return PluginError(f"raised {exception_summary(exc)}", plugin=impl.plugin_name, hook=hook_name, path=path)


def _path_of(kwargs: Mapping[str, Any]) -> str | None:
    """The node path a hook call is about, for error messages (``None`` if none)."""
    if "path" in kwargs:
        return kwargs["path"]
    return getattr(kwargs.get("node"), "path", None)
