"""The pytest plugin (entry point ``pytest11: torchstitch``): the ``torchstitch_compile`` fixture.

Loaded by every pytest session of an environment where torchstitch is
installed, so it imports nothing heavy: torch and the engine load only when a
test uses the fixture.  Disable it with ``-p no:torchstitch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def torchstitch_compile(tmp_path: Any) -> Callable[..., Any]:
    """:func:`torchstitch.testing.assert_compiles`, with round-trip artifacts in ``tmp_path``.

    ::

        def test_my_model(torchstitch_compile):
            result = torchstitch_compile(MyModel(), (torch.randn(4, 3),), round_trip=True)
            assert result.plan["encoder"].strategy == "trace"
    """
    from .testing import assert_compiles

    def compile_and_check(module: Any, example_inputs: Any, **kw: Any) -> Any:
        kw.setdefault("save_dir", tmp_path)
        return assert_compiles(module, example_inputs, **kw)

    return compile_and_check
