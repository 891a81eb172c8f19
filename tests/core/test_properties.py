"""Property-based differential tests: random module trees compile to models equal to eager.

Trees (depth up to 4) mix nodes scripted, traced and inherited (``set_compile_mode`` on
instances, and decorated classes), ``Sequential`` / ``ModuleList`` / ``ModuleDict``
containers, module instances shared by several paths, and modules with a data-dependent
branch.  A branch is never traced in the main property (it is claimed ``script`` when a
traced region would hold it); a separate property traces one on purpose and expects the
``VerificationError`` the recording makes possible.
"""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from modules import AddOne, Branch, Stack, plus_half
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore::torchstitch.TorchstitchWarning"),
]

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

MAX_DEPTH = 4
WIDTH = 4


# --------------------------------------------------------------------------
# the building blocks (no `from __future__ import annotations`: TorchScript reads these)
# --------------------------------------------------------------------------


class Act(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(WIDTH) + 0.5)

    def forward(self, x):
        return x * self.weight


@ts.compile_mode("script")
class ScriptedBranch(Branch):
    pass


@ts.compile_mode("trace")
class TracedLin(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        return torch.tanh(self.lin(x)) + 0.5


class Bag(nn.Module):
    def __init__(self, children):
        super().__init__()
        self.parts = nn.ModuleDict({f"m{i}": c for i, c in enumerate(children)})

    def forward(self, x):
        for part in self.parts.values():
            x = part(x)
        return x


class Residual(nn.Module):
    def __init__(self, children):
        super().__init__()
        self.f = children[0]

    def forward(self, x):
        return x + self.f(x)


class Twice(nn.Module):
    """The same instance at ``a`` and ``b``."""

    def __init__(self, children):
        super().__init__()
        self.a = children[0]
        self.b = children[0]

    def forward(self, x):
        return self.b(self.a(x)) * 0.5


class BothSigns(nn.Module):
    """Calls its child on ``x`` and ``-x``: a recording sees both sides of a branch."""

    def __init__(self, child):
        super().__init__()
        self.child = child

    def forward(self, x):
        return self.child(x) + self.child(-x)


class Through(nn.Module):
    def __init__(self, child):
        super().__init__()
        self.child = child

    def forward(self, x):
        return self.child(x)


LEAVES = {
    "linear": lambda: nn.Linear(WIDTH, WIDTH),
    "act": Act,
    "scale": Scale,
    "branch": Branch,
    "scripted_branch": ScriptedBranch,
    "traced_lin": TracedLin,
}
CONTAINERS = {
    "sequential": (lambda children: nn.Sequential(*children), 3),
    "chain": (lambda children: Stack(*children), 3),
    "bag": (Bag, 3),
    "residual": (Residual, 1),
    "twice": (Twice, 1),
}
#: instance modes: KEEP leaves the class's mode (decorated or not) alone
KEEP = "keep"
MODES = [KEEP, KEEP, None, "script", "trace"]
#: modules that are containers of modules, not callables: never claimed
HOLDERS = (nn.ModuleList, nn.ModuleDict)


# --------------------------------------------------------------------------
# random trees
# --------------------------------------------------------------------------


def _height(module):
    children = [c for c in module.children()]
    return 1 + max((_height(c) for c in children), default=0)


@st.composite
def trees(draw, max_depth=MAX_DEPTH, modes=tuple(MODES)):
    """A random module tree; the root is always a container.  Modes are set on instances,
    then every branch that a traced region would hold is claimed ``script`` instead."""
    pool = []  # finished modules, candidates for sharing (never an ancestor: no cycles)

    def build(depth, root=False):
        room = max_depth - depth
        reusable = [m for m in pool if _height(m) <= room]
        if not root and reusable and draw(st.integers(0, 4)) == 0:
            return draw(st.sampled_from(reusable))
        if not root and (depth >= max_depth - 1 or draw(st.integers(0, 2)) == 0):
            module = LEAVES[draw(st.sampled_from(sorted(LEAVES)))]()
        else:
            make, most = CONTAINERS[draw(st.sampled_from(sorted(CONTAINERS)))]
            n = draw(st.integers(1, most))
            module = make([build(depth + 1) for _ in range(n)])
        mode = draw(st.sampled_from(modes))
        if mode != KEEP:
            ts.set_compile_mode(module, mode)
        pool.append(module)
        return module

    model = build(0, root=True)
    never_traced(model)
    return model


def effective_mode(module):
    return None if isinstance(module, HOLDERS) else ts.get_compile_mode(module)


def never_traced(model, *, spare=()):
    """Claim ``script`` on every ``Branch`` that would be traced (itself, or in a traced
    region); a ``Branch`` claimed script is fine anywhere and has no children."""

    def visit(module, region):
        mode = effective_mode(module)
        if isinstance(module, Branch) and module not in spare:
            if mode == "trace" or (mode is None and region == "trace"):
                ts.set_compile_mode(module, "script")
                mode = "script"
        region = mode if mode in ("script", "trace") else None if mode == "unsupported" else region
        for child in module.children():
            visit(child, region)

    visit(model, None)


def regions(model):
    """``[(path, module, region)]`` for every path (shared modules at each), where region
    is the strategy of the nearest compiling ancestor-or-self (``None``: Python)."""
    out = []

    def visit(module, path, region):
        mode = effective_mode(module)
        out.append((path, module, region))
        below = mode if mode in ("script", "trace") else None if mode == "unsupported" else region
        for name, child in module._modules.items():
            visit(child, f"{path}.{name}" if path else name, below)

    visit(model, "", None)
    return out


def planned_paths(model):
    """The paths a plan has: a shared module's later paths are leaves."""
    seen, out = set(), []

    def visit(module, path):
        out.append(path)
        if id(module) in seen:
            return
        seen.add(id(module))
        for name, child in module._modules.items():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    return out


def paths_of(model):
    """Every (path, module), shared modules at each of their paths, pre-order."""
    return list(model.named_modules(remove_duplicate=False))


def first_paths(model):
    first = {}
    for path, module in paths_of(model):
        first.setdefault(id(module), path)
    return first


def fresh_inputs(data):
    batch = data.draw(st.integers(1, 5), label="batch")
    x = torch.randn(batch, WIDTH)
    return [x, -x, torch.randn(batch + 1, WIDTH)]


def no_hooks_and_no_overloads(model):
    for path, module in model.named_modules():
        where = path or "<root>"
        assert not module._forward_pre_hooks and not module._forward_hooks, f"hooks left on {where}"
        assert "__overloads__" not in module.__dict__, f"__overloads__ added to {where}"


def describe(model):
    lines = []
    for path, module in paths_of(model):
        mode = effective_mode(module)
        lines.append(f"{path or '<root>'}: {type(module).__name__} mode={mode} id={id(module) % 10000}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# compiled == eager, the model untouched
# --------------------------------------------------------------------------


@settings(max_examples=400, **SETTINGS)
@given(model=trees(), in_place=st.booleans(), checks=st.integers(1, 3), data=st.data())
def test_compiled_equals_eager_and_model_untouched(model, in_place, checks, data, watch):
    note = describe(model)
    x = torch.randn(3, WIDTH)
    inputs = fresh_inputs(data)
    with torch.no_grad():
        expected = [model(y) for y in inputs]
    parameters = {name: p for name, p in model.named_parameters(remove_duplicate=False)}
    check = watch(model)

    result = ts.Engine(in_place=in_place, n_trace_checks=checks).compile(model, example_inputs=(x,))
    compiled_nodes = sum(1 for n in result.plan.walk() if n.outcome is not None and n.strategy)
    event(f"compiled nodes: {min(compiled_nodes, 4)}{'+' if compiled_nodes >= 4 else ''}")
    event(f"shared: {len(first_paths(model)) < len(paths_of(model))}")

    if not in_place:
        check()
    no_hooks_and_no_overloads(model)
    compiled = result.module
    with torch.no_grad():
        for y, want in zip(inputs, expected):
            torch.testing.assert_close(compiled(y), want, msg=lambda m: f"{m}\n{note}")
            if in_place:
                torch.testing.assert_close(model(y), want, msg=lambda m: f"{m}\n{note}")
    # weights are shared, never copied, and the caller's parameters are the same objects
    after = dict(model.named_parameters(remove_duplicate=False))
    assert after.keys() == parameters.keys()
    assert all(after[n] is p for n, p in parameters.items())
    if not isinstance(compiled, torch.jit.ScriptModule):
        for name, p in parameters.items():
            assert compiled.get_parameter(name).data_ptr() == p.data_ptr(), name

    # the plan says what the modules say (a shared module's later paths have no children)
    if in_place:
        return
    first = first_paths(model)
    for node in result.plan.walk():
        module = model.get_submodule(node.path)
        mode = effective_mode(module)
        assert node.strategy == mode, f"{node.path}\n{note}"
        canonical = first[id(module)]
        assert node.shared_with == (None if canonical == node.path else canonical), f"{node.path}\n{note}"
        if mode in ("script", "trace") and canonical == node.path:
            assert node.outcome is not None, f"{node.path} claimed {mode} but not compiled\n{note}"
    assert {n.path for n in result.plan.walk()} >= set(first.values())


@settings(max_examples=60, **SETTINGS)
@given(model=trees(max_depth=3), data=st.data())
def test_shared_modules_stay_shared(model, data):
    """A module at two paths is compiled once: wherever both paths are reachable through
    Python shells, the compiled model holds the same object at both."""
    compiled = ts.compile(model, example_inputs=(torch.randn(3, WIDTH),))
    groups = {}
    for path, module in paths_of(model):
        groups.setdefault(id(module), []).append(path)

    def through_python(path):
        module = compiled
        for name in path.split(".") if path else ():
            if isinstance(module, torch.jit.ScriptModule):
                return None
            module = module._modules[name]
        return module

    for paths in groups.values():
        found = [m for m in (through_python(p) for p in paths) if m is not None]
        assert all(m is found[0] for m in found), paths


# --------------------------------------------------------------------------
# a traced data-dependent branch
# --------------------------------------------------------------------------


@settings(max_examples=60, **SETTINGS)
@given(model=trees(max_depth=3), position=st.integers(0, 10), direct=st.booleans())
def test_traced_branch_seen_both_ways_is_a_verification_error(model, position, direct, watch):
    """A Branch claimed trace (or inheriting inside a traced parent), called on x and -x:
    the recording holds both sides, so verification of the traced node fails."""
    branch = Branch()
    if direct:
        traced = branch
    else:
        traced = Through(branch)  # the branch inherits inside a traced region
    ts.set_compile_mode(traced, "trace")
    holder = BothSigns(traced)
    layers = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    layers.insert(position % (len(layers) + 1), holder)
    root = nn.Sequential(*layers)
    never_traced(root, spare=(branch,))
    check = watch(root)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(root, example_inputs=(torch.randn(3, WIDTH),))
    err = info.value
    want = next(p for p, m in paths_of(root) if m is holder) + ".child"
    assert err.path == want
    assert f"'{want}'" in str(err)
    assert "tracing input 1" in str(err)
    check()
    no_hooks_and_no_overloads(root)


# --------------------------------------------------------------------------
# in_place=True failures leave nothing behind
# --------------------------------------------------------------------------


class Fail(nn.Module):
    pass


class Failing:
    """``fail`` raises while compiling; ``wrong`` traces and adds 0.5 (node verification
    catches it).  Both can sit in any TorchScript region."""

    name = "failing"

    @ts.hookimpl
    def torchstitch_strategies(self):
        def fail(module, context):
            raise RuntimeError("injected failure")

        def wrong(module, context):
            return torch.jit.trace_module(plus_half(module), context.inputs[0], check_trace=False)

        return [
            ts.Strategy(name="fail", family="torchscript", compile=fail),
            ts.Strategy(name="wrong", family="torchscript", compile=wrong, needs_inputs=True, verify=True),
        ]


@settings(max_examples=200, **SETTINGS)
@given(model=trees(), pick=st.integers(0, 1000), how=st.sampled_from(["fail", "wrong"]))
def test_in_place_failure_leaves_nothing_behind(model, pick, how, watch):
    candidates = [m for _, m in paths_of(model) if not isinstance(m, HOLDERS)]
    target = candidates[pick % len(candidates)]
    path = first_paths(model)[id(target)]
    before = paths_of(model)
    check = watch(model)
    error = ts.NodeCompileError if how == "fail" else ts.VerificationError
    with pytest.raises(error) as info:
        ts.compile(
            model,
            example_inputs=(torch.randn(3, WIDTH),),
            rules=[ts.Rule(how, where=lambda m, p: m is target)],
            plugins=[Failing()],
            in_place=True,
        )
    err = info.value
    assert err.path == path, describe(model)
    assert f"'{path or '<root>'}'" in str(err)
    if how == "fail":
        assert isinstance(err.__cause__, RuntimeError)
    check()
    assert [(p, id(m)) for p, m in paths_of(model)] == [(p, id(m)) for p, m in before]
    for p, m in paths_of(model):
        assert not isinstance(m, torch.jit.ScriptModule), f"{p} replaced by a compiled module"
    no_hooks_and_no_overloads(model)


# --------------------------------------------------------------------------
# unsupported: left in Python outside regions, an error inside one
# --------------------------------------------------------------------------


def _offending(model):
    """Paths of ``unsupported`` modules that sit inside a compiled region."""
    return [
        path
        for path, module, region in regions(model)
        if path and region is not None and effective_mode(module) == "unsupported"
    ]


@settings(max_examples=150, **SETTINGS)
@given(model=trees(max_depth=3, modes=(KEEP, "script", "script", "trace", "unsupported")), data=st.data())
def test_unsupported_is_an_error_exactly_inside_a_region(model, data, watch):
    # every path counts, later paths of shared modules included
    offending = _offending(model)
    check = watch(model)
    x = torch.randn(3, WIDTH)
    event(f"unsupported inside a region: {bool(offending)}")
    if offending:
        with pytest.raises(ts.UnsupportedModuleError) as info:
            ts.compile(model, example_inputs=(x,))
        assert isinstance(info.value, NotImplementedError)
        assert info.value.path in offending
        assert f"'{info.value.path}'" in str(info.value)
        check()
        return
    result = ts.Engine().compile(model, example_inputs=(x,))
    check()
    with torch.no_grad():
        for y in fresh_inputs(data):
            torch.testing.assert_close(result.module(y), model(y))
    planned = set(planned_paths(model))
    for path, module, _ in regions(model):
        if path in planned and effective_mode(module) == "unsupported":
            assert result.plan[path].region is None


@ts.compile_mode("unsupported")
class _Unsupported(Act):
    pass


@ts.compile_mode("script")
class _ScriptedWrap(AddOne):
    pass


class _SharedIntoRegion(nn.Module):
    """``a`` (Python) holds an unsupported module; ``b`` (scripted) holds the same ``a``."""

    def __init__(self):
        super().__init__()
        shared = AddOne(_Unsupported())
        self.a = shared
        self.b = _ScriptedWrap(shared)

    def forward(self, x):
        return self.b(self.a(x))


def test_unsupported_reached_through_a_shared_module_inside_a_region(watch):
    model = _SharedIntoRegion()
    check = watch(model)
    with pytest.raises(ts.UnsupportedModuleError) as info:
        ts.compile(model, example_inputs=(torch.randn(3, WIDTH),))
    assert info.value.path == "b.inner.inner"
    check()
