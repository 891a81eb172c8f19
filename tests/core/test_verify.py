"""Verification: the compare() function, and end to end with a strategy that lies."""

import collections
import math
from typing import NamedTuple

import pytest
import torch
from modules import AddOne
from torch import nn

import torchstitch as ts
from torchstitch.core import errors as ts_errors
from torchstitch.core.verify import Mismatch, Tolerance, compare

pytestmark = [
    pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

DEFAULT = Tolerance()


# --------------------------------------------------------------------------
# compare()
# --------------------------------------------------------------------------


def test_equal_nested_structures_match():
    a = torch.randn(2, 3)
    b = torch.arange(4)
    expected = (a, {"x": b, "y": [a * 2, (a + 1,)]}, 3, None, "tag")
    actual = (a.clone(), {"y": [a * 2, (a + 1,)], "x": b.clone()}, 3, None, "tag")
    diff, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch is None
    assert diff == 0.0


def test_nested_difference_reports_where_and_how_much():
    a = torch.zeros(2, 3)
    wrong = a.clone()
    wrong[1, 2] = 0.25
    expected = (a, {"inner": [a, a]})
    actual = (a, {"inner": [a, wrong]})
    diff, mismatch = compare(expected, actual, DEFAULT)
    assert isinstance(mismatch, Mismatch)
    assert mismatch.where == "output[1]['inner'][1]"
    assert mismatch.max_abs_diff == pytest.approx(0.25)
    assert diff == pytest.approx(0.25)


def test_largest_difference_is_over_all_tensors():
    a = torch.zeros(3)
    expected = (a, a)
    actual = (a + 0.1, a + 0.5)
    diff, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch.where == "output[0]"  # the first mismatch ...
    assert mismatch.max_abs_diff == pytest.approx(0.1)
    assert diff == pytest.approx(0.5)  # ... but the largest difference overall


def test_within_tolerance_reports_difference_without_mismatch():
    a = torch.ones(4)
    diff, mismatch = compare(a, a + 1e-6, DEFAULT)
    assert mismatch is None
    assert 0 < diff < 2e-6


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        pytest.param(torch.zeros(2, 3), torch.zeros(3, 2), id="shape"),
        pytest.param(torch.zeros(2, 3), torch.zeros(2, 3, 1), id="rank"),
        pytest.param(torch.zeros(3), torch.zeros(3, dtype=torch.float64), id="dtype"),
        pytest.param(torch.zeros(3), torch.zeros(3, dtype=torch.int64), id="float-vs-int"),
    ],
)
def test_shape_or_dtype_mismatch(expected, actual):
    diff, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch is not None
    assert mismatch.where == "output"
    assert math.isnan(mismatch.max_abs_diff)
    assert str(tuple(expected.shape)) in mismatch.detail
    assert str(tuple(actual.shape)) in mismatch.detail


