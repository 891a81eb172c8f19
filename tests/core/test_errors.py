"""The error classes: their hierarchy, and every one pickles with all its fields."""

from __future__ import annotations

import errno
import math
import pickle

import pytest

import torchstitch as ts
from torchstitch.core import errors

#: what each error class needs beyond the keywords every StitchError takes
EXTRA_FIELDS: dict[type, dict] = {
    ts.VerificationError: {
        "max_abs_diff": 0.5,
        "culprits": (ts.Divergence("layers.0", 0.5, "values differ by up to 0.5"),),
    },
    ts.PluginError: {"plugin": "my-plugin", "hook": "torchstitch_claim"},
}


def _error_classes() -> list[type[ts.StitchError]]:
    """StitchError and every subclass the errors module defines, however deep."""
    found, todo = [], [ts.StitchError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted({c for c in found if c.__module__ == errors.__name__}, key=lambda c: c.__name__)


ERROR_CLASSES = _error_classes()


def test_every_public_error_class_is_found():
    public = {getattr(ts, name) for name in ts.__all__ if name.endswith("Error")}
    assert public == set(ERROR_CLASSES)


def _fields(error: BaseException) -> dict:
    fields = dict(vars(error))
    if isinstance(error, OSError):
        fields.update(errno=error.errno, strerror=error.strerror, filename=error.filename)
    return fields


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_pickles_with_all_its_fields(cls):
    error = cls(
        "it went wrong", path="layers.0", strategy="trace", claimant="plugin x", **EXTRA_FIELDS.get(cls, {})
    )
    error.add_note("a note added on the way up")

    again = pickle.loads(pickle.dumps(error))

    assert type(again) is cls
    assert str(again) == str(error)
    assert "'layers.0'" in str(again)
    assert again.args == error.args
    assert _fields(again) == _fields(error)
    assert (again.message, again.path, again.strategy, again.claimant) == (
        "it went wrong",
        "layers.0",
        "trace",
        "plugin x",
    )


def test_a_verification_error_keeps_its_difference_and_culprits():
    error = ts.VerificationError("differs", path="", **EXTRA_FIELDS[ts.VerificationError])
    again = pickle.loads(pickle.dumps(error))
    assert again.max_abs_diff == 0.5
    assert [c.path for c in again.culprits] == ["layers.0"]
    nan = pickle.loads(pickle.dumps(ts.VerificationError("shapes differ", path="x")))
    assert math.isnan(nan.max_abs_diff)


def test_a_plugin_error_keeps_its_plugin_hook_and_bare_message():
    error = ts.PluginError("raised ValueError: no", plugin="p", hook="torchstitch_claim", path="a.b")
    again = pickle.loads(pickle.dumps(error))
    assert (again.plugin, again.hook, again.message) == ("p", "torchstitch_claim", "raised ValueError: no")
    assert str(again) == "[at 'a.b'] Plugin 'p' for hook 'torchstitch_claim': raised ValueError: no"


def test_an_artifact_error_keeps_its_os_error_fields():
    error = ts.ArtifactError("cannot save to 'x/y.pt': no such directory", path="")
    error.errno, error.strerror, error.filename = errno.ENOENT, "No such file or directory", "x/y.pt"
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, OSError)
    assert (again.errno, again.strerror, again.filename) == (
        errno.ENOENT,
        "No such file or directory",
        "x/y.pt",
    )
    assert str(again) == str(error)


@pytest.mark.parametrize("cls", [ts.AmbiguousClaimError, ts.UnknownStrategyError, ts.UnsupportedModuleError])
def test_plan_time_errors_are_plan_errors(cls):
    assert issubclass(cls, ts.PlanError)
    assert issubclass(cls, ValueError)  # as PlanError is; UnknownStrategyError always was


def test_unsupported_module_error_is_also_not_implemented_error():
    assert issubclass(ts.UnsupportedModuleError, NotImplementedError)  # what e3nn.util.jit raises
