"""The error classes (core/errors.py): every message says where (path), how (strategy), who (claimant).

Built directly, so that the format is tested apart from the code that raises them
(tests/core/test_bad_inputs.py checks the real errors of every bad input).
Pickling and the class hierarchy: tests/core/test_errors.py.
"""

from __future__ import annotations

import errno
import math

import pytest

import torchstitch as ts

#: extra keyword arguments a class needs besides the message
REQUIRED = {ts.PluginError: {"plugin": "my-plugin", "hook": "torchstitch_claim"}}


def error_classes() -> list[type[ts.StitchError]]:
    """Every error class of the public API."""
    found = (getattr(ts, name) for name in ts.__all__)
    return [obj for obj in found if isinstance(obj, type) and issubclass(obj, ts.StitchError)]


def make(cls: type[ts.StitchError], message: str = "it went wrong", **where: str | None) -> ts.StitchError:
    return cls(message, **where, **REQUIRED.get(cls, {}))


def body(cls: type[ts.StitchError], message: str) -> str:
    """What follows the where-prefix: PluginError puts the plugin and the hook first."""
    if cls is ts.PluginError:
        return f"Plugin 'my-plugin' for hook 'torchstitch_claim': {message}"
    return message


CLASSES = error_classes()


def test_the_public_api_has_the_expected_error_classes():
    names = {cls.__name__ for cls in CLASSES}
    assert {"StitchError", "PlanError", "NodeCompileError", "PluginError", "ArtifactError"} <= names
    assert len(CLASSES) >= 10


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_the_message_names_path_strategy_and_claimant_first(cls):
    err = make(cls, path="encoder.layers.0", strategy="trace", claimant="@compile_mode on m.Layer")
    assert str(err) == (
        "[at 'encoder.layers.0', strategy 'trace', claimed by @compile_mode on m.Layer] "
        + body(cls, "it went wrong")
    )
    assert (err.path, err.strategy, err.claimant) == ("encoder.layers.0", "trace", "@compile_mode on m.Layer")
    assert err.message == "it went wrong"
    assert err.__cause__ is None


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_the_root_reads_root(cls):
    err = make(cls, path="")
    assert str(err) == f"[at '<root>'] {body(cls, 'it went wrong')}"
    assert err.path == ""  # the attribute keeps the real path


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_only_what_is_known_is_named(cls):
    assert str(make(cls)) == body(cls, "it went wrong")
    assert str(make(cls, strategy="script")) == f"[strategy 'script'] {body(cls, 'it went wrong')}"
    assert str(make(cls, path="a", claimant="rules[0]")) == (
        f"[at 'a', claimed by rules[0]] {body(cls, 'it went wrong')}"
    )


def test_a_plugin_error_names_the_plugin_and_the_hook():
    err = ts.PluginError("raised KeyError: 'x'", plugin="p", hook="torchstitch_prepare", path="a.b")
    assert (err.plugin, err.hook) == ("p", "torchstitch_prepare")
    assert str(err) == "[at 'a.b'] Plugin 'p' for hook 'torchstitch_prepare': raised KeyError: 'x'"


def test_a_verification_error_carries_the_difference_and_the_culprits():
    culprit = ts.Divergence("left.b", 0.5, "output: values differ by up to 0.5")
    err = ts.VerificationError("differs from eager", path="", max_abs_diff=0.5, culprits=[culprit])
    assert err.max_abs_diff == 0.5
    assert err.culprits == (culprit,)
    assert str(err) == "[at '<root>'] differs from eager"
    bare = ts.VerificationError("shapes differ")
    assert math.isnan(bare.max_abs_diff) and bare.culprits == ()


def test_an_artifact_error_reads_as_its_message_even_as_an_os_error(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ts.ArtifactError) as info:
        ts.load(missing)
    err = info.value
    assert isinstance(err, OSError)
    assert (err.errno, err.filename) == (errno.ENOENT, str(missing))
    assert str(err) == f"no such file: {str(missing)!r}"  # not OSError's "[Errno 2] ..."
    assert str(ts.ArtifactError("cannot save", path="")) == "[at '<root>'] cannot save"
