"""The ``torchstitch`` command line: ``plan``, ``compile``, ``strategies``, ``demo``.

Built on :mod:`argparse` rather than click or typer: the CLI is a thin layer
over :class:`torchstitch.Engine` with four subcommands and a handful of
options, which argparse handles well, and a command-line library would be a
new runtime dependency of every install (torchstitch depends only on torch,
pluggy and attrs).

``SPEC`` names a factory: ``package.module:factory`` or
``path/to/file.py:factory``.  The factory is called without arguments and
returns a module, or ``(module, example_inputs)``.

Exit codes: 0 success; 1 compile or verification failure (the message names
the node path, from :class:`torchstitch.StitchError`); 2 usage error (bad
``SPEC``, unknown factory, bad ``--rule``, unknown strategy).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pluggy
import torch

from .core.cache import ENV_VAR as CACHE_ENV_VAR
from .core.cache import CompileCache
from .core.errors import StitchError
from .core.hookspecs import PROJECT
from .core.plugin_manager import AUTOLOAD_ENV, BUILTIN_PLUGINS, CORE_PLUGINS, PluginSet, make_plugin_manager
from .core.render import ansi, stream_wants_color

__all__ = ["UsageError", "load_spec", "main", "parse_rule"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: ``--rule GLOB=inherit`` makes matching nodes inherit (``Rule(None, path=GLOB)``)
INHERIT = "inherit"

_BUILTIN_NAMES = frozenset(name for name, _ in (*CORE_PLUGINS, *BUILTIN_PLUGINS))


class UsageError(Exception):
    """A bad command line: printed as ``torchstitch: error: ...`` with exit code 2."""


# --------------------------------------------------------------------------
# SPEC and --rule
# --------------------------------------------------------------------------


def _import_file(path: Path) -> Any:
    """Import a Python file as a module registered in ``sys.modules``.

    Registered in ``sys.modules`` so ``inspect.getsource`` (which TorchScript
    needs) finds the file: under the file's stem, which plans show in type names,
    unless a module of that name is already imported (then a private name).
    """
    resolved = str(path.resolve())
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == resolved:
        return loaded
    if loaded is not None or not name.isidentifier():
        # the stem is taken (or not a module name): a private name that cannot shadow anything
        name = f"_torchstitch_spec_{zlib.crc32(resolved.encode()):08x}"
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_spec(spec: str) -> tuple[torch.nn.Module, Any]:
    """Call the factory ``SPEC`` names; return ``(module, example_inputs or None)``.

    :param spec: ``package.module:factory`` or ``path/to/file.py:factory``.
    :raises UsageError: for a malformed spec, a module that cannot be imported,
        a missing or non-callable factory, or a factory that returns something else
        than a module or ``(module, example_inputs)``.
    """
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise UsageError(f"bad SPEC {spec!r}: expected 'package.module:factory' or 'path/to/file.py:factory'")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    try:
        if is_file:
            path = Path(where)
            if not path.is_file():
                raise UsageError(f"bad SPEC {spec!r}: no such file {where!r}")
            namespace = _import_file(path)
        else:
            namespace = importlib.import_module(where)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(
            f"bad SPEC {spec!r}: importing {where!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(namespace, attr, None)
    if factory is None:
        candidates = sorted(
            name for name, value in vars(namespace).items() if callable(value) and not name.startswith("_")
        )
        raise UsageError(
            f"unknown factory {attr!r} in {where!r}; callables there: {', '.join(candidates) or '(none)'}"
        )
    if not callable(factory):
        raise UsageError(f"bad SPEC {spec!r}: {attr!r} is a {type(factory).__name__}, not callable")
    made = factory()
    example_inputs = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example_inputs = made
    if not isinstance(made, torch.nn.Module):
        raise UsageError(
            f"factory {spec!r} returned {type(made).__name__}; expected a torch.nn.Module "
            "or (module, example_inputs)"
        )
    return made, example_inputs


def parse_rule(text: str) -> Any:
    """``--rule PATH_GLOB=STRATEGY`` as a :class:`torchstitch.Rule` (``STRATEGY`` ``inherit``: ``None``).

    :raises UsageError: without ``=``, with an empty strategy, or for a malformed glob.
    """
    from .core.claims import Rule

    glob, sep, strategy = text.rpartition("=")
    if not sep or not strategy:
        raise UsageError(
            f"bad --rule {text!r}: expected PATH_GLOB=STRATEGY, e.g. 'layers.*.tp=trace' "
            f"('{INHERIT}' as STRATEGY makes the nodes inherit; '=script' is the root)"
        )
    try:
        return Rule(None if strategy == INHERIT else strategy, path=glob)
    except StitchError as exc:
        raise UsageError(f"bad --rule {text!r}: {exc.message}") from exc


def _plugins(args: argparse.Namespace) -> list[object | str]:
    """``-p no:NAME`` blocks a plugin; ``-p MODULE[:ATTR]`` imports one and registers it."""
    plugins: list[object | str] = []
    for item in args.plugins:
        if item.startswith("no:"):
            if len(item) == 3:
                raise UsageError("bad -p 'no:': name the plugin to block, e.g. -p no:e3nn")
            plugins.append(item)
            continue
        module_name, _, attr = item.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            if attr:
                obj = getattr(obj, attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"bad -p {item!r}: {type(exc).__name__}: {exc}") from exc
        plugins.append(obj)
    return plugins


def _check_strategies(names: Sequence[str | None], plugin_set: PluginSet, option: str) -> None:
    for name in names:
        if name is not None and name not in plugin_set.strategies:
            known = ", ".join(repr(n) for n in sorted(plugin_set.strategies))
            raise UsageError(f"unknown strategy {name!r} in {option}; known strategies: {known}")


def _engine_inputs(args: argparse.Namespace) -> tuple[list[object | str], list[Any], PluginSet]:
    plugins = _plugins(args)
    rules = [parse_rule(text) for text in args.rule]
    plugin_set = PluginSet(make_plugin_manager(plugins))
    _check_strategies([r.strategy for r in rules], plugin_set, "--rule")
    _check_strategies([args.root], plugin_set, "--root")
    return plugins, rules, plugin_set


# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------


def _color(args: argparse.Namespace, stream: TextIO) -> bool:
    if args.color == "always":
        return True
    if args.color == "never":
        return False
    return stream_wants_color(stream)


def cmd_plan(args: argparse.Namespace) -> int:
    from .core.engine import Engine

    if args.probe:
        return _probe(args)
    plugins, rules, _ = _engine_inputs(args)
    module, example_inputs = load_spec(args.spec)
    plan = Engine(rules=rules, plugins=plugins, target=args.target).plan(
        module, example_inputs=example_inputs, root_strategy=args.root
    )
    if args.format == "json":
        text = plan.to_json()
    elif args.format == "dot":
        text = plan.to_dot(verbose=bool(args.verbose)).rstrip("\n")
    else:
        text = plan.render(color=_color(args, sys.stdout), verbose=bool(args.verbose))
    print(text)
    return EXIT_OK


def _probe(args: argparse.Namespace) -> int:
    """``plan --target export --probe``: whether every module exports on its own, as a table."""
    if args.target != "export":
        raise UsageError("--probe exports every module: it needs --target export")
    module, example_inputs = load_spec(args.spec)
    if example_inputs is None:
        raise UsageError(
            f"--probe runs the model: the factory of {args.spec!r} must return (module, example_inputs)"
        )
    from .plugins.export.probing import probe

    print(probe(module, example_inputs).render())
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    from .core.engine import Engine

    plugins, rules, _ = _engine_inputs(args)
    module, example_inputs = load_spec(args.spec)
    result = Engine(rules=rules, plugins=plugins, verify=args.verify).compile(
        module, example_inputs=example_inputs, root_strategy=args.root
    )
    result.save(args.output)
    print(result.plan.render(color=_color(args, sys.stdout), verbose=bool(args.verbose)))
    compiled = sum(1 for n in result.plan.walk() if n.outcome is not None)
    verified = result.verification
    summary = f"compiled {compiled} node(s) in {result.seconds:.2f} s"
    if verified:
        summary += f"; largest difference against eager {max(verified.values()):.2e}"
    elif not args.verify:
        summary += "; not verified (--no-verify)"
    print(f"{summary}; saved {args.output}")
    return EXIT_OK


def _distributions(pm: pluggy.PluginManager) -> dict[str, str]:
    """Plugin name -> ``"dist version"`` for plugins loaded from entry points."""
    return {
        str(pm.get_name(plugin)): f"{dist.project_name} {dist.version}"
        for plugin, dist in pm.list_plugin_distinfo()
    }


def _entry_point_dists() -> dict[str, str]:
    """Entry-point name -> ``"dist version"`` for every installed ``torchstitch`` entry point."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == PROJECT:
                found.setdefault(ep.name, f"{dist.metadata['name']} {dist.version}")
    return found