@pytest.mark.parametrize(
    ("expected", "actual", "where"),
    [
        pytest.param((torch.zeros(1),), (torch.zeros(1), torch.zeros(1)), "output", id="length"),
        pytest.param(torch.zeros(1), (torch.zeros(1),), "output", id="tensor-vs-tuple"),
        pytest.param({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, "output", id="keys"),
        pytest.param({"a": torch.zeros(1)}, [torch.zeros(1)], "output", id="dict-vs-list"),
        pytest.param([1, 2], [1, 3], "output[1]", id="int"),
        pytest.param(("a",), ("b",), "output[0]", id="str"),
    ],
)
def test_structure_mismatch(expected, actual, where):
    _, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch is not None
    assert mismatch.where == where


@pytest.mark.parametrize("side", ["compiled", "eager"])
def test_nan_on_one_side_is_a_mismatch(side):
    clean = torch.tensor([1.0, 2.0, 3.0])
    dirty = clean.clone()
    dirty[1] = float("nan")
    expected, actual = (clean, dirty) if side == "compiled" else (dirty, clean)
    _, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch is not None
    assert "NaN" in mismatch.detail and side in mismatch.detail
    assert math.isnan(mismatch.max_abs_diff)


def test_nan_where_eager_has_nan_is_equal_and_the_rest_is_compared():
    """A stress computed for a cluster without a cell is NaN in eager and compiled alike."""
    eager = torch.tensor([float("nan"), 1.0, 2.0])
    diff, mismatch = compare(eager, eager.clone(), DEFAULT)
    assert mismatch is None and diff == 0.0
    _, mismatch = compare(eager, torch.tensor([float("nan"), 1.0, 2.5]), DEFAULT)
    assert mismatch is not None and "values differ by up to 0.5" in mismatch.detail
    _, mismatch = compare(eager, torch.tensor([1.0, float("nan"), 2.0]), DEFAULT)
    assert mismatch is not None and "NaN" in mismatch.detail
    # nothing but NaN verifies nothing
    all_nan = {"energy": torch.full((1,), float("nan")), "stress": torch.full((3, 3), float("nan"))}
    _, mismatch = compare(all_nan, {k: v.clone() for k, v in all_nan.items()}, DEFAULT)
    assert mismatch is not None and mismatch.where == "output['energy']"
    assert "no number to compare" in mismatch.detail


def test_nan_inside_a_structure_is_found():
    clean = torch.ones(2)
    dirty = torch.tensor([1.0, float("nan")])
    _, mismatch = compare({"a": [clean, clean]}, {"a": [clean, dirty]}, DEFAULT)
    assert mismatch is not None
    assert mismatch.where == "output['a'][1]"


def test_integer_tensors_compared_exactly():
    a = torch.tensor([1, 2, 3])
    diff, mismatch = compare(a, a.clone(), DEFAULT)
    assert mismatch is None and diff == 0.0
    diff, mismatch = compare(a, torch.tensor([1, 2, 7]), DEFAULT)
    assert mismatch is not None
    assert mismatch.detail == "integer values differ"
    assert mismatch.max_abs_diff == 4.0
    assert diff == 4.0
    # even a difference of 1 fails, whatever the tolerance
    _, mismatch = compare(a, torch.tensor([1, 2, 4]), Tolerance(atol=10.0, rtol=10.0))
    assert mismatch is not None


def test_bool_tensors():
    a = torch.tensor([True, False])
    assert compare(a, a.clone(), DEFAULT)[1] is None
    assert compare(a, torch.tensor([True, True]), DEFAULT)[1] is not None


def test_empty_tensors_match():
    assert compare(torch.zeros(0, 3), torch.zeros(0, 3), DEFAULT) == (0.0, None)


@pytest.mark.parametrize(
    ("dtype", "delta", "ok"),
    [
        (torch.float32, 1e-6, True),
        (torch.float32, 1e-3, False),
        (torch.float64, 1e-9, True),
        (torch.float64, 1e-6, False),  # fine for float32, too much for float64
        (torch.float16, 4e-3, True),  # too much for float32, fine for float16
        (torch.bfloat16, 8e-3, True),
        (torch.float16, 0.1, False),
    ],
)
def test_tolerance_by_dtype(dtype, delta, ok):
    expected = torch.full((4,), 0.5, dtype=dtype)
    actual = (expected.double() + delta).to(dtype)
    _, mismatch = compare(expected, actual, DEFAULT)
    assert (mismatch is None) is ok


def test_explicit_tolerance_overrides_dtype_default():
    expected = torch.zeros(3)
    actual = expected + 5e-3
    assert compare(expected, actual, DEFAULT)[1] is not None
    assert compare(expected, actual, Tolerance(atol=1e-2))[1] is None
    # rtol scales with |expected|
    big = torch.full((3,), 100.0)
    assert compare(big, big + 0.5, Tolerance(atol=0.0, rtol=1e-2))[1] is None
    assert compare(big, big + 2.0, Tolerance(atol=0.0, rtol=1e-2))[1] is not None


class Pair(NamedTuple):
    low: torch.Tensor
    high: torch.Tensor


class Other(NamedTuple):
    first: torch.Tensor
    second: torch.Tensor


def _t():
    return torch.zeros(2)


PAIR, OTHER = Pair(_t(), _t()), Other(_t(), _t())


@pytest.mark.parametrize(
    ("expected", "actual", "detail"),
    [
        pytest.param(
            PAIR, (_t(), _t()), "expected a NamedTuple Pair(low, high), got a tuple of 2 (", id="nt-vs-tuple"
        ),
        pytest.param(PAIR, OTHER, "got a NamedTuple Other(first, second)", id="other-fields"),
        pytest.param((_t(), _t()), [_t(), _t()], "expected a tuple of 2, got a list of 2", id="tuple-list"),
        pytest.param([_t()], (_t(),), "expected a list of 1, got a tuple of 1", id="list-vs-tuple"),
        pytest.param((_t(),), PAIR, "expected a tuple of 1, got a NamedTuple Pair", id="tuple-vs-nt"),
        pytest.param({"a": _t()}, (_t(),), "expected keys ['a'], got a tuple of 1", id="dict-vs-tuple"),
        pytest.param(3, (3,), "expected int, got a tuple of 1", id="int-vs-tuple"),
    ],
)
def test_container_kinds_must_match(expected, actual, detail):
    diff, mismatch = compare(expected, actual, DEFAULT)
    assert mismatch is not None
    assert mismatch.where == "output"
    assert detail in mismatch.detail
    assert math.isnan(mismatch.max_abs_diff)


class Incomparable:
    def __eq__(self, other):
        raise TypeError("no comparison defined")


@pytest.mark.parametrize(
    ("expected", "actual", "detail"),
    [
        pytest.param(1.5, torch.ones(3), "expected float, got a tensor", id="number-vs-tensor"),
        pytest.param(None, torch.ones(3), "expected NoneType, got a tensor", id="none-vs-tensor"),
        pytest.param(Incomparable(), Incomparable(), "!=", id="eq-raises"),
    ],
)
def test_values_that_cannot_be_compared_are_a_mismatch_not_an_error(expected, actual, detail):
    _, mismatch = compare((expected,), (actual,), DEFAULT)
    assert mismatch is not None
    assert mismatch.where == "output[0]"
    assert detail in mismatch.detail


def test_a_namedtuple_of_another_class_with_the_same_fields_matches():
    """TorchScript returns a NamedTuple as a class of its own making, with the same fields."""
    scripted = collections.namedtuple("Pair", ["low", "high"])
    assert scripted is not Pair
    assert compare(Pair(_t(), _t()), scripted(_t(), _t()), DEFAULT) == (0.0, None)
    assert compare({"a": [_t()]}, collections.OrderedDict(a=[_t()]), DEFAULT) == (0.0, None)


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), "0.1", True])
@pytest.mark.parametrize("option", ["atol", "rtol"])
def test_the_callers_tolerance_must_be_a_non_negative_number(option, bad):
    with pytest.raises(ValueError, match=rf"^{option} must be a number >= 0 or None, got {bad!r}$"):
        ts.Engine(**{option: bad})
    assert getattr(Tolerance(**{option: 0}), option) == 0  # zero asks for exact equality


