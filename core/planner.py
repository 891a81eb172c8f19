"""Planning: one walk over the module tree that resolves claims and validates regions.

Nothing is compiled, and the user's module is only read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import NoReturn

import attrs
import torch

from ._warn import warn
from .claims import Claim, ClaimKind, Rule
from .errors import (
    AmbiguousClaimError,
    PlanError,
    PluginError,
    TorchstitchWarning,
    UnknownStrategyError,
    display_path,
    first_line,
)
from .ir import Node, Plan, short_type_name
from .plugin_manager import PluginSet
from .strategy import Strategy

#: the reason of the claim that sends an unclaimed root to the compile target
ROOT_TO_TARGET_REASON = (
    "nothing claims the root and every claim below can go to the target, so the root goes to it"
)

__all__ = ["Planner", "PlannedTree"]

log = logging.getLogger(__name__)


@attrs.frozen
class PlannedTree:
    """A plan with the live modules it was made from (kept out of the plan itself)."""

    plan: Plan
    #: path -> the user's module at that path (aliases of shared modules included)
    modules: dict[str, torch.nn.Module] = attrs.field(eq=False, repr=False)


def check_rules(rules: Sequence[Rule], plugin_set: PluginSet) -> tuple[Rule, ...]:
    """Validate the caller's rules before the walk: types and strategy names."""
    if isinstance(rules, Rule):
        rules = (rules,)
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise TypeError(f"rules= must be a list of torchstitch.Rule, got {rules!r}")
    checked = tuple(rules)
    for i, rule in enumerate(checked):
        if not isinstance(rule, Rule):
            raise TypeError(f"rules[{i}] must be a torchstitch.Rule, got {rule!r}")
        if rule.strategy is not None and rule.strategy not in plugin_set.strategies:
            raise UnknownStrategyError(
                f"rules[{i}] {rule.describe()} names unknown strategy {rule.strategy!r}; "
                f"known strategies: {_known(plugin_set)}"
            )
    return checked


def _known(plugin_set: PluginSet) -> str:
    return ", ".join(repr(n) for n in sorted(plugin_set.strategies))


