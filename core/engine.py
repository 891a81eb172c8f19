"""The engine: plan, record inputs, compile bottom-up into shells, verify, commit.

This is the only code that sets submodules, and it does so only on its own
shells until the whole tree has compiled; ``in_place=True`` then copies the
compiled children into the caller's modules in one pass that cannot fail.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from ._warn import warn
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
from .inputs import (
    Recording,
    as_example_args,
    call_for_values,
    check_tracing_inputs,
    normalize_tracing_inputs,
    record,
    same_inputs,
    snapshot,
)
from .ir import Attempt, Node, Outcome, Plan
from .locate import Divergence, locate_with
from .planner import PlannedTree, Planner
from .plugin_manager import PluginSet
from .progress import Progress
from .provenance import attach_plan
from .state import CallerState, preserved_state, uninitialized_lazy
from .strategy import CompileContext, Strategy, TracingInputs
from .training_mode import training_dependent
from .verify import Tolerance, compare

__all__ = ["CompileOptions", "CompileResult", "Engine", "make_shell"]

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "fallback")


def _options_dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict of keyword arguments, got {type(value).__name__}")
    return dict(value)


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
    plugins: tuple[object, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
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

    def for_strategy(self, name: str) -> Mapping[str, Any]:
        return self.strategy_options.get(name, {})


@attrs.frozen
class CompileResult:
    """What :meth:`Engine.compile` returns."""

    #: the compiled, stitched model
    module: torch.nn.Module = attrs.field(eq=False, repr=False)
    #: the plan, each compiled node carrying its :class:`~torchstitch.Outcome`
    plan: Plan
    #: wall time of the whole call
    seconds: float

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent by each compiled node's strategy, by path."""
        return {n.path: n.outcome.seconds for n in self.plan.walk() if n.outcome is not None}

    @property
    def verification(self) -> dict[str, float]:
        """Largest difference against eager of each verified node (the root included), by path."""
        return {
            n.path: n.outcome.max_abs_diff
            for n in self.plan.walk()
            if n.outcome is not None and n.outcome.n_verified
        }

    @property
    def fallbacks(self) -> dict[str, tuple[Attempt, ...]]:
        """Nodes where a strategy failed and another was used (``on_error="fallback"``)."""
        return {
            n.path: n.outcome.attempts
            for n in self.plan.walk()
            if n.outcome is not None and any(a.error_type for a in n.outcome.attempts)
        }

    def save(self, path: str) -> None:
        """Save the compiled module with its plan embedded (see :func:`torchstitch.save`)."""
        from .serialization import save

        save(self.module, path, plan=self.plan)


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
    ) -> None:
        per_strategy = {k: _options_dict(v) for k, v in _options_dict(strategy_options).items()}
        if script_options is not None:
            per_strategy["script"] = _options_dict(script_options)
        if trace_options is not None:
            per_strategy["trace"] = _options_dict(trace_options)
        if isinstance(plugins, (str, bytes)):
            raise TypeError(f"plugins= must be a list, got the string {plugins!r}")
        self.options = CompileOptions(
            rules=rules,
            plugins=plugins,
            in_place=in_place,
            recurse=recurse,
            n_trace_checks=n_trace_checks,
            strategy_options=per_strategy,
            verify=verify,
            on_error=on_error,
            tolerance=Tolerance(atol, rtol),
            freeze=freeze,
            target=target,
            progress=progress,
        )

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
        as_example_args(example_inputs)
        _caller_inputs(inputs, tree.plan)
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

        :param example_inputs: positional arguments for the root's ``forward``:
            recorded once eagerly to give traced nodes real inputs, and used to
            verify the whole compiled model.
        :param inputs: tracing inputs by path (an args tuple, ``{method: args}``
            or a list of them); they beat every other provider.
        :param root_strategy: force the root's strategy (a name, or an override
            :class:`Claim` saying who forces it, as ``script()`` and ``trace()`` do).
        """
        start = time.perf_counter()
        plugin_set = PluginSet.from_plugins(self.options.plugins)
        tree = self._plan(plugin_set, module, root_strategy)
        example_args = as_example_args(example_inputs)
        caller_inputs = _caller_inputs(inputs, tree.plan)
        _check_plan(plugin_set, tree.plan, module, self.options)
        _check_initialized(tree, example_args)
        with preserved_state(module) as state:
            run = _Run(self.options, plugin_set, tree, example_args, caller_inputs, state)
            compiled = plugin_set.call_around("torchstitch_compile_run", plan=tree.plan, execute=run.execute)
        plan = run.annotated_plan()
        if compiled is not module:  # never tag the caller's own module
            attach_plan(compiled, plan)
        run.warn_fallbacks()
        _warn_if_nothing_compiles(plan, plugin_set)
        run.warn_training_mode()
        return CompileResult(compiled, plan, time.perf_counter() - start)

    def _plan(
        self, plugin_set: PluginSet, module: torch.nn.Module, root_claim: str | Claim | None
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
        )
        return planner.build(module)


def _warn_if_nothing_compiles(plan: Plan, plugin_set: PluginSet) -> None:
    """``ts.compile`` reads like ``torch.compile``, but compiles only what is claimed: say so
    when nothing is, rather than hand back the model in Python without a word."""
    if any(
        node.claim is not None and plugin_set.strategies[node.claim.strategy].compiles for node in plan.walk()
    ):
        return
    root = plan.root.type_name.rpartition(".")[2]
    # in registration order: the built-ins first
    compiling = [name for name, s in plugin_set.strategies.items() if s.compiles]
    example = next((n for n in compiling if not plugin_set.strategies[n].needs_inputs), "NAME")
    warn(
        f"no module of {root} is claimed by a compiling strategy, so nothing was compiled and "
        "the model runs in Python (torchstitch compiles what @ts.compile_mode, rules= or a "
        "plugin claims). Claim the root: ts.script(model, ...), ts.trace(model, example_inputs), "
        f"or ts.compile(model, root_strategy={example!r}) (or rules=[ts.Rule({example!r}, path='')]); "
        f"compiling strategies: {', '.join(map(repr, compiling)) or '(none)'}",
        TorchstitchWarning,
    )


def _check_plan(plugin_set: PluginSet, plan: Plan, module: torch.nn.Module, options: CompileOptions) -> None:
    """The plugins' plan-time checks (the TorchScript plugin's for ``freeze=True``, say)."""
    plugin_set.call(
        "torchstitch_check_plan", plan=plan, module=module, options=options, strategies=plugin_set.strategies
    )


def _check_initialized(tree: PlannedTree, example_args: tuple[Any, ...] | None) -> None:
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
        if (example_args is None and node.region is None) or not uninitialized_lazy(module):
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


def _caller_inputs(inputs: Mapping[str, Any] | None, plan: Plan) -> dict[str, TracingInputs]:
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs= must be a dict of path -> tracing inputs, got {type(inputs).__name__}")
    out = {}
    for path, value in inputs.items():
        if path not in plan:
            known = ", ".join(repr(n.path) for n in plan.walk() if n.path)
            raise PlanError(
                f"inputs= names path {path!r}, which is not in the model; paths: {known or '(none)'}",
                path=path,
            )
        out[path] = normalize_tracing_inputs(value, path)
    return out


class _Run:
    """The mutable state of one compile call (never shared between calls)."""

    def __init__(
        self,
        options: CompileOptions,
        plugins: PluginSet,
        tree: PlannedTree,
        example_args: tuple[Any, ...] | None,
        caller_inputs: dict[str, TracingInputs],
        state: CallerState,
    ) -> None:
        self.options = options
        self.plugins = plugins
        self.plan = tree.plan
        self.modules = tree.modules
        self.example_args = example_args
        self.caller_inputs = caller_inputs
        self.recording: Recording | None = None
        #: the caller's buffers: every run starts from them
        self.state = state
        #: ids of the caller's modules whose buffers the recording run changed: their
        #: recorded outputs need not be what a run from the caller's state returns
        self.stateful: set[int] = set()
        #: id(user module) -> its result (compiled module, shell, or the caller's own compiled module)
        self.results: dict[int, torch.nn.Module] = {}
        #: id(user module) -> (user module, shell)
        self.shells: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self.outcomes: dict[str, Outcome] = {}
        #: paths whose strategy produced a compiled module, in compilation order
        self.compiled_paths: list[str] = []
        #: path -> the tracing inputs its compiled module was verified on
        self.verified_on: dict[str, TracingInputs] = {}
        #: path -> (strategy, paths of mode-dependent modules) of nodes fixed in training mode
        self.fixed_in_training: dict[str, tuple[str, list[str]]] = {}
        #: CompileContext.scratch: the strategies' per-call memo
        self.scratch: dict[Any, Any] = {}
        #: whether any node is compiled (else the root is not verified)
        self.compiles_any = any(node.region is not None for node in self.plan.walk())
        n_claimed = sum(1 for n in self.plan.walk() if n.claim is not None and n.shared_with is None)
        self.progress = Progress(n_claimed if options.progress else 0)

    # -- orchestration -------------------------------------------------------

    def execute(self) -> torch.nn.Module:
        root = self.modules[""]
        targets = self._recording_targets()
        if self.example_args is not None and (self.options.verify or targets):
            self.recording = record(
                root,
                self.example_args,
                targets,
                limit=max(2, self.options.n_trace_checks),
                modules=self.modules,
            )
            self.stateful = self.state.changed()
            self.state.restore()
        try:
            result = self._build(self.plan.root)
        finally:
            self.progress.close()
        result = self.plugins.chain(
            "torchstitch_finalize", result, "module", torch.nn.Module, plan=self.plan, options=self.options
        )
        if self.recording is not None and self.options.verify and self.compiles_any:
            self._verify_root(result)
        if self.options.in_place:
            self._commit()
            if result is self.shells.get(id(root), (None, None))[1]:
                result = root
        return result

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

    # -- stitching -----------------------------------------------------------

    def _build(self, node: Node) -> torch.nn.Module:
        if node.shared_with is not None:
            node = self.plan[node.shared_with]
        module = self.modules[node.path]
        key = id(module)
        if key in self.results:
            return self.results[key]
        if isinstance(module, self.plugins.compiled_types):
            # the caller's own compiled module (a TorchScript one) cannot be shelled: shared as is
            self.results[key] = module
            return module
        # every Python module gets a shell, compiled or not: the compiled model must not
        # share anything with the caller's but tensors (``compiled.eval()``, hooks)
        shell = make_shell(module)
        self.shells[key] = (module, shell)
        self.state.add_shell(module, shell)
        for child in node.children:
            shell._modules[child.name] = self._build(child)
        result = shell if node.claim is None else self._compile_node(node, shell)
        self.results[key] = result
        return result

    def _commit(self) -> None:
        """Copy compiled children into the caller's modules (``in_place=True``)."""
        shell_of = {key: shell for key, (_, shell) in self.shells.items()}
        for original, shell in self.shells.values():
            for name, child in shell._modules.items():
                current = original._modules.get(name)
                if child is current or (current is not None and shell_of.get(id(current)) is child):
                    continue
                original._modules[name] = child

    # -- one node ------------------------------------------------------------

    def _compile_node(self, node: Node, shell: torch.nn.Module) -> torch.nn.Module:
        assert node.claim is not None
        self.progress.node(node.path, node.claim.strategy)
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
                if self.options.on_error == "raise":
                    raise
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
        self.state.restore(original)
        start = time.perf_counter()
        provider = self.plugins.providers[strategy.name]
        with self._caller_tensors_kept(guard, node, strategy, "Strategy.compile", provider):
            try:
                compiled = strategy.compile(module, context)
            except StitchError:
                raise
            except Exception as exc:
                raise NodeCompileError(
                    f"{strategy.name} failed on {node.type_name}: {exception_summary(exc)}",
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
        self.state.restore(original)  # tracing ran the node
        n_verified, max_diff = 0, None
        if strategy.verify and self.options.verify and inputs:
            n_verified, max_diff = self._verify_node(node, strategy, compiled, inputs, source)
            self.verified_on[node.path] = inputs
        log.debug(
            "%s: %s in %.1f ms (inputs: %s)",
            display_path(node.path),
            strategy.name,
            seconds * 1e3,
            source,
        )
        return compiled, Outcome(
            seconds=seconds, inputs_source=source, n_verified=n_verified, max_abs_diff=max_diff
        )

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
            example_inputs=self.example_args,
            caller_inputs=self.caller_inputs,
            recorded_inputs={} if self.recording is None else self.recording.inputs,
            n_trace_checks=self.options.n_trace_checks,
            strategies=self.plugins.strategies,
            scratch=self.scratch,
        )

    def _tracing_inputs(
        self, node: Node, module: torch.nn.Module, strategy: Strategy
    ) -> tuple[TracingInputs, str]:
        asked, provider, inputs = self.plugins.call_first(
            "torchstitch_tracing_inputs",
            module=module,
            node=node,
            n=self.options.n_trace_checks,
            context=self._context(node, None, [], None),
        )
        claimant = None if node.claim is None else node.claim.claimant
        if provider is None:
            if self.example_args is None:
                recorded = "no example_inputs were given to record from"
            else:
                recorded = "the eager run on example_inputs never called it"
            raise TracingInputsError(
                f"{node.type_name} needs tracing inputs for {strategy.name!r} and no provider had "
                f"any (asked, in order: {', '.join(asked)}; {recorded}). Pass example_inputs= "
                f"for the whole model, inputs={{{node.path!r}: (args...)}}, or define "
                f"_make_tracing_inputs(n) on {node.type_name.rpartition('.')[2]}",
                path=node.path,
                strategy=strategy.name,
                claimant=claimant,
            )
        try:
            inputs = check_tracing_inputs(module, inputs, path=node.path, provider=provider)
        except TracingInputsError as exc:
            raise TracingInputsError(
                exc.message, path=node.path, strategy=strategy.name, claimant=claimant
            ) from None
        return inputs, provider

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

    def _verify_node(
        self,
        node: Node,
        strategy: Strategy,
        compiled: torch.nn.Module,
        inputs: TracingInputs,
        source: str | None,
    ) -> tuple[int, float]:
        original = self.modules[node.path]
        claimant = None if node.claim is None else node.claim.claimant
        recorded = None
        if (
            self.recording is not None
            and inputs is self.recording.inputs.get(node.path)
            and not any(id(m) in self.stateful for m in original.modules())
        ):
            recorded = self.recording.outputs[node.path]
        largest = 0.0
        count = 0
        for i, call in enumerate(inputs):
            for method, args in call.items():
                if recorded is not None:
                    expected = recorded[i]
                else:
                    expected = self._run(node, strategy, getattr(original, method), args, "eager")
                _check_verifiable(expected, node.path, strategy.name, claimant)
                actual = self._run(node, strategy, getattr(compiled, method), args, "compiled")
                diff, mismatch = compare(
                    expected, actual, self._tolerance(node.path, strategy), self._keeps_fields(strategy)
                )
                largest = max(largest, diff)
                count += 1
                if mismatch is not None:
                    raise VerificationError(
                        f"{strategy.name} of {node.type_name} differs from eager on tracing input "
                        f"{i} ({method}, from {source}) at {mismatch.where}: {mismatch.detail}"
                        + (
                            ". A data-dependent branch fixed by the recorded run is the usual "
                            f"cause: claim the module {strategy.fallbacks[0]!r} instead"
                            if i > 0 and strategy.fallbacks
                            else ""
                        ),
                        max_abs_diff=mismatch.max_abs_diff,
                        path=node.path,
                        strategy=strategy.name,
                        claimant=None if node.claim is None else node.claim.claimant,
                    )
        return count, largest

    def _keeps_fields(self, strategy: Strategy) -> list[str]:
        """``strategy``'s fallbacks that compile the source (no recorded run): those keep a
        NamedTuple output's fields, which a recorded run loses."""
        strategies = self.plugins.strategies
        return [n for n in strategy.fallbacks if n in strategies and not strategies[n].needs_inputs]

    def _run(self, node: Node, strategy: Strategy, fn, args: tuple, which: str) -> Any:
        self.state.restore(self.modules[node.path])
        try:
            if which == "compiled":
                return self.plugins.call_around(
                    "torchstitch_verification_run", function=fn, args=args, path=node.path
                )
            return call_for_values(fn, args)
        except Exception as exc:
            raise VerificationError(
                f"running the {which} module on its tracing inputs raised {exception_summary(exc)}",
                path=node.path,
                strategy=strategy.name,
                claimant=None if node.claim is None else node.claim.claimant,
            ) from exc

    def _verify_root(self, compiled: torch.nn.Module) -> None:
        assert self.recording is not None and self.example_args is not None
        root = self.plan.root
        claim = root.claim
        _check_verifiable(
            self.recording.root_output,
            "",
            None if claim is None else claim.strategy,
            None if claim is None else claim.claimant,
        )
        self.state.restore()
        try:
            actual = self.plugins.call_around(
                "torchstitch_verification_run", function=compiled, args=self.example_args, path=""
            )
        except Exception as exc:
            raise self._root_raised(compiled, exc) from exc
        diff, mismatch = compare(self.recording.root_output, actual, self._tolerance(""))
        if mismatch is not None:
            culprits = self._culprits(compiled)
            if culprits:
                where = "; ".join(str(c) for c in culprits)
                hint = f" Compiled submodules that diverge on their own inputs (deepest): {where}"
            else:
                hint = (
                    " No compiled submodule diverges on its own inputs: the difference comes from "
                    "how they are combined (e.g. a traced branch in a parent)"
                )
            raise VerificationError(
                f"the compiled model differs from eager on example_inputs at {mismatch.where}: "
                f"{mismatch.detail}.{hint}",
                culprits=culprits,
                max_abs_diff=mismatch.max_abs_diff,
                path="",
                strategy=None if claim is None else claim.strategy,
                claimant=None if claim is None else claim.claimant,
            )
        previous = self.outcomes.get("", Outcome())
        self.outcomes[""] = attrs.evolve(
            previous,
            n_verified=previous.n_verified + (0 if self._root_verified_on_example_inputs() else 1),
            max_abs_diff=max(diff, previous.max_abs_diff or 0.0),
        )

    def _culprits(self, compiled: torch.nn.Module) -> list[Divergence]:
        """The deepest compiled pieces that raise, or differ from eager, on their own inputs."""
        self.state.restore()
        try:
            return locate_with(
                self.plugins,
                self.modules[""],
                compiled,
                self.example_args,
                paths=self.compiled_paths,
                tolerance=self._tolerance(""),
            )
        except StitchError:  # the eager model failed this time: no piece to blame
            log.debug("could not probe the compiled pieces", exc_info=True)
            return []

    def _root_raised(self, compiled: torch.nn.Module, exc: Exception) -> VerificationError:
        """The error for a compiled model that raised on ``example_inputs``: at the deepest
        compiled pieces that fail on their own inputs (a child whose unused (TorchScript)
        method runs, or whose output a Python parent cannot use), else at the root."""
        culprits = self._culprits(compiled)
        where = culprits[0].path if culprits else ""
        claim = self.plan[where].claim
        summary = exception_summary(exc)
        if not culprits:
            hint = (
                " No compiled submodule fails on its own inputs: the error comes from how they are combined"
            )
        elif where:
            hint = " Compiled submodules that fail on their own inputs (deepest): " + "; ".join(
                str(c) for c in culprits
            )
        else:
            hint = ""  # the root itself, and none of its compiled children
        return VerificationError(
            f"the compiled model raised on example_inputs: {summary}"
            + ("" if summary.endswith(".") else ".")
            + hint,
            culprits=culprits,
            path=where,
            strategy=None if claim is None else claim.strategy,
            claimant=None if claim is None else claim.claimant,
        )

    def _root_verified_on_example_inputs(self) -> bool:
        """Whether the root's own check already ran on ``example_inputs`` (a traced root's
        recorded input is ``example_inputs``): the plan counts distinct inputs."""
        return any(
            same_inputs(call.get("forward"), self.example_args) for call in self.verified_on.get("", ())
        )

    def _tolerance(self, path: str, strategy: Strategy | None = None) -> Tolerance:
        """Verification's tolerance at ``path``: the caller's ``atol``/``rtol``, else the loosest
        that ``strategy`` and the strategies of the nodes compiled below ``path`` declare, else
        ``None`` (by dtype): a module is as close to eager as its least precise piece."""
        caller = self.options.tolerance
        prefix = f"{path}." if path else ""
        declared = [] if strategy is None else [strategy]
        declared += [
            self.plugins.strategies[self.outcomes[p].attempts[-1].strategy]
            for p in self.compiled_paths
            if p.startswith(prefix)
        ]
        atol = max((s.atol for s in declared if s.atol is not None), default=None)
        rtol = max((s.rtol for s in declared if s.rtol is not None), default=None)
        return Tolerance(
            atol if caller.atol is None else caller.atol,
            rtol if caller.rtol is None else caller.rtol,
        )

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

    def warn_training_mode(self) -> None:
        if not self.fixed_in_training:
            return
        nodes = "; ".join(
            f"{display_path(path)} ({strategy}: {', '.join(display_path(p) for p in dependent)})"
            for path, (strategy, dependent) in self.fixed_in_training.items()
        )
        # strategies that compile without a recorded run follow the flag at run time
        followers = sorted(
            {
                name
                for strategy, _ in self.fixed_in_training.values()
                for name in self.plugins.strategies[strategy].fallbacks
                if name in self.plugins.strategies and not self.plugins.strategies[name].needs_inputs
            }
        )
        warn(
            f"{len(self.fixed_in_training)} node(s) compiled in training mode hold modules whose "
            f"computation depends on it (batch statistics, dropout): {nodes}. Their compiled form "
            "keeps training behaviour after .eval(); call model.eval() before compiling for "
            "inference"
            + (
                f", or claim them {' or '.join(map(repr, followers))}, which follow .train()/.eval()"
                if followers
                else ""
            ),
            TorchstitchWarning,
        )

    def warn_fallbacks(self) -> None:
        fell = [
            f"{display_path(p)} ({' -> '.join(a.strategy for a in o.attempts)}"
            + (", left to its parent" if all(a.error_type for a in o.attempts) else "")
            + ")"
            for p, o in self.outcomes.items()
            if any(a.error_type for a in o.attempts)
        ]
        if fell:
            warn(
                f"{len(fell)} node(s) fell back after their strategy failed: {'; '.join(fell)}. "
                "See CompileResult.fallbacks or the plan for the errors.",
                TorchstitchWarning,
            )