def test_python_floats_with_tolerance():
    assert compare(1.0, 1.0 + 1e-7, DEFAULT)[1] is None
    _, mismatch = compare((1.0,), (1.5,), DEFAULT)
    assert mismatch is not None
    assert mismatch.max_abs_diff == pytest.approx(0.5)


# --------------------------------------------------------------------------
# end to end: a strategy that returns a wrong module
# --------------------------------------------------------------------------


class Child(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x)


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = Child()
        self.post = nn.Linear(3, 3)

    def forward(self, x):
        return self.post(self.child(x))


class OffByOne:
    """A strategy whose compiled module adds 1 to what it traced."""

    name = "off-by-one"

    def __init__(self, verify=True):
        self.verify = verify

    @ts.hookimpl
    def torchstitch_strategies(self):
        def compile_wrong(module, context):
            return torch.jit.trace_module(AddOne(module), context.inputs[0], check_trace=False)

        return [
            ts.Strategy(
                name="off_by_one",
                family="torchscript",
                compile=compile_wrong,
                needs_inputs=True,
                verify=self.verify,
            )
        ]


RULES = [ts.Rule("off_by_one", path="child")]


def test_wrong_module_caught_at_its_node(watch):
    model = Parent()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(torch.randn(4, 3),), rules=RULES, plugins=[OffByOne()])
    err = info.value
    assert err.path == "child"
    assert "'child'" in str(err)
    assert err.strategy == "off_by_one"
    assert err.max_abs_diff == pytest.approx(1.0)
    check()


def test_wrong_module_caught_on_caller_inputs_without_example_inputs(watch):
    model = Parent()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, inputs={"child": (torch.randn(2, 3),)}, rules=RULES, plugins=[OffByOne()])
    assert info.value.path == "child"
    assert info.value.max_abs_diff == pytest.approx(1.0)
    check()


def test_wrong_module_without_node_verification_caught_at_root(watch):
    model = Parent()
    check = watch(model)
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(
            model,
            example_inputs=(torch.randn(4, 3),),
            rules=RULES,
            plugins=[OffByOne(verify=False)],
        )
    assert info.value.path == ""
    assert "'<root>'" in str(info.value)
    check()


