"""The plugin manager, and the per-call view through which the engine calls hooks."""

from __future__ import annotations

import functools
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
    "CORE_PLUGINS",
    "PluginSet",
    "get_plugin_manager",
    "make_plugin_manager",
    "builtin_strategy_names",
    "default_strategy_names",
]

log = logging.getLogger(__name__)

#: built-in plugins, registered by name like pytest's default plugins (blockable: ``"no:trace"``)
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("compile_mode", "torchstitch.plugins.builtin.compile_mode"),
    ("script", "torchstitch.plugins.builtin.torchscript.script"),
    ("trace", "torchstitch.plugins.builtin.torchscript.trace"),
    ("unsupported", "torchstitch.plugins.builtin.unsupported"),
    ("format.torchscript", "torchstitch.plugins.builtin.torchscript.format"),
    ("torchscript", "torchstitch.plugins.builtin.torchscript.family"),
    # registered in reverse order of precedence: pluggy calls the latest registered first
    ("inputs.recorded", "torchstitch.plugins.builtin.inputs:RecordedInputs"),
    ("inputs.method", "torchstitch.plugins.builtin.inputs:MakeTracingInputs"),
    ("inputs.caller", "torchstitch.plugins.builtin.inputs:CallerInputs"),
)
#: the engine's own default hook implementations (core/default_hooks.py): always registered
CORE_PLUGINS: tuple[tuple[str, str], ...] = (("engine", "torchstitch.core.default_hooks"),)

_CORE_NAMES = frozenset(name for name, _ in CORE_PLUGINS)

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
    for name, target in CORE_PLUGINS:
        pm.register(_load_builtin(target), name=name)
    for name in blocked:
        pm.set_blocked(name)
    for name, target in BUILTIN_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(_load_builtin(target), name=name)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if autoload:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    if os.environ.get(DEBUG_ENV):
        _trace_to_log(pm)
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


@functools.cache
def builtin_strategy_names() -> tuple[str, ...]:
    """Names of the strategies the built-in plugins provide, asked once per process of a
    manager holding the built-ins alone: ``@compile_mode("script")`` checks its name
    without loading every installed plugin (the default manager does that)."""
    return tuple(PluginSet(make_plugin_manager(autoload=False)).strategies)


def default_strategy_names() -> tuple[str, ...]:
    """Names of the strategies the default plugin manager provides."""
    return tuple(PluginSet(get_plugin_manager()).strategies)


def _trace_to_log(pm: pluggy.PluginManager) -> None:
    """``TORCHSTITCH_DEBUG``: pluggy's own hook-call tracing, written to this module's logger
    at DEBUG level (as pytest's ``PYTEST_DEBUG`` writes it to stderr)."""
    pm.trace.root.setwriter(lambda text: log.debug("%s", text.rstrip("\n")))
    pm.enable_tracing()