def _check_verifiable(expected: Any, path: str, strategy: str | None, claimant: str | None) -> None:
    """Refuse to verify outputs on the meta device: they have shapes but no values to compare."""
    leaves = torch.utils._pytree.tree_leaves(expected)
    if any(isinstance(leaf, torch.Tensor) and leaf.is_meta for leaf in leaves):
        raise VerificationError(
            "cannot verify against eager: the eager output is on the meta device, which has "
            "no values to compare; pass verify=False to compile a model on the meta device",
            path=path,
            strategy=strategy,
            claimant=claimant,
        )


def make_shell(module: torch.nn.Module) -> torch.nn.Module:
    """A new object of the module's class sharing its tensors, with its own containers.

    Not ``copy.copy``/``deepcopy``: those run ``__getstate__``/``__reduce__`` and
    may duplicate weights.  Strategies may set attributes on the shell (as
    TorchScript's script sets ``__overloads__``) without touching the original,
    and hooks registered on one later are not registered on the other.
    """
    shell = object.__new__(type(module))
    state = shell.__dict__
    state.update(module.__dict__)
    for name, value in module.__dict__.items():
        if "_hooks" in name and isinstance(value, dict):  # _forward_hooks, _state_dict_hooks, ...
            state[name] = value.copy()
    state["_modules"] = dict(module._modules)
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = dict(module._buffers)
    state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
    return shell
