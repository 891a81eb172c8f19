"""The compile cache: entries, keys, hits and misses in the plan, and bad cache folders."""

import hashlib
import importlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchstitch as ts
from torchstitch.core.cache import ENV_VAR, MANIFEST, CompileCache

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# tiny modules (no `from __future__ import annotations`: TorchScript reads these)
class Scaled(nn.Module):
    def __init__(self, scale: float = 2.0):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.scale = scale

    def forward(self, x):
        return self.lin(x) * self.scale


@ts.compile_mode("script")
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Scaled()
        self.b = Scaled(0.5)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _cache_words(plan):
    return {node.path: node.outcome.cache for node in plan.walk() if node.outcome is not None}


def _entries(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# -- CompileCache --------------------------------------------------------------


def _write(text):
    def write(folder):
        (folder / "data.txt").write_text(text)

    return write


def test_store_then_lookup_gives_the_entry(tmp_path):
    cache = CompileCache(tmp_path)
    assert cache.lookup("k" * 64) is None
    cache.store("k" * 64, _write("hello"), {"strategy": "script"})
    folder = cache.lookup("k" * 64)
    assert (folder / "data.txt").read_text() == "hello"
    [entry] = cache.entries()
    assert entry.describe == {"strategy": "script"} and entry.size > len("hello")
    assert cache.clear() == 1 and cache.lookup("k" * 64) is None


def test_a_truncated_entry_is_a_miss_with_a_warning_and_removed(tmp_path):
    cache = CompileCache(tmp_path)
    cache.store("k" * 64, _write("hello world"), {})
    (cache.folder("k" * 64) / "data.txt").write_text("hello")
    with pytest.warns(ts.TorchstitchWarning, match="damaged file 'data.txt'"):
        assert cache.lookup("k" * 64) is None
    assert _entries(tmp_path) == []


def test_an_entry_of_another_torch_version_is_a_miss_with_a_warning(tmp_path):
    cache = CompileCache(tmp_path)
    cache.store("k" * 64, _write("x"), {})
    manifest = cache.folder("k" * 64) / MANIFEST
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "torch": "1.0.0"}))
    with pytest.warns(ts.TorchstitchWarning, match="torch '1.0.0'"):
        assert cache.lookup("k" * 64) is None
    assert _entries(tmp_path) == []


def test_a_failing_write_is_a_warning_and_leaves_nothing(tmp_path):
    def write(folder):
        (folder / "part").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.warns(ts.TorchstitchWarning, match="No space left"):
        CompileCache(tmp_path).store("k" * 64, write, {})
    assert list(tmp_path.iterdir()) == []


def _store_slowly(directory, key, text, barrier):
    def write(folder):
        (folder / "data.txt").write_text(text)
        barrier.wait()  # both writers have a private folder filled before either publishes
        time.sleep(0.05)

    CompileCache(directory).store(key, write, {})


def test_two_processes_storing_one_key_leave_one_valid_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_store_slowly, args=(str(tmp_path), "k" * 64, text, barrier))
        for text in ("first", "second")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert _entries(tmp_path) == ["k" * 64]
    assert os.listdir(tmp_path) == ["k" * 64]  # no private folder left behind
    folder = CompileCache(tmp_path).lookup("k" * 64)
    assert (folder / "data.txt").read_text() in ("first", "second")


# -- from_option -----------------------------------------------------------------


def test_no_cache_dir_and_no_variable_means_no_cache(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert CompileCache.from_option(None) is None


def test_the_variable_sets_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "c"))
    assert CompileCache.from_option(None).directory == tmp_path / "c"
    assert CompileCache.from_option(tmp_path / "d").directory == tmp_path / "d"


def test_a_file_as_cache_dir_is_a_warning_and_a_normal_compile(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    model = Net()
    x = torch.randn(2, 3)
    with pytest.warns(ts.TorchstitchWarning, match="it is a file"):
        result = ts.Engine(cache_dir=path).compile(model, example_inputs=(x,))
    torch.testing.assert_close(result.module(x), model(x))
    assert set(_cache_words(result.plan).values()) == {None}


def test_an_unwritable_cache_dir_is_a_warning_and_a_normal_compile(tmp_path):
    (tmp_path / "file").write_text("")
    model = Net()
    x = torch.randn(2, 3)
    # below a file: no folder can be made there, even by root (who ignores permissions)
    with pytest.warns(ts.TorchstitchWarning, match="not writable"):
        compiled = ts.compile(model, cache_dir=tmp_path / "file" / "cache")
    torch.testing.assert_close(compiled(x), model(x))


# -- the engine ------------------------------------------------------------------


def test_hit_and_miss_per_node_in_the_plan(tmp_path):
    x = torch.randn(2, 3)
    first = ts.Engine(cache_dir=tmp_path).compile(Net(), example_inputs=(x,))
    assert first.plan.root.outcome.cache.startswith("miss ")
    model = Net()
    second = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,))
    assert second.plan.root.outcome.cache == "hit " + first.plan.root.outcome.cache[5:]
    assert "cache hit" in second.plan.render()
    torch.testing.assert_close(second.module(x), model(x))
    assert ts.Plan.from_json(second.plan.to_json()).root.outcome.cache == second.plan.root.outcome.cache


