"""e3nn integration: e3nn's compile-mode attribute, irreps-based tracing inputs, jitable fx code.

Registered through the ``torchstitch`` entry-point group.  It never imports
e3nn itself: every hook first checks that e3nn is already imported (a model
holding e3nn modules implies it), so without e3nn the plugin does nothing.
The drop-in for ``e3nn.util.jit`` is :mod:`torchstitch.plugins.e3nn.jit`.

e3nn's optimization defaults (``e3nn.get_optimization_defaults()``) need no
handling here.  In e3nn 0.6.0 they are read only when a module is *built*
(``jit_mode`` decides whether ``CodeGenMixin`` scripts its generated
``fx.GraphModule``s and whether ``SphericalHarmonics`` scripts or
``torch.compile``s its kernel; ``specialized_code`` / ``optimize_einsums`` shape
the generated code), never while a built module is compiled or run.  With
torch >= 2.10 e3nn defaults to ``jit_mode="eager"``, so generated code reaches
torchstitch as ``fx.GraphModule``s, which this plugin claims ``script`` (kind
``rule``); under ``jit_mode="script"`` it arrives already scripted and the
planner treats it as a compiled leaf.  So compiling never changes the flags.

``e3nn.util.jit`` runs ``opt_einsum_fx.jitable`` on every ``GraphModule`` before
scripting it, rewriting ``tensordot(dims=...)`` and ``permute(*dims)`` into the
forms old TorchScript accepted, and regenerating its Python.  TorchScript in
torch 2.13 compiles both as fx writes them, to the same code
(``tests/plugins/test_e3nn_plugin.py`` checks it on every generated kernel of the
reference networks), so from 2.13 on the plugin scripts generated code as it is.
Older torch gets the rewrite, on a private copy of the graph, once per distinct
code in a compile call.
"""

from __future__ import annotations

import copy
import logging
import sys

import torch

from torchstitch import Claim, ClaimKind, Node, Strategy, hookimpl
from torchstitch.plugins.toolkit import TracingInputs, class_key, make_shell

log = logging.getLogger(__name__)

#: the class/instance attribute e3nn's ``@compile_mode`` writes
E3NN_MODE_ATTR = "__e3nn_compile_mode__"
#: whether fx code needs ``opt_einsum_fx.jitable`` before TorchScript compiles it (torch < 2.13)
REWRITE_FOR_TORCHSCRIPT = tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 13)
_UNSET = object()


def _e3nn_loaded() -> bool:
    return "e3nn" in sys.modules


@hookimpl
def torchstitch_claim(module: torch.nn.Module) -> Claim | None:
    mode = module.__dict__.get(E3NN_MODE_ATTR, _UNSET)
    where = "the instance"
    if mode is _UNSET:
        cls = type(module)
        mode = getattr(cls, E3NN_MODE_ATTR, None)
        if mode is not None:
            owner = next(k for k in cls.__mro__ if E3NN_MODE_ATTR in k.__dict__)
            where = f"{owner.__module__}.{owner.__qualname__}"
    # e3nn's modes say how e3nn.util.jit compiles a module ('script': "scriptable"), not
    # that its code branches on values: a compile target of another family may take them
    if mode is not None:
        reason = f"{E3NN_MODE_ATTR}={mode!r} on {where}"
        return Claim(mode, ClaimKind.ATTRIBUTE, "plugin e3nn", reason, portable=True)
    if isinstance(module, torch.fx.GraphModule) and _e3nn_loaded():
        reason = "e3nn scripts torch.fx.GraphModule code"
        return Claim("script", ClaimKind.RULE, "plugin e3nn", reason, portable=True)
    return None


@hookimpl(trylast=True)
def torchstitch_tracing_inputs(module: torch.nn.Module, n: int) -> TracingInputs | None:
    """Random inputs from ``irreps_in`` (or ``irreps_in1``/``irreps_in2``): the last resort."""
    if not _e3nn_loaded():
        return None
    cls = type(module)
    if not any(hasattr(cls, a) or a in module.__dict__ for a in ("irreps_in", "irreps_in1")):
        return None
    from e3nn.util import _argtools

    try:
        irreps_in, _ = _argtools._get_io_irreps(module, irreps_out=[None])
        # _rand_args raises ValueError for an argument that is not Irreps or
        # "cartesian_points" (irreps_in=[Irreps("1o"), None] for an index tensor, say)
        inputs = [{"forward": tuple(_argtools._rand_args(irreps_in))} for _ in range(n)]
    except (ValueError, TypeError) as exc:
        # not ours to fail: the engine's TracingInputsError names the path and
        # suggests example_inputs=, inputs= and _make_tracing_inputs
        log.debug("e3nn could not infer tracing inputs of %s: %s", cls.__qualname__, exc)
        return None
    return _argtools._to_device_dtype(
        inputs, _argtools._get_device(module), _argtools._get_floating_dtype(module)
    )