class PluginSet:
    """The engine's view of a plugin manager for one call.

    pluggy calls every hook (``pm.hook.torchstitch_x(...)``), so hook wrappers,
    ``tryfirst``/``trylast`` and tracing work as pluggy documents them.  Three things
    pluggy does not tell are kept here, on top of pluggy's public API:

    - *who* raised: an exception is blamed on the implementation whose code is the
      innermost frame of its traceback (:func:`blame`), and becomes a
      :class:`~torchstitch.PluginError`;
    - *who* answered, where the engine reports it (the plugin providing a strategy,
      the tracing-input provider shown in the plan): those hooks are asked one
      plugin at a time, each ask a pluggy call of a subset caller (:meth:`ask`);
    - chaining (``torchstitch_prepare``): each plugin is asked with the previous
      plugin's answer (:meth:`chain`).
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._subsets: dict[tuple[str, str], pluggy.HookCaller] = {}
        self._claimers = _plain_claimers(pm)
        self._compiled_types: tuple[type, ...] | None = None
        #: strategy name -> Strategy
        self.strategies: dict[str, Strategy] = {}
        #: strategy name -> name of the plugin that provides it
        self.providers: dict[str, str] = {}
        # registration order: a later plugin re-using a strategy name is the one blamed
        for plugin, result in self.ask_each("torchstitch_strategies", newest_first=False):
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

    # -- calling -------------------------------------------------------------

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """``pm.hook.<hook_name>(**kwargs)``; an implementation that raised is a PluginError."""
        caller = getattr(self.pm.hook, hook_name)
        try:
            return caller(**kwargs)
        except StitchError:
            raise  # a plugin's deliberate, already explained error
        except Exception as exc:
            raise _raised(blame(caller, exc) or "(unknown)", hook_name, exc, _path_of(kwargs)) from exc

    def claims(self, module: Any, path: str) -> list[Any]:
        """``call("torchstitch_claim", module=module, path=path)``, the one hook not called
        through pluggy when nothing needs pluggy's call: it runs once per module of the tree
        and pluggy's call costs more than the claims (benchmarks/RESULTS.md, "plan").
        Under ``TORCHSTITCH_DEBUG`` or with a wrapper on the hook, pluggy calls it."""
        claimers = self._claimers
        if claimers is None:
            return self.call("torchstitch_claim", module=module, path=path)
        results = []
        plugin = None
        try:
            for plugin, function, takes in claimers:  # noqa: B007 (read when one raises)
                if takes is _MODULE:
                    result = function(module)
                elif takes is _MODULE_PATH:
                    result = function(module, path)
                else:
                    result = function(*[{"module": module, "path": path}[name] for name in takes])
                if result is not None:
                    results.append(result)
        except StitchError:
            raise
        except Exception as exc:
            assert plugin is not None
            raise _raised(plugin, "torchstitch_claim", exc, path) from exc
        return results

    def call_around(self, hook_name: str, **kwargs: Any) -> Any:
        """:meth:`call` for a hook whose default implementation runs the engine's code
        (``torchstitch_compile_run``, ``torchstitch_verification_run``): what that code
        raises propagates unchanged; an exception of a wrapper is a PluginError."""
        caller = getattr(self.pm.hook, hook_name)
        try:
            return caller(**kwargs)
        except StitchError:
            raise
        except Exception as exc:
            plugin = blame(caller, exc)
            if plugin is None or plugin in _CORE_NAMES:
                raise
            raise _raised(plugin, hook_name, exc, _path_of(kwargs)) from exc

    @property
    def compiled_types(self) -> tuple[type, ...]:
        """Every strategy's :attr:`~torchstitch.Strategy.compiled_types`: such a module in
        the caller's model is already compiled (shared as is, its children not planned)."""
        if self._compiled_types is None:
            self._compiled_types = tuple(
                {cls: None for s in self.strategies.values() for cls in s.compiled_types}
            )
        return self._compiled_types

    def answerers(self, hook_name: str, newest_first: bool = True) -> list[str]:
        """Names of the plugins implementing ``hook_name`` (wrappers aside), in call order."""
        impls = [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if not _is_wrapper(i)]
        names = [impl.plugin_name for impl in impls]
        return names[::-1] if newest_first else names

    def ask(self, hook_name: str, plugin: str, **kwargs: Any) -> Any:
        """Call ``hook_name`` of ``plugin`` alone (and every wrapper), through pluggy."""
        caller = self._subset(hook_name, plugin)
        try:
            result = caller(**kwargs)
        except StitchError:
            raise
        except Exception as exc:
            raise _raised(blame(caller, exc) or plugin, hook_name, exc, _path_of(kwargs)) from exc
        # a plain hook returns a list of answers: this plugin's one, or none
        if caller.spec is not None and caller.spec.opts.get("firstresult"):
            return result
        return result[0] if result else None

    def ask_each(self, hook_name: str, *, newest_first: bool = True, **kwargs: Any) -> list[tuple[str, Any]]:
        """Every plugin's non-``None`` answer with its name, asked one at a time."""
        answers = []
        for plugin in self.answerers(hook_name, newest_first):
            result = self.ask(hook_name, plugin, **kwargs)
            if result is not None:
                answers.append((plugin, result))
        return answers

    def call_first(self, hook_name: str, **kwargs: Any) -> tuple[list[str], str | None, Any]:
        """``(asked, plugin, result)``: the first non-``None`` answer, who gave it and who was asked."""
        asked: list[str] = []
        for plugin in self.answerers(hook_name):
            asked.append(plugin)
            result = self.ask(hook_name, plugin, **kwargs)
            if result is not None:
                return asked, plugin, result
        return asked, None, None

    def chain(
        self,
        hook_name: str,
        value: Any,
        arg: str,
        expect: type,
        *,
        after_each: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Thread ``value`` through every plugin's implementation as argument ``arg``; each
        may return a replacement of type ``expect`` or ``None`` to keep it.  ``after_each``
        is called with each plugin's name once it returned."""
        for plugin in self.answerers(hook_name):
            result = self.ask(hook_name, plugin, **{**kwargs, arg: value})
            if after_each is not None:
                after_each(plugin)
            if result is None:
                continue
            if not isinstance(result, expect):
                raise PluginError(
                    f"must return a {expect.__module__}.{expect.__qualname__} or None, "
                    f"got {type(result).__name__}",
                    plugin=plugin,
                    hook=hook_name,
                    path=_path_of(kwargs),
                )
            value = result
        return value

    def who_answered(self, hook_name: str, answer: Callable[[Any], bool], **kwargs: Any) -> str:
        """The first plugin whose answer to ``hook_name(**kwargs)`` satisfies ``answer``: for
        an error about one answer of a hook called once for all plugins (asks them again)."""
        for plugin in self.answerers(hook_name):
            if answer(self.ask(hook_name, plugin, **kwargs)):
                return plugin
        return "(unknown)"

    def _subset(self, hook_name: str, plugin: str) -> pluggy.HookCaller:
        key = (hook_name, plugin)
        caller = self._subsets.get(key)
        if caller is None:
            others = [
                impl.plugin
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
                if impl.plugin_name != plugin and not _is_wrapper(impl)
            ]
            caller = self._subsets[key] = self.pm.subset_hook_caller(hook_name, others)
        return caller


def _plain_claimers(pm: pluggy.PluginManager) -> list[tuple[str, Any, tuple[str, ...]]] | None:
    """The claim implementations in pluggy's call order, for :meth:`PluginSet.claims`;
    ``None`` when pluggy must do the call (a wrapper, or tracing is on)."""
    impls = pm.hook.torchstitch_claim.get_hookimpls()
    if os.environ.get(DEBUG_ENV) or any(_is_wrapper(impl) for impl in impls):
        return None
    forms = {_MODULE: _MODULE, _MODULE_PATH: _MODULE_PATH}  # identity checks in the hot loop
    return [
        (impl.plugin_name, impl.function, forms.get(tuple(impl.argnames), tuple(impl.argnames)))
        for impl in reversed(impls)
    ]


#: the argument lists of claim implementations that :meth:`PluginSet.claims` calls directly
_MODULE = ("module",)
_MODULE_PATH = ("module", "path")


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.wrapper or impl.hookwrapper)


def blame(caller: pluggy.HookCaller, exc: BaseException) -> str | None:
    """The plugin whose implementation of ``caller``'s hook raised ``exc``: the one whose
    code is the innermost frame of the traceback (a wrapper re-raising an implementation's
    error is further out), or ``None`` if no implementation's code is in it."""
    codes = {}
    for impl in caller.get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    culprit = None
    tb = exc.__traceback__
    while tb is not None:
        culprit = codes.get(tb.tb_frame.f_code, culprit)
        tb = tb.tb_next
    return culprit


def _raised(plugin: str, hook_name: str, exc: Exception, path: str | None) -> PluginError:
    """The error for a hook implementation that raised (chain ``exc`` when raising it)."""
    return PluginError(f"raised {exception_summary(exc)}", plugin=plugin, hook=hook_name, path=path)


def _path_of(kwargs: Mapping[str, Any]) -> str | None:
    """The node path a hook call is about, for error messages (``None`` if none)."""
    if "path" in kwargs:
        return kwargs["path"]
    return getattr(kwargs.get("node"), "path", None)