@ts.compile_mode("trace")
class Traced(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x).sin()


@ts.compile_mode("script")
class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.t = Traced()
        self.s = Scaled()

    def forward(self, x):
        return self.s(self.t(x))


def test_a_root_hit_loads_its_whole_subtree(tmp_path):
    x = torch.randn(4, 3)
    ts.Engine(cache_dir=tmp_path).compile(Mixed(), example_inputs=(x,))
    assert len(_entries(tmp_path)) == 1  # the outermost node holds its subtree
    model = Mixed()
    result = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,))
    words = _cache_words(result.plan)
    assert words[""].startswith("hit ") and words["t"] == "hit in <root>"
    torch.testing.assert_close(result.module(x), model(x))


def test_a_changed_float_attribute_is_a_miss(tmp_path):
    x = torch.randn(2, 3)
    ts.Engine(cache_dir=tmp_path).compile(Net(), example_inputs=(x,))
    model = Net()
    model.b.scale = 0.25
    result = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,))
    assert result.plan.root.outcome.cache.startswith("miss ")
    torch.testing.assert_close(result.module(x), model(x))


def test_other_tracing_input_shapes_are_a_miss(tmp_path):
    ts.Engine(cache_dir=tmp_path).compile(Mixed(), example_inputs=(torch.randn(4, 3),))
    result = ts.Engine(cache_dir=tmp_path).compile(Mixed(), example_inputs=(torch.randn(5, 3),))
    assert result.plan["t"].outcome.cache.startswith("miss ")


SOURCE = """
import torch


class Edited(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x) {op} 1.0
"""


def test_an_edited_class_is_a_miss(tmp_path, monkeypatch):
    source = tmp_path / "src" / "edited_module_for_cache.py"
    source.parent.mkdir()
    monkeypatch.syspath_prepend(str(source.parent))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    x = torch.randn(2, 3)

    def compile_fresh(op):
        source.write_text(SOURCE.format(op=op))
        sys.modules.pop("edited_module_for_cache", None)
        importlib.invalidate_caches()
        model = importlib.import_module("edited_module_for_cache").Edited()
        result = ts.Engine(cache_dir=tmp_path / "cache").compile(
            model, example_inputs=(x,), root_strategy="script"
        )
        torch.testing.assert_close(result.module(x), model(x))
        return result.plan.root.outcome.cache

    first = compile_fresh("+")
    assert compile_fresh("+") == "hit " + first[5:]
    assert compile_fresh("-").startswith("miss ")


SPAN_SOURCE = '''
def spanned(x):
    return max(
        x,
        len("""first
{last}"""),
    )


def after(x):
    return {after}
'''


@pytest.mark.parametrize(
    "edit, changes",
    [
        ({"last": "second"}, True),  # the last line of a string that ends the function
        ({"after": "1"}, False),  # the next function: not part of this one's text
    ],
)
def test_a_function_s_text_spans_exactly_its_source(tmp_path, monkeypatch, edit, changes):
    from torchstitch.core.cache_key import KeyWriter

    source = tmp_path / "spanned_module_for_cache.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def text(**fields):
        source.write_text(SPAN_SOURCE.format(**{"last": "line", "after": "0", **fields}))
        sys.modules.pop("spanned_module_for_cache", None)
        importlib.invalidate_caches()
        return KeyWriter().function_text(importlib.import_module("spanned_module_for_cache").spanned, 0)

    before = text()
    assert before.startswith("def spanned(x):") and before.rstrip().endswith(")")
    assert (text(**edit) != before) is changes


def test_a_format_without_a_cache_is_not_given_the_compile_s_cache_dir(tmp_path):
    model = Net().eval()
    x = torch.randn(2, 3)
    compiled = ts.compile(model, example_inputs=(x,), cache_dir=tmp_path / "cache")
    assert ts.plan_of(compiled).root.outcome.cache.startswith("miss ")
    ts.save(compiled, tmp_path / "model.pt")  # torchscript takes no options: none are passed
    torch.testing.assert_close(ts.load(tmp_path / "model.pt")(x), model(x))


def test_the_compiled_model_remembers_its_cache_dir_as_an_absolute_path(tmp_path, monkeypatch):
    from torchstitch.core.provenance import cache_dir_of

    monkeypatch.chdir(tmp_path)
    compiled = ts.compile(Net().eval(), example_inputs=(torch.randn(2, 3),), cache_dir="cache")
    monkeypatch.chdir(tmp_path.parent)  # a later ts.save from elsewhere finds the same folder
    remembered = cache_dir_of(compiled)
    assert os.path.isabs(remembered)
    assert Path(remembered).resolve() == (tmp_path / "cache").resolve()
    assert cache_dir_of(ts.compile(Net().eval(), example_inputs=(torch.randn(2, 3),))) is None


