"""The IR: an immutable tree of nodes, one per module path, with claims and outcomes.

The plan holds no tensors and no modules, so it can be printed, compared,
serialised to JSON and embedded in an artifact.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

from .claims import Claim, ClaimKind
from .errors import display_path
from .render import ansi, dot_color

#: what :meth:`Plan.fold` computes for each node
R = TypeVar("R")

__all__ = ["Attempt", "Node", "Outcome", "Plan", "short_type_name"]

log = logging.getLogger(__name__)

PLAN_FORMAT_VERSION = 1


def short_type_name(type_name: str) -> str:
    """The name a reader knows a class by: ``NormThenBranch`` for ``models.blocks.NormThenBranch``.

    Plan trees and error messages show it; the plan's JSON and verbose renderings keep
    the full name.  A class made inside a special method of another class, as torch makes
    one per ``fx.GraphModule`` (``torch.fx.graph_module.GraphModule.__new__.<locals>.
    GraphModuleImpl``), is shown by that class's name (``GraphModule``).

    :param type_name: a qualified name, ``module.QualName`` (as :attr:`Node.type_name`).
    """
    parts = type_name.split(".")
    if "<locals>" in parts:
        at = len(parts) - 1 - parts[::-1].index("<locals>")
        function = parts[at - 1] if at >= 1 else ""
        if at >= 2 and function.startswith("__") and function.endswith("__"):
            return parts[at - 2]
    return parts[-1]


def _float_or_none(value: float | None) -> float | str | None:
    # JSON has no NaN/inf; keep them readable and round-trippable
    if value is None or math.isfinite(value):
        return value
    return repr(value)


def _parse_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _color_dict(value: Mapping[str, str]) -> dict[str, str]:
    # typed, unlike a bare ``dict`` converter: Plan(colors=...) checks its argument
    return dict(value)


@attrs.frozen
class Attempt:
    """One try of one strategy on a node (several under ``on_error="fallback"``)."""

    #: strategy tried
    strategy: str
    #: ``None`` on success, else the exception type's name
    error_type: str | None = None
    #: first line of the error message
    error: str | None = None
    #: wall time of the try
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The attempt as JSON-ready data (part of :meth:`Outcome.to_dict`)."""
        return {
            "strategy": self.strategy,
            "error_type": self.error_type,
            "error": self.error,
            "seconds": self.seconds,
        }


@attrs.frozen
class Outcome:
    """What happened to a node during compilation (absent on a plan that was not compiled)."""

    #: wall time spent by the node's strategy (children excluded)
    seconds: float = 0.0
    #: the provider (plugin name) of the node's tracing inputs, if it needed any
    inputs_source: str | None = None
    #: how many distinct inputs the node was verified on (0: not verified)
    n_verified: int = 0
    #: largest absolute difference against eager found by verification
    max_abs_diff: float | None = None
    #: every strategy tried, in order; the last is the one that counts
    attempts: tuple[Attempt, ...] = ()
    #: the ``training`` flag fixed in the compiled node by a strategy that compiles one
    #: recorded run (``trace``, ``export``); ``None``: the compiled node follows
    #: ``.train()``/``.eval()`` (``script``), or nothing was compiled
    training: bool | None = None
    #: what the strategy said about how it compiled the node, as ``(key, value)`` pairs in
    #: the order given (``("dynamic", "atoms: pos[0], species[0]")``, ``("via", "make_fx")``);
    #: see :attr:`~torchstitch.CompileContext.notes`
    notes: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=lambda v: tuple(dict(v).items()))
    #: the compile cache's word on the node: ``"hit 1a2b3c4d"`` (loaded from the cache),
    #: ``"miss 1a2b3c4d"`` (compiled, then stored), with the key's short hash; ``"hit in
    #: PATH"`` (loaded as part of an ancestor's entry); ``None``: no cache
    cache: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data (part of :meth:`Node.to_dict`; ``NaN`` and infinities as text)."""
        return {
            "seconds": self.seconds,
            "inputs_source": self.inputs_source,
            "n_verified": self.n_verified,
            "max_abs_diff": _float_or_none(self.max_abs_diff),
            "attempts": [a.to_dict() for a in self.attempts],
            "training": self.training,
            "notes": dict(self.notes),
            "cache": self.cache,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Read back what :meth:`to_dict` wrote."""
        return cls(
            seconds=data["seconds"],
            inputs_source=data["inputs_source"],
            n_verified=data["n_verified"],
            max_abs_diff=_parse_float(data["max_abs_diff"]),
            attempts=tuple(Attempt(**a) for a in data["attempts"]),
            training=data.get("training"),  # absent from plans saved before it was recorded
            notes=data.get("notes", {}),
            cache=data.get("cache"),
        )


