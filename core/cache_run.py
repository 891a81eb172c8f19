"""The compile cache as one compile call uses it: keys, the top-down look-up, loads, stores.

Before the bottom-up build, :meth:`NodeCache.find_subtrees` predicts the key of each
claimed node from the top (the caller's modules, their claims, tracing inputs asked of
the providers) and loads the first entries it finds: a node loaded whole needs none of
its descendants compiled, and the engine skips them.  During the build each compiled
node's key is computed again from what really happened (its tracing inputs, which of its
descendants compiled on their own and with which strategy), so a fallback or an input
that differs from the prediction is a miss, never a wrong hit.  Entries are written once
the whole call succeeded and verified, for the outermost cached nodes only: an entry
holds its node's whole subtree.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import torch

from ._warn import warn
from .cache import CacheCodec, CompileCache
from .cache_key import KeyWriter, inputs_text, node_key, plugin_version
from .errors import (
    TorchstitchWarning,
    TracingInputsError,
    VerificationError,
    display_path,
    exception_summary,
)
from .ir import Node, Plan
from .options import CompileOptions
from .plugin_manager import PluginSet
from .stitching import make_shell
from .strategy import CompileContext, Strategy, TracingInputs
from .tracing_inputs import resolve


class RunView(Protocol):
    """What the cache reads of the engine's run (``engine._Run``)."""

    plan: Plan
    modules: dict[str, torch.nn.Module]
    options: CompileOptions
    plugins: PluginSet
    #: paths compiled so far, in compilation order
    compiled_paths: list[str]

    def _context(
        self, node: Node, strategy: Strategy | None, inputs: TracingInputs, source: str | None
    ) -> CompileContext: ...


__all__ = ["NodeCache"]


def _save_into(codec: CacheCodec, compiled: torch.nn.Module, folder: Path) -> None:
    codec.save(compiled, folder)


log = logging.getLogger(__name__)