def test_without_cache_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    result = ts.Engine().compile(Net())
    assert list(tmp_path.iterdir()) == []
    assert set(_cache_words(result.plan).values()) == {None}


def test_the_variable_turns_the_cache_on(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    ts.compile(Net())
    assert len(_entries(tmp_path)) == 1


def test_a_corrupt_archive_is_a_miss_with_a_warning_and_rebuilt(tmp_path):
    x = torch.randn(2, 3)
    ts.Engine(cache_dir=tmp_path).compile(Net(), example_inputs=(x,))
    [key] = _entries(tmp_path)
    [archive] = [p for p in (tmp_path / key).iterdir() if p.name != MANIFEST]
    archive.write_bytes(archive.read_bytes()[:100])
    model = Net()
    with pytest.warns(ts.TorchstitchWarning, match="damaged file"):
        result = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,))
    assert result.plan.root.outcome.cache == f"miss {key[:8]}"
    torch.testing.assert_close(result.module(x), model(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ts.Engine(cache_dir=tmp_path).compile(Net(), example_inputs=(x,))
    assert again.plan.root.outcome.cache == f"hit {key[:8]}"  # rebuilt and replaced
    assert [str(w.message) for w in caught if "compile cache" in str(w.message)] == []


def test_a_failed_compile_leaves_the_model_and_the_cache_as_they_were(tmp_path):
    class Bad(nn.Module):
        def forward(self, x):
            return x.numpy()  # not scriptable

    model = nn.Sequential(Scaled(), Bad())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ts.NodeCompileError, match="<root>"):
        ts.compile(model, root_strategy="script", cache_dir=tmp_path)
    assert _entries(tmp_path) == []
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name])


class WrongNet(Net):
    """Net's modules and parameters, other code: an entry holding it gives wrong outputs."""

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) + 1.0


def _replace_archive(folder, module):
    """Put ``module``'s archive in the entry ``folder``, its manifest updated to match."""
    [archive] = [p for p in folder.iterdir() if p.name != MANIFEST]
    torch.jit.save(torch.jit.script(module), str(archive))
    manifest = json.loads((folder / MANIFEST).read_text())
    data = archive.read_bytes()
    manifest["files"][archive.name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # the test's own calls
def test_a_hit_that_differs_from_eager_is_caught_removed_and_rebuilt(tmp_path):
    x = torch.randn(2, 3)
    ts.Engine(cache_dir=tmp_path).compile(Net(), example_inputs=(x,))
    [key] = _entries(tmp_path)
    _replace_archive(tmp_path / key, WrongNet())
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    differs = f"entries {key[:8]} of <root> were loaded but the model differs from eager"
    with pytest.warns(ts.TorchstitchWarning, match=differs):
        result = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,))
    assert result.plan.root.outcome.cache == f"miss {key[:8]}"  # compiled anew, not the entry
    torch.testing.assert_close(result.module(x), model(x))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    again = Net()  # the entry was rebuilt from the fresh compile
    second = ts.Engine(cache_dir=tmp_path).compile(again, example_inputs=(x,))
    assert second.plan.root.outcome.cache == f"hit {key[:8]}"
    torch.testing.assert_close(second.module(x), again(x))


@ts.compile_mode("trace")
class Branchy(nn.Module):
    """Traced; with ``branchy`` its branch depends on the data: inputs of both signs fail it."""

    def __init__(self, branchy: bool):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.branchy = branchy

    def forward(self, x):
        if self.branchy and x.sum() < 0:
            return -self.lin(x)
        return self.lin(x)


class Pair(nn.Module):
    def __init__(self, branchy: bool):
        super().__init__()
        self.s = Net()
        self.t = Branchy(branchy)

    def forward(self, x):
        return self.s(x) + self.t(x)


def test_a_failure_elsewhere_than_a_hit_raises_and_keeps_its_entry(tmp_path):
    sets = [(torch.ones(2, 3),), (-torch.ones(2, 3),)]
    ts.Engine(cache_dir=tmp_path).compile(Pair(branchy=False), example_inputs=sets)
    before = _entries(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ts.VerificationError, match="'t'"):
            ts.Engine(cache_dir=tmp_path).compile(Pair(branchy=True), example_inputs=sets)
    assert [str(w.message) for w in caught if "were loaded" in str(w.message)] == []
    assert _entries(tmp_path) == before  # the hit of `s` is not blamed
    result = ts.Engine(cache_dir=tmp_path).compile(Pair(branchy=False), example_inputs=sets)
    assert all(word.startswith("hit ") for word in _cache_words(result.plan).values() if word)