@attrs.frozen
class Node:
    """One module of the tree, at one path."""

    #: dotted path from the root; ``""`` is the root
    path: str
    #: qualified name of the module's class (:attr:`short_type_name` is what messages show)
    type_name: str
    #: child nodes, in ``named_children()`` order
    children: tuple[Node, ...] = ()
    #: the claim that decides the node's strategy; ``None``: the node inherits
    claim: Claim | None = None
    #: every claim offered for the node, strongest first (for explanations)
    offers: tuple[Claim, ...] = ()
    #: path of the node whose strategy compiles this one (itself if claimed by a
    #: compiling strategy); ``None``: it stays in Python
    region: str | None = None
    #: for a module instance reachable by several paths: the first path it was found at
    shared_with: str | None = None
    #: filled in by compilation
    outcome: Outcome | None = None

    @property
    def name(self) -> str:
        """Last component of the path (``""`` for the root)."""
        return self.path.rpartition(".")[2]

    @property
    def short_type_name(self) -> str:
        """The class name without its module (see :func:`short_type_name`): ``NormThenBranch``."""
        return short_type_name(self.type_name)

    @property
    def strategy(self) -> str | None:
        """The claimed strategy, or ``None`` when the node inherits."""
        return None if self.claim is None else self.claim.strategy

    @property
    def claim_kind(self) -> ClaimKind:
        return ClaimKind.DEFAULT if self.claim is None else self.claim.kind

    def to_dict(self) -> dict[str, Any]:
        """The node and its subtree as JSON-ready data; ``"type"`` is the full :attr:`type_name`."""
        return {
            "path": self.path,
            "type": self.type_name,
            "claim": None if self.claim is None else self.claim.to_dict(),
            "offers": [c.to_dict() for c in self.offers],
            "region": self.region,
            "shared_with": self.shared_with,
            "outcome": None if self.outcome is None else self.outcome.to_dict(),
            "children": [c.to_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        """Read back what :meth:`to_dict` wrote."""

        def claim(d: Mapping[str, Any] | None) -> Claim | None:
            return None if d is None else Claim(**d)

        return cls(
            path=data["path"],
            type_name=data["type"],
            children=tuple(cls.from_dict(c) for c in data["children"]),
            claim=claim(data["claim"]),
            offers=tuple(Claim(**c) for c in data["offers"]),
            region=data["region"],
            shared_with=data["shared_with"],
            outcome=None if data["outcome"] is None else Outcome.from_dict(data["outcome"]),
        )

    def describe(self) -> str:
        """One line: strategy, claim kind, claimant and reason, or how it inherits."""
        if self.shared_with is not None:
            return f"same module as {display_path(self.shared_with)}"
        if self.claim is None:
            where = "python" if self.region is None else f"inside {display_path(self.region)}"
            return f"inherit ({where})"
        text = f"{self.claim.strategy} · {self.claim.kind} by {self.claim.claimant}"
        if self.claim.reason:
            text += f" ({self.claim.reason})"
        return text


@attrs.frozen
class Plan:
    """The compilation plan of a module tree: read-only, deterministic, queryable.

    ``plan["layers.0"]`` looks a node up by path (``""`` is the root);
    :meth:`walk` visits nodes parents first, in module order.
    """

    #: the root node
    root: Node
    #: the colour each strategy of the plan declared (``Strategy.color``), by strategy name:
    #: how :meth:`render` and :meth:`to_dot` draw them; not compared
    colors: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False, converter=_color_dict)

    @functools.cached_property
    def _index(self) -> dict[str, Node]:
        """Path -> node, parents first: derived from ``root`` on first use (not a field: not
        compared, not shown), so planning a large tree does not pay for it until asked."""
        return {n.path: n for n in _preorder(self.root)}

    def __getitem__(self, path: str) -> Node:
        try:
            return self._index[path]
        except KeyError:
            raise KeyError(f"no node at path {path!r} in this plan") from None

    def __contains__(self, path: object) -> bool:
        return path in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Node]:
        return self.walk()

    def walk(self) -> Iterator[Node]:
        """Every node, parents before children, children in module order."""
        return iter(self._index.values())

    def post_order(self) -> Iterator[Node]:
        """Every node, children before parents: the order of compilation."""
        order: list[Node] = []
        self.fold(lambda node, _children: order.append(node), once=False)
        return iter(order)

    def fold(self, leave: Callable[[Node, dict[str, R]], R], *, once: bool = True) -> R:
        """Post-order over the plan: the one traversal of the IR (stitching, rendering and
        rebuilding use it).

        ``leave(node, children)`` is called children first, with the results of
        ``node``'s children by name (in module order), and returns ``node``'s result.

        :param once: a node that is the same module as an earlier one (``shared_with``)
            is not left again: its result is that node's (which the walk has already
            left, the earlier path being neither an ancestor nor later in module order).
            ``False``: every node is left, shared ones too (for pictures of every path).
        :returns: the root's result.
        """
        results: dict[str, R] = {}

        def visit(node: Node) -> R:
            if once and node.shared_with is not None:
                return results[node.shared_with]
            result = leave(node, {child.name: visit(child) for child in node.children})
            results[node.path] = result
            return result

        return visit(self.root)

    def map_nodes(self, update: Mapping[str, Node]) -> Plan:
        """A new plan with the nodes at the given paths replaced (children kept from ``update``)."""

        def leave(node: Node, children: dict[str, Node]) -> Node:
            replaced = update.get(node.path, node)
            if replaced.children is not node.children:
                return replaced  # an update that brings its own children keeps them
            kept = tuple(children.values())
            if all(a is b for a, b in zip(kept, node.children)):
                return replaced
            return attrs.evolve(replaced, children=kept)

        return Plan(self.fold(leave, once=False), colors=self.colors)

    # -- output --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data: ``{"torchstitch_plan": version, "root": node, "colors": ...}``."""
        data: dict[str, Any] = {"torchstitch_plan": PLAN_FORMAT_VERSION, "root": self.root.to_dict()}
        if self.colors:  # plans saved before strategies declared colours have none
            data["colors"] = dict(sorted(self.colors.items()))
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        """Deterministic JSON: the same model and options give byte-identical text."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Read back what :meth:`to_json` wrote.

        :raises ValueError: if ``text`` is not a plan of this format version.
        """
        data = json.loads(text)
        if data.get("torchstitch_plan") != PLAN_FORMAT_VERSION:
            raise ValueError(f"not a torchstitch plan (version {PLAN_FORMAT_VERSION}) JSON")
        return cls(Node.from_dict(data["root"]), colors=data.get("colors", {}))

    def render(self, *, color: bool = False, verbose: bool = False) -> str:
        """A text tree, one line per node: name, type, strategy, claim and outcome.

        :param color: colour each node's strategy with ANSI escapes (by strategy,
            as in :meth:`to_dot`); for terminals only (see
            ``torchstitch.core.render.stream_wants_color``).
        :param verbose: show each module's full type name (``models.blocks.Block``)
            instead of its class name (``Block``).
        """

        def leave(node: Node, children: dict[str, list[str]]) -> list[str]:
            describe = node.describe()
            if color:
                describe = ansi(describe, node.strategy, self.colors)
            type_name = node.type_name if verbose else node.short_type_name
            line = f"{node.name or '<root>'} ({type_name}): {describe}"
            if node.outcome is not None:
                line += f" — {_describe_outcome(node.outcome)}"
            lines = [line]
            for i, child_lines in enumerate(children.values()):
                last = i == len(children) - 1
                lines.append(("└── " if last else "├── ") + child_lines[0])
                lines += [("    " if last else "│   ") + rest for rest in child_lines[1:]]
            return lines

        lines: list[str] = self.fold(leave, once=False)
        return "\n".join(lines)

    def to_dot(self, *, name: str = "plan", verbose: bool = False) -> str:
        """Graphviz DOT source: one box per node, filled by strategy (``dot -Tsvg`` draws it).

        :param name: the graph's name.
        :param verbose: label each box with the module's full type name, not its class name.
        """
        return _plan_to_dot(self, name, verbose)

    def __str__(self) -> str:
        return self.render()


