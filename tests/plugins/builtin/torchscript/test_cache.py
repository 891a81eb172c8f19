"""The TorchScript codec: a hit runs the caller's weights, sharing their storage."""

import pytest
import torch
from torch import nn

import torchstitch as ts

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),  # the test's own calls
]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("offset", torch.randn(3))
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.norm(self.lin(x) + self.offset)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.shared = nn.Linear(3, 3)
        self.again = self.shared  # one module at two paths

    def forward(self, x):
        return self.again(self.shared(self.block(x)))


@pytest.mark.parametrize("strategy", ["script", "trace"])
def test_a_hit_with_other_weights_gives_their_outputs_and_shares_their_storage(tmp_path, strategy):
    x = torch.randn(4, 3)
    torch.manual_seed(0)
    first_model = Model().eval()
    first = ts.Engine(cache_dir=tmp_path).compile(first_model, example_inputs=(x,), root_strategy=strategy)
    assert first.plan.root.outcome.cache.startswith("miss ")
    torch.manual_seed(1)
    model = Model().eval()
    second = ts.Engine(cache_dir=tmp_path).compile(model, example_inputs=(x,), root_strategy=strategy)
    assert second.plan.root.outcome.cache.startswith("hit ")
    torch.testing.assert_close(second.module(x), model(x))
    assert not torch.allclose(second.module(x), first_model(x))
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    theirs = dict(second.module.named_parameters()) | dict(second.module.named_buffers())
    assert ours.keys() == theirs.keys()
    assert all(theirs[name].data_ptr() == tensor.data_ptr() for name, tensor in ours.items())
    with torch.no_grad():  # the caller's later changes reach the compiled model, as after a compile
        model.block.lin.bias.add_(1.0)
    torch.testing.assert_close(second.module(x), model(x))


def test_freeze_runs_on_the_loaded_modules_and_is_not_cached(tmp_path):
    x = torch.randn(4, 3)
    ts.Engine(cache_dir=tmp_path, freeze=True).compile(
        Model().eval(), example_inputs=(x,), root_strategy="script"
    )
    model = Model().eval()
    result = ts.Engine(cache_dir=tmp_path, freeze=True).compile(
        model, example_inputs=(x,), root_strategy="script"
    )
    assert result.plan.root.outcome.cache.startswith("hit ")
    torch.testing.assert_close(result.module(x), model(x))
    [entry] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    loaded = torch.jit.load(str(entry / "module.pt"))
    assert "lin" in dict(loaded.block.named_children())  # the entry is the unfrozen module


def test_an_archive_of_other_parameters_is_a_miss(tmp_path):
    from torchstitch.plugins.builtin.torchscript.cache import CODEC

    torch.jit.save(torch.jit.script(nn.Linear(3, 4)), str(tmp_path / "module.pt"))
    with pytest.raises(ValueError, match="weight is \\(4, 3\\)"):
        CODEC.load(tmp_path, nn.Linear(3, 3))