@hookimpl
def torchstitch_prepare(
    module: torch.nn.Module, node: Node, strategy: Strategy, scratch: dict
) -> torch.nn.Module | None:
    """Make e3nn's fx-generated code scriptable for torch < 2.13, as ``e3nn.util.jit`` does,
    and script e3nn's spherical harmonics for the ``lmax`` a module uses (:mod:`.script`);
    for the export family, give it Python code where e3nn runs TorchScript (:mod:`.export`).

    Done once per distinct generated code in a compile call: a large network holds
    dozens of copies of a few tensor-product kernels, and regenerating Python for
    each copy would be most of torchstitch's own time in a compile.
    """
    if strategy.family == "export":
        if not _e3nn_loaded():
            return None
        from .export import size_independent

        return size_independent(module, scratch)
    if strategy.family == "torchscript" and _e3nn_loaded():
        from .script import specialized_spherical_harmonics

        specialized = specialized_spherical_harmonics(module, scratch)
        if specialized is not None:
            return specialized
    if (
        not REWRITE_FOR_TORCHSCRIPT
        or strategy.family != "torchscript"
        or not isinstance(module, torch.fx.GraphModule)
    ):
        return None
    key = ("e3nn", "jitable", class_key(module))
    if key not in scratch:
        scratch[key] = _jitable(module)
        # the memo keeps the template; strategies get shells they may change
        return None if scratch[key] is None else make_shell(scratch[key])
    template = scratch[key]
    if template is None:
        return None
    return _rebound(template, module) or _jitable(module)


def _jitable(module: torch.fx.GraphModule) -> torch.fx.GraphModule | None:
    """A ``GraphModule`` on a rewritten private copy of ``module``'s graph, or ``None``."""
    try:
        from opt_einsum_fx import jitable
    except ImportError:
        return None
    if not any(_needs_jitable(n) for n in module.graph.nodes):
        return None  # nothing to rewrite: skip the copy and a Python recompile
    # jitable() rewrites the graph in place, and the graph is shared with the user's
    # module: rewrite a private copy, then build one GraphModule on it (tensors stay shared)
    graph = jitable(copy.deepcopy(module.graph))
    return torch.fx.GraphModule(module, graph, type(module).__name__)


def _rebound(template: torch.fx.GraphModule, module: torch.fx.GraphModule) -> torch.fx.GraphModule | None:
    """``template`` (the prepared copy of code identical to ``module``'s) on ``module``'s state.

    A shell of the template: same class, code and graph, so no Python is
    generated.  What the graph reads is taken from ``module``, as
    ``fx.GraphModule(module, graph)`` would copy it.  ``None`` if the graph reads
    nested attributes (``a.b``), which that copy rebuilds as a module hierarchy.
    """
    targets = {n.target for n in template.graph.nodes if n.op in ("get_attr", "call_module")}
    if any("." in target for target in targets):
        return None
    shell = make_shell(template)
    shell.training = module.training
    for name in targets:
        value = getattr(module, name)
        if isinstance(value, torch.nn.Module):
            shell._modules[name] = value
        elif isinstance(value, torch.nn.Parameter):
            shell._parameters[name] = value
        elif isinstance(value, torch.Tensor):
            shell._buffers[name] = value
        else:
            shell.__dict__[name] = value
    return shell


def _needs_jitable(node: torch.fx.Node) -> bool:
    """Whether opt_einsum_fx.jitable would rewrite ``node`` (tensordot dims=, permute(*dims))."""
    if node.op == "call_function":
        return node.target in (torch.tensordot, torch.functional.tensordot) and "dims" in node.kwargs
    if node.op == "call_method" and node.target == "permute":
        return len(node.args) > 1 and not isinstance(node.args[1], list)
    return False
