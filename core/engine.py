"""The engine: orchestrates one compile call; each job has its own room.

Planning (``planner``), the options (``options``), tracing inputs
(``tracing_inputs``), stitching (``stitching``: the only code that sets submodules,
on its own shells until the whole tree has compiled; ``in_place=True`` then copies
the compiled children into the caller's modules in one pass that cannot fail),
verification (``verification``), reporting (``reporting``) and the result
(``result``).  What is left here is the order of things and one node's compile:
its strategy, its fallbacks, the guard around the plugins that touch it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from . import reporting, tracing_inputs
from ._warn import warn
from .cache import CompileCache
from .cache_run import NodeCache
from .claims import Claim, ClaimKind, Rule
from .errors import (
    NodeCompileError,
    PlanError,
    PluginError,
    StitchError,
    TorchstitchWarning,
    TracingInputsError,
    VerificationError,
    display_path,
    exception_summary,
)
from .guard import TensorGuard
from .inputs import Recording, as_example_sets, check_example_sets, record, snapshot
from .ir import Attempt, Node, Outcome, Plan
from .options import CompileOptions, option_arguments
from .planner import ROOT_TO_TARGET_REASON, PlannedTree, Planner
from .plugin_manager import PluginSet
from .progress import Progress
from .provenance import attach_plan
from .result import CompileResult
from .state import CallerState, preserved_state, uninitialized_lazy
from .stitching import Stitcher, make_shell
from .strategy import CompileContext, Strategy, TracingInputs
from .training_mode import training_dependent
from .verification import Verifier

# CompileOptions, CompileResult and make_shell live in their own modules; re-exported here
__all__ = ["CompileOptions", "CompileResult", "Engine", "make_shell"]

log = logging.getLogger(__name__)


class Engine:
    """Compiles module trees with fixed options; reusable and safe to share between threads.

    Options are those of :class:`CompileOptions`; ``script_options`` and
    ``trace_options`` are shorthands for ``strategy_options["script"/"trace"]``.
    """

    def __init__(
        self,
        *,
        rules: Sequence[Rule] = (),
        plugins: Iterable[object | str] | None = None,
        in_place: bool = False,
        recurse: bool = True,
        n_trace_checks: int = 1,
        script_options: Mapping[str, Any] | None = None,
        trace_options: Mapping[str, Any] | None = None,
        strategy_options: Mapping[str, Mapping[str, Any]] | None = None,
        verify: bool = True,
        on_error: str = "raise",
        atol: float | None = None,
        rtol: float | None = None,
        freeze: bool = False,
        target: str | None = None,
        progress: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.options = CompileOptions.from_arguments(**option_arguments(locals()))

    def plan(
        self,
        module: torch.nn.Module,
        *,
        example_inputs: Any = None,
        inputs: Mapping[str, Any] | None = None,
        root_strategy: str | Claim | None = None,
    ) -> Plan:
        """Resolve claims and validate the plan without compiling anything.

        Takes the arguments of :meth:`compile` and fails wherever its planning would
        (``freeze=True`` included), so the plan is the one ``compile`` would follow.
        """
        plugin_set = PluginSet.from_plugins(self.options.plugins)
        tree = self._plan(plugin_set, module, root_strategy)
        sets = as_example_sets(example_inputs)
        if sets is not None:
            check_example_sets(module, sets, example_inputs)
        tracing_inputs.caller_inputs(inputs, tree.plan)
        _check_plan(plugin_set, tree.plan, module, self.options)
        return tree.plan

    def compile(
        self,
        module: torch.nn.Module,
        *,
        example_inputs: Any = None,
        inputs: Mapping[str, Any] | None = None,
        root_strategy: str | Claim | None = None,
    ) -> CompileResult:
        """Compile ``module``; the caller's model is unchanged unless ``in_place=True``
        and everything succeeded.

        :param example_inputs: positional arguments for the root's ``forward`` (a tuple,
            or one tensor), or a list of such tuples, several input sets of different
            sizes: each is run eagerly to record traced nodes' real inputs (a node then
            sees a call from every set; ``export`` makes the sizes that differ dynamic),
            and each verifies the whole compiled model.
        :param inputs: tracing inputs by path (an args tuple, ``{method: args}``
            or a list of them); they beat every other provider.
        :param root_strategy: force the root's strategy (a name, or an override
            :class:`Claim` saying who forces it, as ``script()`` and ``trace()`` do).
        """
        start = time.perf_counter()
        plugin_set = PluginSet.from_plugins(self.options.plugins)
        tree = self._plan(plugin_set, module, root_strategy)
        try:
            return self._compile(plugin_set, tree, module, example_inputs, inputs, start)
        except (NodeCompileError, VerificationError) as exc:
            claim = tree.plan.root.claim
            failed = tree.plan[exc.path] if exc.path is not None and exc.path in tree.plan else None
            if (
                claim is None
                or claim.reason != ROOT_TO_TARGET_REASON
                or failed is None
                or failed.region != ""
            ):
                raise  # not the root's own region: the plan without the target fails there too
            # the root went to the target only because nothing claimed it: leave it in
            # Python around the compiled pieces, as the plan would without the target
            warn(
                f"the root could not be compiled for target {self.options.target!r} "
                f"({exc.message.splitlines()[0]}); it is left in Python around the compiled "
                "pieces. Claim it, or fix the failure, to get one artifact of the target",
                TorchstitchWarning,
            )
            tree = self._plan(plugin_set, module, root_strategy, root_to_target=False)
            return self._compile(plugin_set, tree, module, example_inputs, inputs, start)

    def _compile(
        self,
        plugin_set: PluginSet,
        tree: PlannedTree,
        module: torch.nn.Module,
        example_inputs: Any,
        inputs: Mapping[str, Any] | None,
        start: float,
    ) -> CompileResult:
        example_sets = as_example_sets(example_inputs)
        if example_sets is not None:
            check_example_sets(module, example_sets, example_inputs)
        caller_inputs = tracing_inputs.caller_inputs(inputs, tree.plan)
        _check_plan(plugin_set, tree.plan, module, self.options)
        _check_initialized(tree, example_sets)
        for retry in (False, True):
            with preserved_state(module) as state:
                run = _Run(self.options, plugin_set, tree, example_sets, caller_inputs, state)
                try:
                    compiled = plugin_set.call_around(
                        "torchstitch_compile_run", plan=tree.plan, execute=run.execute
                    )
                    break
                except VerificationError as exc:
                    # an entry that no longer gives eager's outputs: never stuck on it
                    if retry or not run.cache.reject_hits(exc):
                        raise
        plan = run.annotated_plan()
        if compiled is not module:  # never tag the caller's own module
            # absolute: a later ts.save from another working folder finds the same cache
            cache_dir = self.options.cache_dir
            where = None if cache_dir is None else os.path.abspath(os.path.expanduser(cache_dir))
            attach_plan(compiled, plan, cache_dir=where)
        reporting.warn_fallbacks(run.outcomes)
        reporting.warn_if_nothing_compiles(plan, plugin_set)
        reporting.warn_training_mode(run.fixed_in_training, plugin_set.strategies)
        return CompileResult(compiled, plan, time.perf_counter() - start)

    def _plan(
        self,
        plugin_set: PluginSet,
        module: torch.nn.Module,
        root_claim: str | Claim | None,
        *,
        root_to_target: bool = True,
    ) -> PlannedTree:
        if isinstance(root_claim, str):
            root_claim = Claim(root_claim, ClaimKind.OVERRIDE, "root_strategy=", "forced by the caller")
        elif root_claim is not None and not isinstance(root_claim, Claim):
            raise TypeError(f"root_strategy must be a strategy name or a Claim, got {root_claim!r}")
        planner = Planner(
            plugin_set,
            self.options.rules,
            root_claim=root_claim,
            recurse=self.options.recurse,
            target=self.options.target,
            root_to_target=root_to_target,
        )
        return planner.build(module)


def _check_plan(plugin_set: PluginSet, plan: Plan, module: torch.nn.Module, options: CompileOptions) -> None:
    """The plugins' plan-time checks (the TorchScript plugin's for ``freeze=True``, say)."""
    plugin_set.call(
        "torchstitch_check_plan", plan=plan, module=module, options=options, strategies=plugin_set.strategies
    )


def _check_initialized(tree: PlannedTree, example_sets: list[tuple[Any, ...]] | None) -> None:
    """Refuse a lazy module (``nn.LazyLinear``, ...) whose parameters do not exist yet
    where the compile would run it (``example_inputs`` run the whole model) or compile it.

    Running it creates its parameters in the caller's model (its class changes too);
    compiling a copy instead would give the compiled model random weights the caller's
    model never gets.  Neither keeps the caller's model unchanged and its weights shared
    with the compiled one, so the caller runs one forward pass first, and the compiled
    model shares the weights that pass created.
    """
    for node in tree.plan.walk():
        module = tree.modules[node.path]
        if (example_sets is None and node.region is None) or not uninitialized_lazy(module):
            continue
        claim = None if node.region is None else tree.plan[node.region].claim
        raise PlanError(
            f"{type(module).__name__} has uninitialized parameters (a lazy module creates them "
            "on its first forward), and compiling would create them in your model: run the "
            "model once first (model(*example_inputs)), then compile",
            path=node.path,
            strategy=None if claim is None else claim.strategy,
            claimant=None if claim is None else claim.claimant,
        )


def _checked_notes(notes: Any, node: Node, strategy: Strategy, plugin: str) -> dict[str, str]:
    """``CompileContext.notes`` after the strategy ran: text by text key, or a PluginError."""
    bad = [key for key, value in notes.items() if not (isinstance(key, str) and isinstance(value, str))]
    if bad:
        raise PluginError(
            f"strategy {strategy.name!r} wrote non-string CompileContext.notes entries {bad!r}; "
            "notes are text for the plan",
            plugin=plugin,
            hook="Strategy.compile",
            path=node.path,
            strategy=strategy.name,
            claimant=None if node.claim is None else node.claim.claimant,
        )
    return dict(notes)


class _Run:
    """The mutable state of one compile call (never shared between calls)."""

    def __init__(
        self,
        options: CompileOptions,
        plugins: PluginSet,
        tree: PlannedTree,
        example_sets: list[tuple[Any, ...]] | None,
        caller_inputs: dict[str, TracingInputs],
        state: CallerState,
    ) -> None:
        self.options = options
        self.plugins = plugins
        self.plan = tree.plan
        self.modules = tree.modules
        #: the caller's ``example_inputs``, as input sets (``None``: none given)
        self.example_sets = example_sets
        self.caller_inputs = caller_inputs
        self.recording: Recording | None = None
        #: the caller's buffers: every run starts from them
        self.state = state
        self.outcomes: dict[str, Outcome] = {}
        #: paths whose strategy produced a compiled module, in compilation order
        self.compiled_paths: list[str] = []
        #: path -> the tracing inputs its compiled module was verified on
        self.verified_on: dict[str, TracingInputs] = {}
        #: path -> (strategy, paths of mode-dependent modules) of nodes fixed in training mode
        self.fixed_in_training: dict[str, tuple[str, list[str]]] = {}
        #: CompileContext.scratch: the strategies' per-call memo
        self.scratch: dict[Any, Any] = {}
        self.cache = NodeCache(self, CompileCache.from_option(options.cache_dir))
        #: whether any node is compiled (else the root is not verified)
        self.compiles_any = any(node.region is not None for node in self.plan.walk())
        n_claimed = sum(1 for n in self.plan.walk() if n.claim is not None and n.shared_with is None)
        self.progress = Progress(n_claimed if options.progress else 0)
        self.stitcher = Stitcher(self.plan, self.modules, state, plugins.compiled_types, self._compile_node)
        self.verifier = Verifier(
            options,
            plugins,
            self.plan,
            self.modules,
            state,
            example_sets,
            self.outcomes,
            self.compiled_paths,
            self.verified_on,
        )

    # -- orchestration -------------------------------------------------------

    def execute(self) -> torch.nn.Module:
        root = self.modules[""]
        targets = self._recording_targets()
        if self.example_sets is not None and (self.options.verify or targets):
            self._record(root, targets)
        self.cache.find_subtrees()
        try:
            result = self.stitcher.build()
        finally:
            self.progress.close()
        result = self.plugins.chain(
            "torchstitch_finalize", result, "module", torch.nn.Module, plan=self.plan, options=self.options
        )
        if self.recording is not None and self.options.verify and self.compiles_any:
            self.verifier.verify_root(result)
        self.cache.flush()  # only what compiled, stitched and verified
        if self.options.in_place:
            self.stitcher.commit()
            if result is self.stitcher.shell_of(root):
                result = root
        return result

    def _record(self, root: torch.nn.Module, targets: dict[str, torch.nn.Module]) -> None:
        """One eager run per input set, each from the caller's state."""
        assert self.example_sets is not None
        recordings = []
        stateful: set[int] = set()
        n = len(self.example_sets)
        for number, args in enumerate(self.example_sets, start=1):
            label = "example_inputs" if n == 1 else f"example_inputs set {number} (of {n})"
            limit = max(2, self.options.n_trace_checks)
            recordings.append(record(root, args, targets, limit=limit, modules=self.modules, label=label))
            # the caller's modules whose buffers a recording run changed: their recorded
            # outputs need not be what a run from the caller's state returns
            stateful |= self.state.changed()
            self.state.restore()
        self.recording = Recording.merge(recordings)
        self.verifier.recording = self.recording
        self.verifier.stateful = stateful

    def _recording_targets(self) -> dict[str, torch.nn.Module]:
        targets = {}
        for node in self.plan.walk():
            if node.claim is None or node.shared_with is not None:
                continue
            names = [node.claim.strategy]
            if self.options.on_error == "fallback":
                names += list(self.plugins.strategies[node.claim.strategy].fallbacks)
            if any(self.plugins.strategies[n].needs_inputs for n in names if n in self.plugins.strategies):
                targets[node.path] = self.modules[node.path]
        return targets

    # -- one node ------------------------------------------------------------

    def _compile_node(self, node: Node, shell: torch.nn.Module) -> torch.nn.Module:
        assert node.claim is not None
        self.progress.node(node.path, node.claim.strategy)
        if self.cache.inside_hit(node) is not None:
            return self._loaded_with_ancestor(node, shell)
        chain = [node.claim.strategy]
        if self.options.on_error == "fallback":
            chain += [
                name
                for name in self.plugins.strategies[node.claim.strategy].fallbacks
                if name in self.plugins.strategies and name not in chain
            ]
        attempts: list[Attempt] = []
        errors: list[StitchError] = []
        for name in chain:
            strategy = self.plugins.strategies[name]
            start = time.perf_counter()
            try:
                compiled, outcome = self._attempt(node, shell, strategy)
            except (NodeCompileError, TracingInputsError, VerificationError) as exc:
                attempts.append(
                    Attempt(
                        name,
                        type(exc).__name__,
                        exc.message.splitlines()[0],
                        time.perf_counter() - start,
                    )
                )
                if self.options.on_error == "raise" or node.path in self.cache.hits:
                    raise  # a loaded entry that fails: compile() rebuilds it, no fallback
                errors.append(exc)
                continue
            attempts.append(Attempt(name, seconds=outcome.seconds))
            outcome = attrs.evolve(
                outcome, attempts=tuple(attempts), training=self._fixed_mode(node, strategy)
            )
            self.outcomes[node.path] = outcome
            if strategy.compiles:
                self.compiled_paths.append(node.path)
            self._notify(node, compiled, outcome)
            return compiled
        # every strategy failed under on_error="fallback"
        tried = "; ".join(f"{a.strategy}: {a.error_type}: {a.error}" for a in attempts)
        if node.path == "":
            raise NodeCompileError(
                f"every strategy failed ({tried})",
                path=node.path,
                strategy=node.claim.strategy,
                claimant=node.claim.claimant,
            ) from errors[-1]
        log.info("%s: every strategy failed (%s); left to its parent", display_path(node.path), tried)
        self.outcomes[node.path] = Outcome(attempts=tuple(attempts))
        return shell

    def _attempt(
        self, node: Node, shell: torch.nn.Module, strategy: Strategy
    ) -> tuple[torch.nn.Module, Outcome]:
        claimant = None if node.claim is None else node.claim.claimant
        # the shell shares the caller's tensors: a plugin converting it converts the model
        guard = TensorGuard(self.modules[node.path], node.path)
        with self._caller_tensors_kept(guard, node, strategy, "torchstitch_prepare", None):
            module = self.plugins.chain(
                "torchstitch_prepare",
                shell,
                "module",
                torch.nn.Module,
                after_each=lambda plugin: self._blame_changes(
                    guard, node, strategy, "torchstitch_prepare", plugin
                ),
                node=node,
                strategy=strategy,
                scratch=self.scratch,
            )
        inputs: TracingInputs = []
        source = None
        if strategy.needs_inputs:
            inputs, source = self._tracing_inputs(node, module, strategy)
        # a private copy: tracing a forward that changes its inputs must not change them
        context = self._context(node, strategy, snapshot(inputs), source)
        original = self.modules[node.path]
        # a strategy that takes tracing inputs runs the node (trace, export): from the caller's
        # state, which it is put back to afterwards; one that does not (script) never runs it
        runs_node = strategy.needs_inputs
        if runs_node:
            self.state.restore(original)
        start = time.perf_counter()
        provider = self.plugins.providers[strategy.name]
        key = self.cache.key(node, strategy, inputs)
        compiled = self.cache.load(node, shell, strategy, key)
        hit = compiled is not None
        if compiled is None:
            with self._caller_tensors_kept(guard, node, strategy, "Strategy.compile", provider):
                try:
                    compiled = strategy.compile(module, context)
                except StitchError:
                    raise
                except Exception as exc:
                    raise NodeCompileError(
                        f"{strategy.name} failed on {node.short_type_name}: {exception_summary(exc)}",
                        path=node.path,
                        strategy=strategy.name,
                        claimant=claimant,
                    ) from exc
        seconds = time.perf_counter() - start
        if not isinstance(compiled, torch.nn.Module):
            raise PluginError(
                f"strategy {strategy.name!r} returned {type(compiled).__name__}, not a torch.nn.Module",
                plugin=self.plugins.providers[strategy.name],
                hook="Strategy.compile",
                path=node.path,
                strategy=strategy.name,
                claimant=claimant,
            )
        if strategy.compiles:
            self.state.add_compiled(original, compiled)
        if runs_node:
            self.state.restore(original)
        n_verified, max_diff = 0, None
        if strategy.verify and self.options.verify and inputs:
            n_verified, max_diff = self.verifier.verify_node(node, strategy, compiled, inputs, source)
            self.verified_on[node.path] = inputs
        if hit and key is not None:
            cache_word: str | None = f"hit {key[:8]}"
        else:
            cache_word = self.cache.missed(node, strategy, key, compiled) if strategy.compiles else None
        log.debug(
            "%s: %s in %.1f ms (inputs: %s%s)",
            display_path(node.path),
            strategy.name,
            seconds * 1e3,
            source,
            "" if cache_word is None else f"; cache {cache_word}",
        )
        return compiled, Outcome(
            seconds=seconds,
            inputs_source=source,
            n_verified=n_verified,
            max_abs_diff=max_diff,
            notes=_checked_notes(context.notes, node, strategy, self.plugins.providers[strategy.name]),
            cache=cache_word,
        )

    def _loaded_with_ancestor(self, node: Node, shell: torch.nn.Module) -> torch.nn.Module:
        """A claimed node inside a subtree the cache loads whole: nothing to compile; its
        shell stands in until the ancestor's entry replaces the subtree."""
        assert node.claim is not None
        ancestor = self.cache.inside_hit(node)
        assert ancestor is not None
        strategy = self.plugins.strategies[node.claim.strategy]
        self.outcomes[node.path] = Outcome(
            attempts=(Attempt(strategy.name),),
            training=self._fixed_mode(node, strategy),
            cache=f"hit in {display_path(ancestor)}",
        )
        log.debug("%s: cache hit in %s", display_path(node.path), display_path(ancestor))
        return shell

    @contextlib.contextmanager
    def _caller_tensors_kept(
        self, guard: TensorGuard, node: Node, strategy: Strategy, hook: str, plugin: str | None
    ):
        """Around a call of ``plugin``: put back the caller's tensors it changed, and blame it.

        ``plugin=None`` for a chain of hook implementations: the one that raised is blamed
        here, each one that returned by ``chain``'s ``after_each``.
        """
        try:
            yield
        except Exception as exc:
            blamed = plugin or getattr(exc, "plugin", None) or f"(the {hook} implementation that raised)"
            self._blame_changes(guard, node, strategy, hook, blamed, exc)
            raise
        except BaseException:
            guard.restore()  # an interrupt: leave the caller's model as it was, and stop
            raise
        if plugin is not None:
            self._blame_changes(guard, node, strategy, hook, plugin)

    def _blame_changes(
        self,
        guard: TensorGuard,
        node: Node,
        strategy: Strategy,
        hook: str,
        plugin: str,
        cause: BaseException | None = None,
    ) -> None:
        changed = guard.restore()
        if not changed:
            return
        raise PluginError(
            f"changed the caller's tensor(s) {'; '.join(changed)} through the module it was given, which "
            "shares the caller's parameters and buffers; torchstitch put them back. Convert a copy "
            "(copy.deepcopy(module).to(...)) to change precision or device: see docs/plugins.md",
            plugin=plugin,
            hook=hook,
            path=node.path,
            strategy=strategy.name,
            claimant=None if node.claim is None else node.claim.claimant,
        ) from cause

    def _context(
        self, node: Node, strategy: Strategy | None, inputs: TracingInputs, source: str | None
    ) -> CompileContext:
        return CompileContext(
            node=node,
            options=self.options.for_strategy(strategy.name) if strategy else {},
            inputs=inputs,
            inputs_source=source,
            example_inputs=None if self.example_sets is None else self.example_sets[0],
            example_sets=() if self.example_sets is None else tuple(self.example_sets),
            caller_inputs=self.caller_inputs,
            recorded_inputs={} if self.recording is None else self.recording.inputs,
            n_trace_checks=self.options.n_trace_checks,
            strategies=self.plugins.strategies,
            scratch=self.scratch,
        )

    def _tracing_inputs(
        self, node: Node, module: torch.nn.Module, strategy: Strategy
    ) -> tuple[TracingInputs, str]:
        claimant = None if node.claim is None else node.claim.claimant
        try:
            found = tracing_inputs.resolve(
                self.plugins, module, node, self.options.n_trace_checks, self._context(node, None, [], None)
            )
        except TracingInputsError as exc:
            raise TracingInputsError(
                exc.message, path=node.path, strategy=strategy.name, claimant=claimant
            ) from None
        if found.source is None:
            if self.example_sets is None:
                recorded = "no example_inputs were given to record from"
            else:
                recorded = "the eager run on example_inputs never called it"
            raise TracingInputsError(
                f"{node.short_type_name} needs tracing inputs for {strategy.name!r} and no provider had "
                f"any (asked, in order: {', '.join(found.asked)}; {recorded}). Pass example_inputs= "
                f"for the whole model, inputs={{{node.path!r}: (args...)}}, or define "
                f"_make_tracing_inputs(n) on {node.short_type_name}",
                path=node.path,
                strategy=strategy.name,
                claimant=claimant,
            )
        return found.inputs, found.source

    def _fixed_mode(self, node: Node, strategy: Strategy) -> bool | None:
        """The ``training`` flag fixed in the compiled node (see :mod:`.training_mode`):
        a strategy that needs tracing inputs compiles one recorded run, and with it the
        branch every module of its region took on ``self.training``."""
        if not (strategy.needs_inputs and strategy.compiles):
            return None
        dependent = training_dependent(self._region_modules(node))
        if dependent:
            self.fixed_in_training[node.path] = (strategy.name, dependent)
        return self.modules[node.path].training

    def _region_modules(self, node: Node) -> Iterator[tuple[str, torch.nn.Module]]:
        """The user's modules that ``node``'s strategy compiles: its own and its
        descendants', except those compiled on their own (and theirs)."""
        yield node.path, self.modules[node.path]
        canonical = node if node.shared_with is None else self.plan[node.shared_with]
        for child in canonical.children:
            if child.region == canonical.region:
                yield from self._region_modules(child)

    # -- verification --------------------------------------------------------

    # -- reporting -----------------------------------------------------------

    def _notify(self, node: Node, compiled: torch.nn.Module, outcome: Outcome) -> None:
        self.plugins.call(
            "torchstitch_node_compiled",
            node=attrs.evolve(node, outcome=outcome),
            original=self.modules[node.path],
            compiled=compiled,
            seconds=outcome.seconds,
        )

    def annotated_plan(self) -> Plan:
        update = {
            path: attrs.evolve(self.plan[path], outcome=outcome) for path, outcome in self.outcomes.items()
        }
        return self.plan.map_nodes(update) if update else self.plan