class NodeCache:
    """The cache of one compile call (``cache=None``: caching is off and every method is a no-op)."""

    def __init__(self, run: RunView, cache: CompileCache | None) -> None:
        self.run = run
        self.cache = cache
        self.writer = KeyWriter()
        #: path -> ``"strategy key"`` of each node compiled or loaded on its own with a key
        self.keys: dict[str, str] = {}
        #: path -> the key predicted before the build (``None``: cannot be predicted)
        self.predicted: dict[str, str | None] = {}
        #: path -> the module loaded whole by :meth:`find_subtrees`
        self.preloaded: dict[str, torch.nn.Module] = {}
        #: path of a claimed node -> path of the ancestor loaded whole with it
        self.hit_below: dict[str, str] = {}
        #: keys looked up in vain during this call
        self.missing: set[str] = set()
        #: path -> key of each node loaded from an entry
        self.hits: dict[str, str] = {}
        #: (path, strategy, key, compiled module) of the misses, written by :meth:`flush`
        self.pending: list[tuple[str, Strategy, str, torch.nn.Module]] = []
        #: path -> what its predicted key was made from besides the modules (strategy,
        #: tracing inputs, entries below): a node compiled so has that key
        self._basis: dict[str, tuple[str, str, dict[str, str | None]]] = {}
        #: strategy name -> :meth:`_plugins` (the plugins cannot change during the call)
        self._plugin_texts: dict[str, str] = {}

    # -- keys ----------------------------------------------------------------

    def key(self, node: Node, strategy: Strategy, inputs: TracingInputs) -> str | None:
        """The key of ``node`` compiled by ``strategy`` on ``inputs`` (``None``: not cached)."""
        if not self._cacheable(strategy):
            return None
        if node.path in self.preloaded:
            return self.predicted[node.path]
        compiled: dict[str, str | None] = {
            path: self.keys.get(path) for path in self.run.compiled_paths if _below(path, node.path)
        }
        if self._basis.get(node.path) == (strategy.name, inputs_text(inputs), compiled):
            return self.predicted[node.path]  # compiled as predicted: the same key
        return self._key(node, strategy, inputs, compiled)

    def _key(
        self, node: Node, strategy: Strategy, inputs: TracingInputs, compiled: Mapping[str, str | None]
    ) -> str | None:
        return node_key(
            self.run.plan,
            node,
            self.run.modules,
            strategy=strategy,
            options=self.run.options.for_strategy(strategy.name),
            inputs=inputs,
            plugins=self._plugins(strategy),
            compiled=compiled,
            writer=self.writer,
        )

    def _cacheable(self, strategy: Strategy) -> bool:
        return self.cache is not None and strategy.cache is not None and strategy.compiles

    def _plugins(self, strategy: Strategy) -> str:
        """The plugins that shape ``strategy``'s code: its provider, and every plugin that
        prepares modules (``torchstitch_prepare``), each with its distribution's version."""
        text = self._plugin_texts.get(strategy.name)
        if text is None:
            pm = self.run.plugins.pm
            names = [self.run.plugins.providers[strategy.name]]
            names += sorted(
                pm.get_name(impl.plugin) or "?" for impl in pm.hook.torchstitch_prepare.get_hookimpls()
            )
            text = "; ".join(f"{name}={plugin_version(pm, name)}" for name in names)
            self._plugin_texts[strategy.name] = text
        return text

    # -- the top-down look-up ------------------------------------------------

    def find_subtrees(self) -> None:
        """Load, from the top, every claimed node whose predicted key has an entry; mark the
        claimed nodes below it as loaded with it.  (Not with ``in_place=True``, which puts
        each compiled child into the caller's modules: every child must then compile.)"""
        if self.cache is None or self.run.options.in_place:
            return
        self._visit(self.run.plan.root)

    def _visit(self, node: Node) -> None:
        strategy = self._claimed_strategy(node)
        if strategy is not None and self._cacheable(strategy):
            key = self._predict(node)
            loaded = (
                None
                if key is None
                else self._load_entry(node, make_shell(self.run.modules[node.path]), strategy, key)
            )
            if loaded is not None:
                self.preloaded[node.path] = loaded
                for below in _descendants(node):
                    if below.claim is not None:
                        self.hit_below[below.path] = node.path
                return
        for child in node.children:
            self._visit(child)

    def _claimed_strategy(self, node: Node) -> Strategy | None:
        """The strategy compiling ``node`` on its own, if one does."""
        if node.claim is None or node.shared_with is not None or node.region != node.path:
            return None
        return self.run.plugins.strategies.get(node.claim.strategy)

    def _predict(self, node: Node) -> str | None:
        if node.path in self.predicted:
            return self.predicted[node.path]
        strategy = self._claimed_strategy(node)
        key = None
        if strategy is not None and self._cacheable(strategy):
            inputs = self._predicted_inputs(node, strategy)
            compiled = {
                below.path: self._predicted_entry(below)
                for below in _descendants(node)
                if self._claimed_strategy(below) is not None
            }
            if inputs is not None:
                key = self._key(node, strategy, inputs, compiled)
                self._basis[node.path] = (strategy.name, inputs_text(inputs), compiled)
        self.predicted[node.path] = key
        return key

    def _predicted_entry(self, node: Node) -> str | None:
        key = self._predict(node)
        return None if key is None or node.claim is None else f"{node.claim.strategy} {key}"

    def _predicted_inputs(self, node: Node, strategy: Strategy) -> TracingInputs | None:
        """The tracing inputs the providers give for the caller's module (``None``: none)."""
        if not strategy.needs_inputs:
            return []
        run = self.run
        try:
            found = resolve(
                run.plugins,
                run.modules[node.path],
                node,
                run.options.n_trace_checks,
                run._context(node, None, [], None),
            )
        except TracingInputsError:
            return None
        return found.inputs if found.source is not None else None

    def inside_hit(self, node: Node) -> str | None:
        """The path of the ancestor loaded whole with ``node`` (``None``: not loaded so)."""
        return self.hit_below.get(node.path)

    # -- loads and stores ----------------------------------------------------

    def load(
        self, node: Node, shell: torch.nn.Module, strategy: Strategy, key: str | None
    ) -> torch.nn.Module | None:
        """The node's module from the cache (``None``: a miss, compile it)."""
        if key is None:
            return None
        loaded = self.preloaded.pop(node.path, None)
        if loaded is None and key not in self.missing:
            loaded = self._load_entry(node, shell, strategy, key)
        if loaded is not None:
            self.keys[node.path] = f"{strategy.name} {key}"
            self.hits[node.path] = key
        return loaded

    def reject_hits(self, failure: VerificationError) -> bool:
        """After a failed verification: remove the entries this call loaded at or below the
        failing path (a warning), so that compiling again rebuilds them; whether there were any."""
        at = failure.path
        suspects = {
            path: key for path, key in self.hits.items() if at is None or path == at or _below(path, at)
        }
        if self.cache is None or not suspects:
            return False
        where = ", ".join(f"{key[:8]} of {display_path(path)}" for path, key in sorted(suspects.items()))
        warn(
            TorchstitchWarning(
                f"compile cache entries {where} were loaded but the model differs from eager "
                f"({exception_summary(failure)}): removed, compiling anew"
            )
        )
        for key in suspects.values():
            self.cache.discard(key)
        return True

    def _load_entry(
        self, node: Node, shell: torch.nn.Module, strategy: Strategy, key: str
    ) -> torch.nn.Module | None:
        assert self.cache is not None and strategy.cache is not None
        folder = self.cache.lookup(key)
        if folder is None:
            self.missing.add(key)
            return None
        try:
            loaded = strategy.cache.load(folder, shell)
        except Exception as exc:  # a damaged entry is a miss, not a failure
            warn(
                TorchstitchWarning(
                    f"compile cache entry {key[:8]} of {display_path(node.path)} ({strategy.name}) "
                    f"could not be loaded ({exception_summary(exc)}): compiling anew"
                )
            )
            self.cache.discard(key)
            self.missing.add(key)
            return None
        log.debug("%s: cache hit %s (%s)", display_path(node.path), key[:8], strategy.name)
        return loaded

    def missed(
        self, node: Node, strategy: Strategy, key: str | None, compiled: torch.nn.Module
    ) -> str | None:
        """Note a compiled node for :meth:`flush`; the plan's word on it."""
        if key is None:
            return None
        self.keys[node.path] = f"{strategy.name} {key}"
        self.pending.append((node.path, strategy, key, compiled))
        log.debug("%s: cache miss %s (%s)", display_path(node.path), key[:8], strategy.name)
        return f"miss {key[:8]}"

    def flush(self) -> None:
        """Write the entries of the outermost missed nodes (each holds its subtree), once the
        whole call succeeded."""
        if self.cache is None:
            return
        stored = {path for path, *_ in self.pending}
        for path, strategy, key, compiled in self.pending:
            if any(_below(path, other) for other in stored if other != path):
                continue
            codec = strategy.cache
            assert codec is not None
            node = self.run.plan[path]
            describe = {"path": path, "type": node.type_name, "strategy": strategy.name}
            self.cache.store(key, functools.partial(_save_into, codec, compiled), describe)
        self.pending.clear()


def _descendants(node: Node) -> Iterator[Node]:
    for child in node.children:
        yield child
        yield from _descendants(child)


def _below(path: str, ancestor: str) -> bool:
    """Whether ``path`` is a strict descendant of ``ancestor``."""
    if path == ancestor:
        return False
    return ancestor == "" or path.startswith(ancestor + ".")
