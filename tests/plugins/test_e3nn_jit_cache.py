"""The e3nn compatibility module honours cache_dir= and TORCHSTITCH_CACHE_DIR."""

import pytest
import torch

pytest.importorskip("e3nn")
from e3nn.o3 import Linear  # noqa: E402

from torchstitch.core.cache import ENV_VAR  # noqa: E402
from torchstitch.plugins.e3nn import jit  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


def _entries(folder):
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("call", ["compile", "script"])
def test_cache_dir_stores_and_the_second_compile_gives_its_own_outputs(tmp_path, call):
    x = torch.randn(5, 4)
    getattr(jit, call)(Linear("4x0e", "2x0e"), in_place=False, cache_dir=tmp_path)
    assert len(_entries(tmp_path)) == 1
    model = Linear("4x0e", "2x0e")
    compiled = getattr(jit, call)(model, in_place=False, cache_dir=tmp_path)
    torch.testing.assert_close(compiled(x), model(x))
    assert compiled.weight.data_ptr() == model.weight.data_ptr()
    assert len(_entries(tmp_path)) == 1


def test_the_variable_sets_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    jit.compile(Linear("4x0e", "2x0e"), in_place=False)
    assert len(_entries(tmp_path)) == 1