def _cache_of(args: argparse.Namespace) -> CompileCache:
    directory = args.dir or os.environ.get(CACHE_ENV_VAR)
    if not directory:
        raise UsageError(f"no cache folder: pass --dir, or set {CACHE_ENV_VAR}")
    return CompileCache(directory)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def cmd_cache_info(args: argparse.Namespace) -> int:
    """``torchstitch cache info``: the entries of a cache folder, their size, oldest and newest."""
    cache = _cache_of(args)
    entries = cache.entries()
    total = sum(entry.size for entry in entries)
    print(f"cache {cache.directory}: {len(entries)} entries, {total / 2**20:.1f} MiB")
    if entries:
        print(f"oldest {_when(entries[0].created)}, newest {_when(entries[-1].created)}")
    for entry in entries:
        what = entry.describe
        path = what.get("path") or "<root>"
        strategy, kind = what.get("strategy", "?"), what.get("type", "?")
        print(f"  {entry.key[:8]}  {entry.size / 2**10:8.1f} KiB  {strategy:<8} {path} ({kind})")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """``torchstitch cache clear``: remove every entry of a cache folder."""
    cache = _cache_of(args)
    print(f"cache {cache.directory}: removed {cache.clear()} entries")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    plugins = _plugins(args)
    pm = make_plugin_manager(plugins)
    plugin_set = PluginSet(pm)
    dists = _distributions(pm)
    color = _color(args, sys.stdout)

    def origin(name: str) -> str:
        if name in _BUILTIN_NAMES:
            return "built-in"
        if name in dists:
            return dists[name]
        return "-p (command line)"

    out: list[str] = []
    names = [str(pm.get_name(p)) for p in pm.get_plugins()]
    registered = [n for n in (name for name, _ in BUILTIN_PLUGINS) if n in names]
    registered += sorted(n for n in names if n not in _BUILTIN_NAMES)
    width = max((len(n) for n in registered), default=0)
    out.append("plugins:")
    for name in registered:
        out.append(f"  {name:<{width}}  {origin(name)}")

    out.append("strategies:")
    width = max((len(n) for n in plugin_set.strategies), default=0)
    for name, strategy in sorted(plugin_set.strategies.items()):
        provider = plugin_set.providers[name]
        label = f"{name:<{width}}"
        if color:
            label = ansi(label, name, {name: strategy.color} if strategy.color else {})
        facts = [f"family {strategy.family}", f"from {provider} ({origin(provider)})"]
        if strategy.needs_inputs:
            facts.append("needs tracing inputs")
        line = f"  {label}  {', '.join(facts)}"
        if strategy.description:
            line += f": {strategy.description}"
        out.append(line)

    for hook, title in (
        ("torchstitch_claim", "claim providers (torchstitch_claim), in call order:"),
        (
            "torchstitch_tracing_inputs",
            "tracing-input providers (torchstitch_tracing_inputs), in call order:",
        ),
        ("torchstitch_prepare", "preparers (torchstitch_prepare), in call order:"),
        ("torchstitch_node_compiled", "observers (torchstitch_node_compiled), in call order:"),
    ):
        impls = list(reversed(getattr(pm.hook, hook).get_hookimpls()))
        out.append(title)
        if not impls:
            out.append("  (none)")
        for impl in impls:
            out.append(f"  {impl.plugin_name} ({origin(impl.plugin_name)})")

    out.append("blocked:")
    blocked = [p[3:] for p in plugins if isinstance(p, str)]
    available = _entry_point_dists()
    if not blocked:
        out.append("  (none)")
    for name in blocked:
        if name in _BUILTIN_NAMES:
            where = "built-in"
        elif name in available:
            where = f"{available[name]}, entry point"
        else:
            where = "no such plugin is installed"
        out.append(f"  {name} ({where})")
    if os.environ.get(AUTOLOAD_ENV):
        out.append(f"entry points not loaded: {AUTOLOAD_ENV} is set")
    print("\n".join(out))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(["-o", args.output])


