"""torch's TorchScript deprecation warnings: one summary per compile, nothing leaked or lost."""

import re
import threading
import warnings

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

TORCH_JIT_DEPRECATION = re.compile(r"`torch\.jit\.\w+` is deprecated")


@ts.compile_mode("trace")
class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.lin(x))


@ts.compile_mode("script")
class Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.lin(x)
        return -x


class Many(nn.Module):
    """Root scripted by ts.script; two traced and one scripted child."""

    def __init__(self):
        super().__init__()
        self.t1 = Traced()
        self.t2 = Traced()
        self.s = Scripted()

    def forward(self, x):
        return self.s(self.t2(self.t1(x)))


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = Traced()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(self.t(x)) * 2.0


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x)


@ts.compile_mode("trace")
class WarnsUser(nn.Module):
    def forward(self, x):
        warnings.warn("a user warning from forward", UserWarning, stacklevel=2)
        warnings.warn("a user deprecation from forward", DeprecationWarning, stacklevel=2)
        return x * 2.0


class HoldsWarner(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = WarnsUser()

    def forward(self, x):
        return self.w(x) + 1.0


@ts.compile_mode("script")
class Unscriptable(nn.Module):
    def forward(self, x):
        f = lambda t: t + 1.0  # noqa: E731
        return f(x)


class HoldsUnscriptable(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = Traced()
        self.bad = Unscriptable()

    def forward(self, x):
        return self.bad(self.t(x))


def ours(record):
    return [w for w in record if issubclass(w.category, ts.TorchScriptDeprecationWarning)]


def torch_jit(record):
    return [
        w
        for w in record
        if issubclass(w.category, DeprecationWarning) and TORCH_JIT_DEPRECATION.search(str(w.message))
    ]


def x_pos():
    return torch.rand(4, 3) + 0.1


# --------------------------------------------------------------------------
# one summary per compile
# --------------------------------------------------------------------------


def test_one_summary_warning_per_compile():
    model = Many()
    x = x_pos()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compiled = ts.script(model, example_inputs=(x,))
    assert len(ours(record)) == 1
    assert torch_jit(record) == []
    message = str(ours(record)[0].message)
    assert "torch.jit.script" in message
    assert "torch.jit.trace" in message
    assert ours(record)[0].filename == __file__  # points at the caller, not torchstitch
    torch.testing.assert_close(compiled(x), model(x))


def test_one_summary_warning_with_pytest_warns():
    model = Many()
    x = x_pos()
    with pytest.warns(ts.TorchScriptDeprecationWarning) as record:
        ts.compile(model, example_inputs=(x,))
    assert len(ours(record)) == 1
    assert torch_jit(record) == []


def test_torch_warnings_would_be_many_without_torchstitch():
    """The contrast: the same work done directly emits one torch warning per call."""
    model = Many()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.jit.script(model.s)
        torch.jit.trace_module(model.t1, {"forward": (x_pos(),)})
        torch.jit.trace_module(model.t2, {"forward": (x_pos(),)})
    assert len(torch_jit(record)) >= 3


def test_compile_under_error_filter_for_deprecations():
    """torch's deprecations are counted, not raised, even if the caller turns them into errors."""
    model = Many()
    x = x_pos()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.simplefilter("error", DeprecationWarning)
        compiled = ts.script(model, example_inputs=(x,))
    assert len(ours(record)) == 1
    torch.testing.assert_close(compiled(x), model(x))


class NestedCompile:
    """A strategy that compiles through torchstitch again (a nested compile)."""

    name = "nested"

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_nested(module, context):
            return ts.script(module)

        return [ts.Strategy(name="nested", family="torchscript", compile=compile_nested)]


def test_nested_compile_still_one_summary():
    model = Many()
    x = x_pos()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compiled = ts.compile(
            model,
            example_inputs=(x,),
            rules=[ts.Rule("nested", path="s")],
            plugins=[NestedCompile()],
        )
    assert len(ours(record)) == 1
    assert torch_jit(record) == []
    torch.testing.assert_close(compiled(x), model(x))


def test_other_warnings_pass_through_during_compile():
    model = HoldsWarner()
    x = x_pos()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compiled = ts.compile(model, example_inputs=(x,))
    messages = [str(w.message) for w in record]
    assert "a user warning from forward" in messages
    assert "a user deprecation from forward" in messages
    assert len(ours(record)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model(x)
    torch.testing.assert_close(compiled(x), expected)


# --------------------------------------------------------------------------
# nothing leaks outside torchstitch
# --------------------------------------------------------------------------


def test_torch_deprecation_shown_normally_outside_torchstitch():
    with pytest.warns(ts.TorchScriptDeprecationWarning):
        ts.script(Many(), example_inputs=(x_pos(),))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.jit.script(Plain())
    assert len(torch_jit(record)) == 1
    assert "`torch.jit.script` is deprecated" in str(torch_jit(record)[0].message)
    assert ours(record) == []


@pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")
def test_filters_and_showwarning_restored_after_compile():
    filters = list(warnings.filters)
    showwarning = warnings.showwarning
    ts.script(Many(), example_inputs=(x_pos(),))
    assert warnings.filters == filters
    assert warnings.showwarning is showwarning


@pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")
def test_filters_and_showwarning_restored_after_failed_compile(watch):
    model = HoldsUnscriptable()
    check = watch(model)
    filters = list(warnings.filters)
    showwarning = warnings.showwarning
    with pytest.raises(ts.NodeCompileError) as info:
        ts.compile(model, example_inputs=(x_pos(),))
    assert info.value.path == "bad"
    assert warnings.filters == filters
    assert warnings.showwarning is showwarning
    check()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.jit.script(Plain())
    assert len(torch_jit(record)) == 1


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------


class Rendezvous:
    """Scripts the root only when both threads are inside their compile, and lets
    neither leave before both have scripted: the two compiles surely overlap."""

    name = "rendezvous"

    def __init__(self, barrier):
        self.barrier = barrier

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_together(module, context):
            self.barrier.wait(timeout=30)
            compiled = torch.jit.script(module)
            self.barrier.wait(timeout=30)
            return compiled

        return [ts.Strategy(name="together", family="torchscript", compile=compile_together)]


def test_concurrent_compiles_in_two_threads_sharing_an_engine():
    barrier = threading.Barrier(2)
    models = {"many": Many(), "other": Other()}
    x = x_pos()
    results, errors = {}, []

    engine = ts.Engine(rules=[ts.Rule("together", path="")], plugins=[Rendezvous(barrier)])

    def work(key):
        try:
            results[key] = engine.compile(models[key], example_inputs=(x,)).module
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            barrier.abort()

    filters = list(warnings.filters)
    showwarning = warnings.showwarning
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        inner_filters = list(warnings.filters)
        inner_show = warnings.showwarning
        threads = [threading.Thread(target=work, args=(key,)) for key in models]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert warnings.filters == inner_filters
        assert warnings.showwarning is inner_show
    assert errors == []
    assert warnings.filters == filters
    assert warnings.showwarning is showwarning

    assert len(ours(record)) == 2  # one per compile
    assert torch_jit(record) == []
    for key, model in models.items():
        assert isinstance(results[key], torch.jit.ScriptModule)
        for y in (x, torch.randn(5, 3), -x):
            torch.testing.assert_close(results[key](y), model(y))

    # and torch's own warning is back to normal afterwards
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        torch.jit.script(Plain())
    assert len(torch_jit(record)) == 1


def test_other_threads_torch_warnings_pass_through_during_a_compile():
    """While one thread compiles, another thread's own torch.jit call still warns normally."""
    barrier = threading.Barrier(2)
    model = Other()
    x = x_pos()
    results, errors = {}, []

    def work():
        try:
            results["model"] = ts.compile(
                model,
                example_inputs=(x,),
                rules=[ts.Rule("together", path="")],
                plugins=[Rendezvous(barrier)],
            )
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        thread = threading.Thread(target=work)
        thread.start()
        barrier.wait(timeout=30)  # the other thread is inside its compile now
        torch.jit.script(Plain())
        barrier.wait(timeout=30)
        thread.join(timeout=60)
    assert errors == []
    assert not thread.is_alive()
    mine = torch_jit(record)
    assert len(mine) == 1, [str(w.message) for w in mine]
    assert "`torch.jit.script` is deprecated" in str(mine[0].message)
    assert len(ours(record)) == 1
    torch.testing.assert_close(results["model"](x), model(x))
