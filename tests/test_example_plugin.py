"""The example third-party plugin (examples/torchstitch-example-plugin), loaded through its entry point.

If the distribution is installed it is used as is.  Otherwise it is installed
once per session into a private directory (``pip install --target``, offline,
no build isolation: well under a second) which each test puts on ``sys.path``
only for its own duration: installed into the environment, the plugin would
join every default plugin manager and change the strategy lists other tests
check.  Without pip or setuptools the tests are skipped, saying so.
"""

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchstitch as ts
from torchstitch import cli
from torchstitch.core.plugin_manager import PluginSet

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torchstitch-example-plugin"
DIST = "torchstitch-example-plugin"
ENTRY_POINT = "example_plugin"


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def _private_install(tmp_path_factory):
    """A directory holding the installed plugin, or ``None`` if it is installed already."""
    if _installed():
        return None
    source = tmp_path_factory.mktemp("example-plugin-src") / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("example-plugin")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(target),
        str(source),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(
            f"{DIST} is not installed and could not be installed privately (needs pip and setuptools "
            f"in this environment): {done.stderr.strip().splitlines()[-1:]}. "
            f"Install it with: pip install -e {EXAMPLE}"
        )
    return target


@pytest.fixture
def example_plugin(_private_install, monkeypatch):
    """The plugin's module, its distribution discoverable through the ``torchstitch`` entry points."""
    if _private_install is not None:
        monkeypatch.syspath_prepend(str(_private_install))
    module = pytest.importorskip("torchstitch_example_plugin", reason=f"{DIST} is not importable")
    yield module
    if _private_install is not None:
        # keep the private copy out of later tests' imports
        for name in [n for n in sys.modules if n.split(".")[0] == "torchstitch_example_plugin"]:
            del sys.modules[name]


@ts.compile_mode("trace")
class Traced(torch.nn.Module):
    """Traced on the inputs the plugin provides (its class declares their shape)."""

    example_plugin_input_shape = (4, 3)

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class Claimed(torch.nn.Module):
    """Claimed by the plugin's rule; its data-dependent branch needs scripting."""

    example_plugin_claim = True

    def __init__(self):
        super().__init__()
        self.feat = Traced()

    def forward(self, x):
        y = self.feat(x)
        if bool(y.sum() > 0):
            return y * 2.0
        return y - 1.0


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Claimed()
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.block(x))


def test_discovered_through_its_entry_point(example_plugin):
    pm = ts.make_plugin_manager(autoload=True)
    assert pm.get_plugin(ENTRY_POINT) is example_plugin
    dists = {pm.get_name(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    assert dists[ENTRY_POINT].project_name == DIST
    assert dists[ENTRY_POINT].version == "0.1.0"
    plugin_set = PluginSet(pm)
    assert plugin_set.strategies["script_optimized"] is example_plugin.SCRIPT_OPTIMIZED
    assert plugin_set.providers["script_optimized"] == ENTRY_POINT


def test_claims_and_provides_inputs(example_plugin, watch):
    model = Model()
    check = watch(model)
    plan = ts.plan(model, plugins=[])
    claim = plan["block"].claim
    assert (claim.strategy, str(claim.kind), claim.claimant) == (
        "script_optimized",
        "rule",
        "plugin example_plugin",
    )
    assert plan["block.feat"].strategy == "trace"
    assert plan["head"].claim is None

    # no example_inputs: the traced child's inputs can only come from the plugin
    result = ts.Engine(plugins=[]).compile(model)
    check()
    assert result.plan["block.feat"].outcome.inputs_source == ENTRY_POINT
    assert result.plan["block.feat"].outcome.n_verified == 1
    block = result.module.block
    assert isinstance(block, torch.jit.ScriptModule)
    for scale in (1.0, -1.0, 10.0, -10.0):  # both branches survive: the block was scripted
        x = scale * torch.randn(4, 3)
        torch.testing.assert_close(result.module(x), model(x))


def test_optimizes_an_eval_root_for_inference(example_plugin):
    model = Claimed().eval()
    x = torch.randn(4, 3)
    result = ts.Engine(plugins=[]).compile(model, example_inputs=(x,))
    assert result.plan[""].strategy == "script_optimized"
    assert not hasattr(result.module, "feat")  # frozen: submodules folded into the graph
    for scale in (1.0, -1.0):
        torch.testing.assert_close(result.module(scale * x), model(scale * x))


def test_blocking_it(example_plugin):
    model = Model()
    plan = ts.plan(model, plugins=[f"no:{ENTRY_POINT}"])
    assert plan["block"].claim is None
    assert "script_optimized" not in PluginSet(ts.make_plugin_manager([f"no:{ENTRY_POINT}"])).strategies
    # the trace then has no inputs: the error names the node and the providers asked
    with pytest.raises(ts.TracingInputsError, match=r"at 'block.feat'.*asked, in order: inputs.caller"):
        ts.compile(model, plugins=[f"no:{ENTRY_POINT}"])


def test_listed_by_the_cli(example_plugin, capsys):
    assert cli.main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert f"  {ENTRY_POINT}" in out
    assert f"from {ENTRY_POINT} ({DIST} 0.1.0)" in out
    assert f"  {ENTRY_POINT} ({DIST} 0.1.0)" in out  # among the claim and input providers
    assert cli.main(["strategies", "-p", f"no:{ENTRY_POINT}"]) == 0
    out = capsys.readouterr().out
    assert "script_optimized" not in out
    assert f"  {ENTRY_POINT} ({DIST} 0.1.0, entry point)" in out.split("blocked:")[1]