# --------------------------------------------------------------------------
# parser and main
# --------------------------------------------------------------------------


def _rule_and_root(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="PATH_GLOB=STRATEGY",
        help="override rule (repeatable, first match wins); STRATEGY 'inherit' makes nodes inherit",
    )
    sub.add_argument("--root", metavar="STRATEGY", help="force the root's strategy")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``torchstitch`` command."""
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-p",
        dest="plugins",
        action="append",
        default=[],
        metavar="NAME",
        help="'no:NAME' blocks a plugin; 'MODULE[:ATTR]' registers one (repeatable)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="full type names in the plan (module.Class), and log to stderr: -v info, "
        "-vv debug (one line per compiled node)",
    )
    common.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the plan by strategy (auto: on a terminal unless NO_COLOR is set)",
    )
    parser = argparse.ArgumentParser(
        prog="torchstitch",
        description="Compile a PyTorch module tree piece by piece and stitch it back together.",
        epilog="SPEC is 'package.module:factory' or 'path/to/file.py:factory'; the factory "
        "returns a module or (module, example_inputs).",
    )
    parser.add_argument("--version", action="version", version=f"torchstitch {__version__}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = subs.add_parser("plan", parents=[common], help="show who compiles what, and why")
    plan.add_argument("spec", metavar="SPEC")
    _rule_and_root(plan)
    plan.add_argument("--format", choices=("tree", "json", "dot"), default="tree")
    plan.add_argument(
        "--target", metavar="FAMILY", help="plan for a compile target, e.g. 'export' (retargets claims)"
    )
    plan.add_argument(
        "--probe",
        action="store_true",
        help="with --target export: export every module on its recorded inputs and print "
        "whether it exports and why not, as a table (instead of the plan)",
    )
    plan.set_defaults(run=cmd_plan)

    comp = subs.add_parser("compile", parents=[common], help="compile SPEC and save the artifact")
    comp.add_argument("spec", metavar="SPEC")
    comp.add_argument("-o", "--output", required=True, metavar="FILE", help="where to save the artifact")
    comp.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare traced nodes and the whole model with eager (default: on)",
    )
    _rule_and_root(comp)
    comp.set_defaults(run=cmd_compile)

    strat = subs.add_parser(
        "strategies", parents=[common], help="list strategies, the plugins providing them, and hooks"
    )
    strat.set_defaults(run=cmd_strategies)

    cache = subs.add_parser("cache", help="manage the compile cache (docs/cache.md)")
    cache_subs = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for name, run, text in (
        ("info", cmd_cache_info, "list the entries, their total size, the oldest and newest"),
        ("clear", cmd_cache_clear, "remove every entry"),
    ):
        action = cache_subs.add_parser(name, help=text)
        action.add_argument("--dir", metavar="D", help=f"the cache folder (default: ${CACHE_ENV_VAR})")
        action.set_defaults(run=run)

    demo = subs.add_parser("demo", help="compile the README's seed scenario end to end (needs e3nn)")
    demo.add_argument("-o", "--output", default="seed_model.pt", metavar="FILE")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchstitch`` command; return its exit code (never raises ``SystemExit``).

    :param argv: the arguments after the program name; ``None``: ``sys.argv[1:]``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's own usage error (code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = _log_handler(getattr(args, "verbose", 0))
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"torchstitch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StitchError as exc:
        print(f"torchstitch {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if handler is not None:
            logging.getLogger("torchstitch").removeHandler(handler)


def _log_handler(verbose: int) -> logging.Handler | None:
    """With ``-v``/``-vv``, a stderr handler on the ``torchstitch`` logger for this command only."""
    if not verbose:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logger = logging.getLogger("torchstitch")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > handler.level:
        logger.setLevel(handler.level)
    return handler


if __name__ == "__main__":
    sys.exit(main())
