"""Test helpers, and the pytest plugin that ships them (entry point ``pytest11: torchstitch``).

:func:`assert_compiles` is the successor of e3nn's ``assert_auto_jitable``:
compile a module with :class:`torchstitch.Engine`, compare it with eager,
optionally save and load it back and compare again, and check that the
caller's module was not changed.  In a test suite with torchstitch installed
the ``torchstitch_compile`` fixture gives the same function with round-trip
files kept in the test's ``tmp_path``::

    def test_my_model(torchstitch_compile):
        result = torchstitch_compile(MyModel(), (torch.randn(4, 3),), round_trip=True)
        assert result.plan["encoder"].strategy == "trace"

The fixture lives in :mod:`torchstitch.pytest_plugin`, which pytest loads in
every session of an environment where torchstitch is installed; it imports
torch only when a test uses it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .core.engine import CompileResult, Engine
from .core.inputs import as_example_args
from .core.serialization import load

if TYPE_CHECKING:
    from .core.claims import Claim, Rule

__all__ = ["assert_compiles"]

log = logging.getLogger(__name__)


def _state(module: torch.nn.Module) -> dict[str, Any]:
    """What compiling without ``in_place`` must leave exactly as it was."""
    return {
        "tensors": {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()},
        "modules": [(name, id(m)) for name, m in module.named_modules(remove_duplicate=False)],
        "attributes": {name: sorted(m.__dict__) for name, m in module.named_modules()},
        "training": [m.training for m in module.modules()],
    }


def _assert_unchanged(module: torch.nn.Module, before: dict[str, Any], when: str) -> None:
    after = _state(module)
    if after["modules"] != before["modules"]:
        raise AssertionError(f"{when}: the module's submodules were replaced or moved")
    for name, names in before["attributes"].items():
        if after["attributes"].get(name) != names:
            added = sorted(set(after["attributes"].get(name, ())) - set(names))
            removed = sorted(set(names) - set(after["attributes"].get(name, ())))
            raise AssertionError(
                f"{when}: attributes of submodule {name or '<root>'!r} changed "
                f"(added {added}, removed {removed})"
            )
    if after["training"] != before["training"]:
        raise AssertionError(f"{when}: a submodule's training flag changed")
    if after["tensors"].keys() != before["tensors"].keys():
        raise AssertionError(f"{when}: the module's state_dict keys changed")
    for key, value in before["tensors"].items():
        if not torch.equal(after["tensors"][key], value):
            raise AssertionError(f"{when}: tensor {key!r} of the module changed")


def _compare(expected: Any, actual: Any, what: str, atol: float | None, rtol: float | None) -> None:
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)
    except AssertionError as exc:
        raise AssertionError(f"{what} differs from eager:\n{exc}") from None


def _tolerances(atol: float | None, rtol: float | None) -> tuple[float | None, float | None]:
    # torch.testing.assert_close takes both or neither
    if atol is None and rtol is None:
        return None, None
    return (atol or 0.0, rtol or 0.0)


def assert_compiles(
    module: torch.nn.Module,
    example_inputs: Any,
    *,
    rules: Sequence[Rule] = (),
    root_strategy: str | Claim | None = None,
    round_trip: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    check_inputs: Sequence[Any] = (),
    save_dir: str | os.PathLike[str] | None = None,
    **compile_kw: Any,
) -> CompileResult:
    """Compile ``module`` with :class:`torchstitch.Engine` and assert it behaves like eager.

    Checks, in order: the compiled model equals eager on ``example_inputs`` and
    on each of ``check_inputs`` (``torch.testing.assert_close``); with
    ``round_trip``, the artifact saved with :meth:`~torchstitch.CompileResult.save` and loaded
    with :func:`torchstitch.load` equals eager too and carries the same plan;
    the caller's ``module`` was not changed (tensors, submodules, attributes,
    training flags), unless ``in_place=True`` was asked for.

    :param module: the model to compile.
    :param example_inputs: the args tuple (or one tensor) for ``module.forward``;
        also given to the engine, to record tracing inputs and verify.
    :param rules: override :class:`~torchstitch.Rule` objects, first match wins.
    :param root_strategy: force the root's strategy (``"script"``, ``"trace"``, ...).
    :param round_trip: save to a file, load back and compare again (needs a
        TorchScript root).
    :param atol: absolute tolerance, for the engine's verification and the
        comparisons here (``None`` with ``rtol`` ``None``: by dtype; one given alone
        makes the other 0).
    :param rtol: relative tolerance, as ``atol``.
    :param check_inputs: more args tuples to compare on (e.g. ones that take the
        other branch of a data-dependent ``if``).
    :param save_dir: directory for the round-trip file (default: a temporary
        directory, removed afterwards).
    :param compile_kw: other keyword arguments of :class:`torchstitch.Engine`
        (``plugins=``, ``n_trace_checks=``, ``on_error=``, ...) and ``inputs=``
        of :meth:`~torchstitch.Engine.compile`.
    :returns: the :class:`~torchstitch.CompileResult`.
    :raises AssertionError: when a check fails; errors of the engine itself
        (:class:`~torchstitch.StitchError`) propagate unchanged.
    """
    args = as_example_args(example_inputs)
    if args is None:
        raise TypeError("assert_compiles needs example_inputs: the args tuple (or one tensor) for forward")
    checks = [args, *(_check_args(c, i) for i, c in enumerate(check_inputs))]
    call_kw = {"inputs": compile_kw.pop("inputs")} if "inputs" in compile_kw else {}
    in_place = bool(compile_kw.get("in_place", False))
    atol, rtol = _tolerances(atol, rtol)

    before = _state(module)
    with torch.no_grad():
        expected = [module(*_clone(a)) for a in checks]
    engine = Engine(rules=rules, atol=atol, rtol=rtol, **compile_kw)
    result = engine.compile(module, example_inputs=args, root_strategy=root_strategy, **call_kw)
    if not in_place:
        _assert_unchanged(module, before, "after compiling")
    log.debug("compiled %s in %.3f s", type(module).__qualname__, result.seconds)

    def compare_all(candidate: Callable[..., Any], what: str) -> None:
        with torch.no_grad():
            for i, (a, want) in enumerate(zip(checks, expected)):
                label = "example_inputs" if i == 0 else f"check_inputs[{i - 1}]"
                _compare(want, candidate(*_clone(a)), f"{what} on {label}", atol, rtol)

    compare_all(result.module, "the compiled model")
    if round_trip:
        for path in _artifact_path(save_dir):
            result.save(path)
            artifact = load(path)
            compare_all(artifact.module, f"the artifact loaded from {path}")
            if artifact.plan != result.plan:
                raise AssertionError(f"the plan loaded from {path} is not the plan it was saved with")
    if not in_place:
        _assert_unchanged(module, before, "after running the compiled model")
    return result


def _check_args(check: Any, index: int) -> tuple[Any, ...]:
    args = as_example_args(check)
    if args is None:
        raise TypeError(f"check_inputs[{index}] is None: give an args tuple (or one tensor) for forward")
    return args


def _clone(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Fresh copies of tensor arguments, so a module that writes to its inputs cannot skew a comparison."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _artifact_path(save_dir: str | os.PathLike[str] | None) -> Iterator[str]:
    if save_dir is not None:
        yield os.path.join(os.fspath(save_dir), "torchstitch_round_trip.pt")
        return
    with tempfile.TemporaryDirectory(prefix="torchstitch-") as tmp:
        yield os.path.join(tmp, "model.pt")