def _describe_outcome(outcome: Outcome) -> str:
    parts = [f"{outcome.seconds * 1e3:.1f} ms"]
    if outcome.inputs_source is not None:
        parts.append(f"inputs: {outcome.inputs_source}")
    if outcome.n_verified:
        parts.append(f"verified on {outcome.n_verified}, max|Δ| {outcome.max_abs_diff:.2e}")
    if outcome.training is not None:
        parts.append("train mode" if outcome.training else "eval mode")
    parts += [f"{key}: {value}" for key, value in outcome.notes]
    if outcome.cache is not None:
        parts.append(f"cache {outcome.cache}")
    failed = [a for a in outcome.attempts if a.error_type is not None]
    if failed:
        tried = ", ".join(f"{a.strategy} failed ({a.error_type})" for a in failed)
        parts.append(f"fell back: {tried}")
    return ", ".join(parts)


# -- Graphviz DOT ------------------------------------------------------------


def _dot_string(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _dot_label(node: Node, verbose: bool) -> str:
    type_name = node.type_name if verbose else node.short_type_name
    lines = ["<root>" if node.path == "" else node.name, type_name, node.describe()]
    if node.outcome is not None:
        lines.append(_describe_outcome(node.outcome))
    return "\n".join(lines)


def _plan_to_dot(plan: Plan, name: str, verbose: bool = False) -> str:
    """Graphviz DOT source for ``plan`` (see :meth:`Plan.to_dot`).

    Edges go from parent to child; a module reachable by several paths gets a
    dashed edge to the node it is shared with.  A legend lists the strategies
    that occur.  The output is deterministic.
    """
    ids = {node.path: f"n{i}" for i, node in enumerate(plan.walk())}
    out = [
        f"digraph {_dot_string(name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [color="gray40"];',
    ]
    used: dict[str | None, None] = {}
    for node in plan.walk():
        strategy = node.strategy
        used.setdefault(strategy, None)
        attributes = [
            f"label={_dot_string(_dot_label(node, verbose))}",
            f"fillcolor={_dot_string(dot_color(strategy, plan.colors))}",
            f"tooltip={_dot_string(node.path or '<root>')}",
        ]
        if node.claim is None:
            attributes.append('style="rounded,filled,dashed"')
        out.append(f"  {ids[node.path]} [{', '.join(attributes)}];")
    for node in plan.walk():
        for child in node.children:
            out.append(f"  {ids[node.path]} -> {ids[child.path]};")
        if node.shared_with is not None and node.shared_with in ids:
            out.append(
                f'  {ids[node.path]} -> {ids[node.shared_with]} [style=dashed, label="same module", '
                "constraint=false];"
            )
    out.append("  subgraph cluster_legend {")
    out.append('    label="strategies"; fontname="Helvetica"; fontsize=10; style=dashed;')
    for i, strategy in enumerate(used):
        text = "inherit" if strategy is None else strategy
        out.append(
            f"    legend{i} [label={_dot_string(text)}, "
            f"fillcolor={_dot_string(dot_color(strategy, plan.colors))}];"
        )
    out.append("  }")
    out.append("}")
    log.debug("rendered a plan of %d nodes as DOT", len(plan))
    return "\n".join(out) + "\n"


def _preorder(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))