def test_verify_false_lets_the_wrong_module_through(watch):
    model = Parent()
    check = watch(model)
    x = torch.randn(4, 3)
    result = ts.Engine(rules=RULES, plugins=[OffByOne()], verify=False).compile(model, example_inputs=(x,))
    check()
    assert result.plan["child"].outcome.n_verified == 0
    assert result.verification == {}
    # the wrong module really is in there
    torch.testing.assert_close(result.module.child(x), model.child(x) + 1.0)
    torch.testing.assert_close(result.module(x), model.post(model.child(x) + 1.0))


def test_verify_true_records_the_difference_when_correct():
    model = Parent()
    x = torch.randn(4, 3)
    result = ts.Engine(rules=[ts.Rule("trace", path="child")]).compile(model, example_inputs=(x,))
    assert result.plan["child"].outcome.n_verified == 1
    assert result.verification["child"] <= 1e-5
    assert result.verification[""] <= 1e-5
    torch.testing.assert_close(result.module(x), model(x))


# --------------------------------------------------------------------------
# compiled pieces that raise when run: the node at fault and the real cause
# --------------------------------------------------------------------------


class RaisesInScript(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 1e9):
            return x
        raise ValueError("negative energy\nsecond line of the message")


class CallsRaising(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = RaisesInScript()

    def forward(self, x):
        return self.inner(x) * 2.0


def _scripted(tmp_path, how):
    if how == "nested":
        return torch.jit.script(CallsRaising())
    scripted = torch.jit.script(RaisesInScript())
    if how == "scripted":
        return scripted
    torch.jit.save(scripted, str(tmp_path / "m.pt"))  # tracebacks of serialized and original code
    return torch.jit.load(str(tmp_path / "m.pt"))


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
@pytest.mark.parametrize("how", ["scripted", "loaded", "nested"])
def test_exception_summary_finds_the_original_exception_in_torchscript_errors(tmp_path, how):
    module = _scripted(tmp_path, how)
    with pytest.raises(Exception) as info:
        module(torch.randn(2, 3))
    assert str(info.value).startswith("The following operation failed in the TorchScript interpreter.")
    assert ts_errors.exception_summary(info.value) == "ValueError: negative energy"


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_exception_summary_of_a_torch_error_raised_in_torchscript():
    with pytest.raises(RuntimeError) as info:
        torch.jit.script(Child())(torch.randn(2, 4))
    assert ts_errors.exception_summary(info.value).startswith("RuntimeError: mat1 and mat2 shapes")


def test_exception_summary_of_other_exceptions():
    assert ts_errors.exception_summary(KeyError("k")) == "KeyError: 'k'"
    assert ts_errors.exception_summary(ValueError("two\nlines")) == "ValueError: two"
    assert ts_errors.exception_summary(ValueError()) == "ValueError: (no message)"


class UsesUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    @torch.jit.unused
    def helper(self, x):
        return x * 2.0

    def forward(self, x):
        return self.helper(self.lin(x))


@ts.compile_mode("script")
class ScriptedUsesUnused(UsesUnused):
    pass


class HoldsUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(3, 3)
        self.child = ScriptedUsesUnused()

    def forward(self, x):
        return self.child(self.pre(x)) + 1.0


@pytest.mark.parametrize("root", ["python", "script"])
def test_a_compiled_child_that_raises_is_blamed_with_the_real_cause(root, watch):
    model = HoldsUnused()
    check = watch(model)
    rules = [ts.Rule("script", path="")] if root == "script" else []
    with pytest.raises(ts.VerificationError) as info:
        ts.compile(model, example_inputs=(torch.randn(2, 3),), rules=rules)
    err = info.value
    assert err.path == "child"
    assert err.strategy == "script"
    assert "'child'" in str(err)
    assert "RuntimeError: This Python function is annotated to be ignored and cannot be run" in str(err)
    assert "The following operation failed" not in str(err)
    assert [c.path for c in err.culprits] == ["child"]
    assert isinstance(err.__cause__, torch.jit.Error)
    check()


def test_locate_reports_a_piece_that_raises_with_the_real_cause():
    model = HoldsUnused()
    compiled = ts.compile(model, verify=False)
    (divergence,) = ts.locate(model, compiled, (torch.randn(2, 3),))
    assert divergence.path == "child"
    assert math.isnan(divergence.max_abs_diff)
    assert divergence.detail == (
        "raised RuntimeError: This Python function is annotated to be ignored and cannot be run"
    )