class Planner:
    """Builds a :class:`Plan` for one call.

    :param plugin_set: the call's plugins.
    :param rules: the caller's override rules, first match wins.
    :param root_claim: an override for the root (``script()`` / ``trace()``).
    :param recurse: if false, only the root is claimed (by rules, decorators and
        plugins alike); everything below inherits.
    :param target: an artifact family (``"export"``): every claim for a compiling
        strategy of another family goes to a *stand-in*, a strategy of the target family
        declaring ``replaces``: one that replaces the claimed strategy, or for a
        ``portable`` claim the first stand-in by name; nodes with no stand-in are a
        PlanError.  A portable claim inside a region of the target family inherits.  When
        nothing in the tree claims anything, the root goes to the first stand-in, so a model
        with no annotations is compiled for the target rather than left in Python; so does
        a root nothing claims above claims that can all go into the target's region
        (``root_to_target=False`` leaves such a root in Python: the engine's fallback).
    """

    def __init__(
        self,
        plugin_set: PluginSet,
        rules: Sequence[Rule] = (),
        *,
        root_claim: Claim | None = None,
        recurse: bool = True,
        target: str | None = None,
        root_to_target: bool = True,
    ) -> None:
        self.plugins = plugin_set
        self.root_to_target = root_to_target
        self.target = target
        if target is not None:
            families = sorted({s.family for s in plugin_set.strategies.values()})
            if target not in families:
                raise PlanError(
                    f"unknown target {target!r}; the registered strategies produce: "
                    f"{', '.join(map(repr, families))}"
                )
        self._untargetable: list[tuple[str, Claim]] = []
        self._stand_ins = self._target_stand_ins()
        self.rules = check_rules(rules, plugin_set)
        self.root_claim = root_claim
        self.recurse = recurse
        self._type_names: dict[type, str] = {}
        self._compiled_types = plugin_set.compiled_types
        self._rule_hits = [0] * len(self.rules)  # nodes where the rule decided
        self._rule_matches = [0] * len(self.rules)  # nodes where it matched, decided or not
        #: a rule said the root inherits (stays in Python): the target does not take it
        self._root_left_by_rule = False

    def build(self, module: torch.nn.Module) -> PlannedTree:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"expected a torch.nn.Module to compile, got {type(module).__module__}."
                f"{type(module).__qualname__}"
            )
        modules: dict[str, torch.nn.Module] = {}
        first_path: dict[int, str] = {}
        claims_at: dict[int, Claim | None] = {}
        root = self._visit(module, "", None, modules, first_path, claims_at)
        if self._stand_ins and all(claim is None for claim in claims_at.values()):
            root = self._root_to_target(root)
        elif self.root_to_target and self._root_may_go_to_target(root, claims_at):
            root = self._revisit_with_root_for_target(module, modules, first_path, claims_at)
        if self._untargetable:
            self._raise_untargetable()
        for i, rule in enumerate(self.rules):
            if not self._rule_matches[i]:
                warn(
                    f"rules[{i}] {rule.describe()} matched no module in {self._short_name(type(module))}",
                    TorchstitchWarning,
                )
            elif not self._rule_hits[i]:
                warn(
                    f"rules[{i}] {rule.describe()} never applies: an earlier rule matches first "
                    "at every node it matches",
                    TorchstitchWarning,
                )
        return PlannedTree(Plan(root, colors=self._colors(claims_at.values())), modules)

    def _colors(self, claims: Iterable[Claim | None]) -> dict[str, str]:
        """The colours the plan's strategies declared, for its pictures."""
        used = {claim.strategy for claim in claims if claim is not None}
        strategies = self.plugins.strategies
        return {name: color for name in sorted(used) if (color := strategies[name].color)}

    # -- the walk ----------------------------------------------------------

    def _visit(
        self,
        module: torch.nn.Module,
        path: str,
        region: tuple[str, Strategy] | None,
        modules: dict[str, torch.nn.Module],
        first_path: dict[int, str],
        claims_at: dict[int, Claim | None],
    ) -> Node:
        modules[path] = module
        offers, claim = self._resolve(module, path)
        if claim is not None and self.target is not None:
            claim = self._retarget(path, claim, region)
        strategy = None if claim is None else self.plugins.strategies[claim.strategy]
        if claim is not None and strategy is not None and region is not None:
            if self._must_fit(strategy, region[1]):
                self._check_containment(module, path, claim, strategy, region)

        if strategy is None:
            node_region = region
        elif strategy.compiles:
            node_region = (path, strategy)
        else:
            node_region = None  # stays in Python; its children may be compiled on their own

        shared = first_path.get(id(module))
        if shared is not None and (shared == "" or path.startswith(shared + ".")):
            raise PlanError(
                f"module {self._short_name(type(module))} contains itself (it is also its "
                f"ancestor at {display_path(shared)}); a module tree must not have cycles",
                path=path,
            )
        if shared is not None:
            self._check_same_strategy(module, shared, claims_at[id(module)], path, claim)
            if node_region is not None:
                # the subtree is compiled once, for its first path; check that it can also
                # sit in this path's region (an unsupported module below, say)
                self._check_shared_subtree(module, path, node_region, first_path, claims_at, set())
            return Node(
                path=path,
                type_name=self._type_name(type(module)),
                claim=claim,
                offers=offers,
                region=None if node_region is None else node_region[0],
                shared_with=shared,
            )
        first_path[id(module)] = path
        claims_at[id(module)] = claim

        prefix = f"{path}." if path else ""
        # an already compiled module (a strategy's compiled_types) is a leaf: its children
        # are not Python modules
        if isinstance(module, self._compiled_types):
            children: tuple[Node, ...] = ()
        else:
            visit = self._visit
            children = tuple(
                [
                    visit(child, prefix + name, node_region, modules, first_path, claims_at)
                    for name, child in module._modules.items()
                    if child is not None
                ]
            )
        return Node(
            path=path,
            type_name=self._type_name(type(module)),
            children=children,
            claim=claim,
            offers=offers,
            region=None if node_region is None else node_region[0],
        )

    def _check_same_strategy(
        self,
        module: torch.nn.Module,
        first: str,
        first_claim: Claim | None,
        path: str,
        claim: Claim | None,
    ) -> None:
        if (first_claim is None) != (claim is None) or (
            claim is not None and first_claim is not None and claim.strategy != first_claim.strategy
        ):
            raise PlanError(
                f"module {self._short_name(type(module))} is shared by paths "
                f"{display_path(first)} ({_strategy_text(first_claim)}) and "
                f"{display_path(path)} ({_strategy_text(claim)}); a shared module is "
                "compiled once, so give both paths the same strategy",
                path=path,
                strategy=None if claim is None else claim.strategy,
                claimant=None if claim is None else claim.claimant,
            )

    def _check_shared_subtree(
        self,
        module: torch.nn.Module,
        path: str,
        region: tuple[str, Strategy] | None,
        first_path: dict[int, str],
        claims_at: dict[int, Claim | None],
        seen: set[tuple[int, str | None]],
    ) -> None:
        """Claims and containment below a shared module's later path (no nodes are made)."""
        if isinstance(module, self.plugins.compiled_types):
            return
        prefix = f"{path}." if path else ""
        for name, child in module._modules.items():
            if child is None:
                continue
            key = (id(child), None if region is None else region[0])
            if key in seen:
                continue
            seen.add(key)
            child_path = prefix + name
            _, claim = self._resolve(child, child_path)
            if claim is not None and self.target is not None:
                claim = self._retarget(child_path, claim, region)
            if id(child) in claims_at:
                self._check_same_strategy(
                    child, first_path[id(child)], claims_at[id(child)], child_path, claim
                )
            strategy = None if claim is None else self.plugins.strategies[claim.strategy]
            if claim is not None and strategy is not None and region is not None:
                if self._must_fit(strategy, region[1]):
                    self._check_containment(child, child_path, claim, strategy, region)
            if strategy is None:
                child_region = region
            elif strategy.compiles:
                child_region = (child_path, strategy)
            else:
                child_region = None
            self._check_shared_subtree(child, child_path, child_region, first_path, claims_at, seen)

    def _resolve(self, module: torch.nn.Module, path: str) -> tuple[tuple[Claim, ...], Claim | None]:
        offers: list[Claim] = []
        if path == "" and self.root_claim is not None:
            offers.append(self.root_claim)
        forced_inherit = False
        decided = False
        asked = self.recurse or path == ""
        if asked and self.rules:
            for i, rule in enumerate(self.rules):
                if decided and self._rule_matches[i]:
                    continue  # only needed to tell "shadowed" from "matched nothing"
                try:
                    matched = rule.matches(module, path)
                except Exception as exc:
                    raise PlanError(
                        f"rules[{i}] {rule.describe()} raised {type(exc).__name__} while matching "
                        f"{self._short_name(type(module))}: {first_line(exc)}",
                        path=path,
                    ) from exc
                if not matched:
                    continue
                self._rule_matches[i] += 1
                if decided:
                    continue
                decided = True
                self._rule_hits[i] += 1
                if rule.strategy is None:
                    forced_inherit = True
                else:
                    offers.append(Claim(rule.strategy, ClaimKind.OVERRIDE, f"rules[{i}] {rule!r}"))
        if asked:
            for claim in self.plugins.claims(module, path):
                if not _is_plugin_claim(claim):
                    self._bad_claim(module, path, claim)
                offers.append(claim)
        if forced_inherit and path == "":
            self._root_left_by_rule = True
        if not offers:
            return (), None
        offers.sort(key=lambda c: c.kind, reverse=True)
        offered = tuple(offers)
        if forced_inherit and (self.root_claim is None or path != ""):
            return offered, None
        winner = offers[0]
        rivals = [c for c in offers if c.kind == winner.kind and c.strategy != winner.strategy]
        if rivals and winner.kind is not ClaimKind.OVERRIDE:
            claimants = "; ".join(f"{c.claimant} says {c.strategy!r}" for c in [winner, *rivals])
            raise AmbiguousClaimError(
                f"{len(rivals) + 1} {winner.kind} claims disagree for "
                f"{self._short_name(type(module))}: {claimants}. Settle it with an override, "
                f"e.g. rules=[torchstitch.Rule({winner.strategy!r}, path={path!r})]",
                path=path,
                strategy=winner.strategy,
                claimant=winner.claimant,
            )
        if winner.strategy not in self.plugins.strategies:
            raise UnknownStrategyError(
                f"unknown strategy {winner.strategy!r}; known strategies: {_known(self.plugins)}",
                path=path,
                strategy=winner.strategy,
                claimant=winner.claimant,
            )
        return offered, winner

    def _bad_claim(self, module: torch.nn.Module, path: str, claim: object) -> NoReturn:
        """Blame the plugin that answered ``torchstitch_claim`` with ``claim``."""
        plugin = self.plugins.who_answered(
            "torchstitch_claim",
            lambda answer: answer is not None and not _is_plugin_claim(answer),
            module=module,
            path=path,
        )
        if isinstance(claim, Claim):
            raise PluginError(
                "returned an 'override' claim; override is reserved for the "
                "caller's rules (use 'rule' or 'attribute')",
                plugin=plugin,
                hook="torchstitch_claim",
                path=path,
            )
        raise PluginError(
            f"must return a torchstitch.Claim or None, got {claim!r}",
            plugin=plugin,
            hook="torchstitch_claim",
            path=path,
        )

    def _target_stand_ins(self) -> tuple[str, ...]:
        """The target family's compiling strategies that declare ``replaces``, by name."""
        if self.target is None:
            return ()
        return tuple(
            name
            for name, s in sorted(self.plugins.strategies.items())
            if s.family == self.target and s.compiles and s.replaces
        )

    def _root_may_go_to_target(self, root: Node, claims_at: dict[int, Claim | None]) -> bool:
        """Whether the root, which nothing claims, may go to the target: no rule left it in
        Python, and every claim can go into a region of the target (none keeps its module
        in Python, as ``unsupported`` does, and none was left untargetable)."""
        strategies = self.plugins.strategies
        return (
            bool(self._stand_ins)
            and root.claim is None
            and self.root_claim is None
            and not self._root_left_by_rule
            and not self._untargetable
            and all(claim is None or strategies[claim.strategy].compiles for claim in claims_at.values())
        )

    def _revisit_with_root_for_target(
        self,
        module: torch.nn.Module,
        modules: dict[str, torch.nn.Module],
        first_path: dict[int, str],
        claims_at: dict[int, Claim | None],
    ) -> Node:
        """Plan again with the root claimed for the target: asked for the target, with a root
        nothing claims and every claim below able to go into the target's region (e3nn's
        modules inside NequIP's model), the caller gets one artifact of the target rather
        than a root in Python around compiled pieces (the engine falls back to that plan
        when the root's compile fails)."""
        self.root_claim = Claim(
            self._stand_ins[0],
            ClaimKind.DEFAULT,
            f"target={self.target!r}",
            ROOT_TO_TARGET_REASON,
        )
        self._rule_hits = [0] * len(self.rules)
        self._rule_matches = [0] * len(self.rules)
        for found in (modules, first_path, claims_at):
            found.clear()
        return self._visit(module, "", None, modules, first_path, claims_at)

    def _root_to_target(self, root: Node) -> Node:
        """A tree nothing claimed, its root claimed for the target: asked for the target
        (a plain torchvision model), the caller gets it rather than the model in Python."""
        claim = Claim(
            self._stand_ins[0],
            ClaimKind.DEFAULT,
            f"target={self.target!r}",
            "nothing in the model claims a strategy, so the root goes to the target",
        )

        def leave(node: Node, children: dict[str, Node]) -> Node:
            return attrs.evolve(node, region="", children=tuple(children.values()))

        return attrs.evolve(Plan(root).fold(leave, once=False), claim=claim)

    def _retarget(self, path: str, claim: Claim, region: tuple[str, Strategy] | None) -> Claim | None:
        """``claim`` for the target family; ``None``: the node inherits (see below)."""
        strategy = self.plugins.strategies[claim.strategy]
        if not strategy.compiles or strategy.family == self.target:
            return claim
        if claim.portable and region is not None and region[1].family == self.target:
            # the claim only said the module *can* be compiled: the enclosing target region
            # compiles it with its own code (e3nn's generated kernels, which the eager run
            # may never call, need no inputs of their own)
            return None
        strategies = self.plugins.strategies
        name = next((n for n in self._stand_ins if claim.strategy in strategies[n].replaces), None)
        if name is None and claim.portable and self._stand_ins:
            name = self._stand_ins[0]
        if name is None:
            self._untargetable.append((path, claim))
            return claim
        reason = f"{claim.strategy!r} claim retargeted to {self.target!r}"
        return attrs.evolve(
            claim, strategy=name, reason=f"{reason}; {claim.reason}" if claim.reason else reason
        )

    def _must_fit(self, strategy: Strategy, region_strategy: Strategy) -> bool:
        """Whether a node claimed ``strategy`` is checked against its region: an untargetable
        claim, or one in an untargetable region, is reported at the end of the walk instead."""
        return not self._untargetable_region(region_strategy) and not self._untargetable_region(strategy)

    def _untargetable_region(self, region_strategy: Strategy) -> bool:
        """A region whose own claim could not be retargeted: reported as untargetable
        at the end of the walk, so its contents are not judged against it."""
        return self.target is not None and region_strategy.compiles and region_strategy.family != self.target

    def _raise_untargetable(self) -> None:
        stand_ins = [
            f"{s.name} (replaces {', '.join(sorted(s.replaces)) or 'nothing'})"
            for s in self.plugins.strategies.values()
            if s.family == self.target
        ]
        lines = [
            f"  {display_path(p)}: {c.strategy!r} claimed by {c.claimant}" for p, c in self._untargetable
        ]
        first_path, first_claim = self._untargetable[0]
        # one node per line: a real model lists dozens
        raise PlanError(
            f"{len(lines)} node(s) cannot go to target {self.target!r}:\n" + "\n".join(lines) + "\n"
            f"Target strategies: {', '.join(stand_ins)}. A {first_claim.strategy!r} claim usually "
            "marks data-dependent control flow: rewrite it with torch.cond, claim it 'unsupported' "
            "to keep it in Python outside the compiled regions, or override it with a Rule"
            + "".join(
                f". {s.retarget_hint}"
                for s in self.plugins.strategies.values()
                if s.family == self.target and s.retarget_hint
            ),
            path=first_path,
            strategy=first_claim.strategy,
            claimant=first_claim.claimant,
        )

    def _check_containment(
        self,
        module: torch.nn.Module,
        path: str,
        claim: Claim,
        strategy: Strategy,
        region: tuple[str, Strategy],
    ) -> None:
        region_path, region_strategy = region
        if region_strategy.can_hold(strategy):
            return
        allowed = ", ".join(sorted(region_strategy.can_contain or ()))
        raise strategy.containment_error(
            f"{self._short_name(type(module))} is claimed {strategy.name!r} "
            f"(family {strategy.family!r}) but sits inside the {region_strategy.name!r} region "
            f"rooted at {display_path(region_path)}, which can only contain {allowed}. "
            f"Claim it (or an ancestor below {display_path(region_path)}) with a strategy "
            f"that {region_strategy.name!r} can contain, or stop compiling "
            f"{display_path(region_path)} as a whole",
            path=path,
            strategy=strategy.name,
            claimant=claim.claimant,
        )

    def _type_name(self, cls: type) -> str:
        name = self._type_names.get(cls)
        if name is None:
            name = self._type_names[cls] = f"{cls.__module__}.{cls.__qualname__}"
        return name

    def _short_name(self, cls: type) -> str:
        """The class name messages show (the plan keeps :meth:`_type_name`)."""
        return short_type_name(self._type_name(cls))


def _is_plugin_claim(claim: object) -> bool:
    """What a plugin may answer ``torchstitch_claim`` with (override is the caller's)."""
    return isinstance(claim, Claim) and claim.kind is not ClaimKind.OVERRIDE


def _strategy_text(claim: Claim | None) -> str:
    return "inherits" if claim is None else f"{claim.strategy!r} by {claim.claimant}"
