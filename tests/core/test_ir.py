"""The IR: Plan lookup, iteration order, rendering, JSON determinism and round trip, Node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import attrs
import pytest
import torch

import torchstitch as ts

pytestmark = pytest.mark.filterwarnings("ignore::torchstitch.TorchScriptDeprecationWarning")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.act = torch.nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.lin(x))


@ts.compile_mode("script")
class Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.out(x)
        return -self.out(x)


class Net(torch.nn.Module):
    """Children deliberately not in alphabetical order: zeta, layers, head."""

    def __init__(self) -> None:
        super().__init__()
        self.zeta = torch.nn.Identity()
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.zeta(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


PREORDER = [
    "",
    "zeta",
    "layers",
    "layers.0",
    "layers.0.lin",
    "layers.0.act",
    "layers.1",
    "layers.1.lin",
    "layers.1.act",
    "head",
    "head.out",
]

POSTORDER = [
    "zeta",
    "layers.0.lin",
    "layers.0.act",
    "layers.0",
    "layers.1.lin",
    "layers.1.act",
    "layers.1",
    "layers",
    "head.out",
    "head",
    "",
]

RULES = (ts.Rule("trace", path="layers.1"),)


@pytest.fixture
def plan() -> ts.Plan:
    return ts.plan(Net(), rules=RULES)


class TestLookup:
    def test_root_and_paths(self, plan):
        assert plan[""] is plan.root
        assert plan[""].path == ""
        node = plan["layers.0.lin"]
        assert node.path == "layers.0.lin"
        assert node.type_name == "torch.nn.modules.linear.Linear"
        assert plan["head"].type_name == f"{Head.__module__}.Head"

    @pytest.mark.parametrize("path", ["nope", "layers.2", "layers.0.lin.weight", ".", "Layers"])
    def test_unknown_path(self, plan, path):
        with pytest.raises(KeyError) as info:
            plan[path]
        assert repr(path) in str(info.value)

    def test_contains(self, plan):
        assert "" in plan
        assert "layers.1.act" in plan
        assert "layers.2" not in plan
        assert 3 not in plan

    def test_len(self, plan):
        assert len(plan) == len(PREORDER) == len(list(Net().named_modules()))


class TestEquality:
    def test_plans_are_equal_and_hash_alike_when_their_trees_are(self, plan):
        again = ts.plan(Net(), rules=RULES)
        assert again is not plan
        assert again == plan and hash(again) == hash(plan)
        assert len({plan, again}) == 1
        other = ts.plan(Net())
        assert other != plan
        assert ts.Plan(plan["head"]) != plan

    def test_the_path_index_is_derived_not_shown(self, plan):
        assert "_index" not in repr(plan)
        assert [f.name for f in attrs.fields(ts.Plan) if f.eq] == ["root"]
        assert ts.Plan(plan["layers"])["layers.1.lin"] is plan["layers.1.lin"]


class TestOrder:
    def test_walk_is_preorder_in_module_order(self, plan):
        assert [n.path for n in plan.walk()] == PREORDER
        assert [n.path for n in plan] == PREORDER
        # the same order as torch's named_modules
        assert PREORDER == [name for name, _ in Net().named_modules()]

    def test_post_order(self, plan):
        paths = [n.path for n in plan.post_order()]
        assert paths == POSTORDER
        seen = set()
        for node in plan.post_order():
            assert all(c.path in seen for c in node.children)
            seen.add(node.path)

    def test_children_in_module_order(self, plan):
        assert [c.name for c in plan[""].children] == ["zeta", "layers", "head"]
        assert [c.path for c in plan["layers"].children] == ["layers.0", "layers.1"]

    def test_walk_is_repeatable(self, plan):
        assert [n.path for n in plan.walk()] == [n.path for n in plan.walk()]


class TestNode:
    def test_properties(self, plan):
        head = plan["head"]
        assert head.name == "head"
        assert head.strategy == "script"
        assert head.claim_kind is ts.ClaimKind.DECORATOR
        assert head.region == "head"
        assert head.shared_with is None
        assert head.outcome is None

        deep = plan["layers.1.lin"]
        assert deep.name == "lin"
        assert deep.strategy is None
        assert deep.claim is None
        assert deep.claim_kind is ts.ClaimKind.DEFAULT
        assert deep.region == "layers.1"

        root = plan[""]
        assert root.name == ""
        assert root.region is None
        assert root.strategy is None

        traced = plan["layers.1"]
        assert traced.strategy == "trace"
        assert traced.claim_kind is ts.ClaimKind.OVERRIDE
        assert traced.offers == (traced.claim,)

    def test_frozen(self, plan):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            plan["head"].path = "x"
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            plan.root = plan["head"]

    def test_describe(self, plan):
        assert plan["layers.0.lin"].describe() == "inherit (python)"
        assert plan["layers.1.lin"].describe() == "inherit (inside layers.1)"
        assert plan["head"].describe() == (f"script · decorator by @compile_mode on {Head.__module__}.Head")

    def test_shared_node(self):
        class Twice(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.a = Block()
                self.b = self.a

        plan = ts.plan(Twice())
        assert len(plan) == 5  # root, a, a.lin, a.act and b, a leaf node pointing at a
        assert plan["b"].shared_with == "a"
        assert plan["b"].describe() == "same module as a"
        assert [n.path for n in plan.walk()] == ["", "a", "a.lin", "a.act", "b"]

    def test_nodes_hold_no_tensors_or_modules(self, plan):
        for node in plan.walk():
            for field in attrs.fields(type(node)):
                value = getattr(node, field.name)
                assert not isinstance(value, (torch.Tensor, torch.nn.Module))


class TestRender:
    def test_one_line_per_node(self, plan):
        text = plan.render()
        lines = text.splitlines()
        assert len(lines) == len(plan)
        assert str(plan) == text
        assert lines[0] == "<root> (Net): inherit (python)"

    def test_verbose_shows_full_type_names_as_the_json_does(self, plan):
        lines = plan.render(verbose=True).splitlines()
        assert lines[0] == f"<root> ({Net.__module__}.Net): inherit (python)"
        assert '"type": "torch.nn.modules.container.ModuleList"' in plan.to_json()
        assert "(torch.nn.modules.container.ModuleList)" in plan.render(verbose=True)
        assert "(ModuleList)" in plan.render()

    def test_short_type_names(self):
        def local():
            class Clamp(torch.nn.Module):
                pass

            return Clamp()

        graph_module = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))
        modules = torch.nn.ModuleDict({"g": graph_module, "c": local()})
        plan = ts.plan(modules)
        assert "<locals>" in plan["g"].type_name and "<locals>" in plan["c"].type_name
        assert (plan["g"].short_type_name, plan["c"].short_type_name) == ("GraphModule", "Clamp")
        assert "g (GraphModule): " in plan.render()

    def test_lines_carry_strategy_kind_and_claimant(self, plan):
        lines = plan.render().splitlines()
        by_label = {}
        for line in lines[1:]:
            label = line.lstrip("│├└─ ").split(" (")[0]
            by_label.setdefault(label, []).append(line)
        (head,) = by_label["head"]
        assert "script · decorator by @compile_mode on" in head
        assert f"{Head.__module__}.Head" in head
        traced = by_label["1"][0]
        assert "(torch.nn.modules.container.ModuleList)" not in traced
        assert "trace · override by rules[0] Rule('trace', path='layers.1')" in traced
        assert "inherit (inside layers.1)" in lines[PREORDER.index("layers.1.lin")]
        assert "inherit (python)" in lines[PREORDER.index("layers.0.lin")]

    def test_tree_shape(self, plan):
        lines = plan.render().splitlines()
        assert lines[1].startswith("├── zeta ")
        assert lines[2].startswith("├── layers ")
        assert lines[3].startswith("│   ├── 0 ")
        assert lines[4].startswith("│   │   ├── lin ")
        assert lines[5].startswith("│   │   └── act ")
        assert lines[6].startswith("│   └── 1 ")
        assert lines[7].startswith("│       ├── lin ")
        assert lines[9].startswith("└── head ")
        assert lines[10].startswith("    └── out ")

    def test_compiled_plan_renders_outcome(self):
        model = Net()
        x = torch.randn(4, 3)
        result = ts.Engine(rules=RULES).compile(model, example_inputs=(x,))
        torch.testing.assert_close(result.module(x), model(x))
        lines = result.plan.render().splitlines()
        traced = lines[PREORDER.index("layers.1")]
        assert " ms" in traced
        assert "inputs: inputs.recorded" in traced
        assert "verified on 1" in traced
        assert result.plan["layers.1"].outcome.inputs_source == "inputs.recorded"


class TestJson:
    def test_structure(self, plan):
        data = json.loads(plan.to_json())
        assert data["torchstitch_plan"] == 1
        root = data["root"]
        assert root["path"] == ""
        assert [c["path"] for c in root["children"]] == ["zeta", "layers", "head"]
        head = root["children"][2]
        assert head["claim"] == {
            "strategy": "script",
            "kind": "decorator",
            "claimant": f"@compile_mode on {Head.__module__}.Head",
            "reason": "",
            "portable": False,
        }
        assert head["region"] == "head"

    def test_deterministic(self):
        a = ts.plan(Net(), rules=RULES).to_json()
        b = ts.plan(Net(), rules=RULES).to_json()
        assert a == b
        assert ts.plan(Net(), rules=RULES).to_json(indent=None) == ts.plan(Net(), rules=RULES).to_json(
            indent=None
        )

    def test_round_trip(self, plan):
        text = plan.to_json()
        back = ts.Plan.from_json(text)
        assert back == plan
        assert back.to_json() == text
        assert [n.path for n in back.walk()] == PREORDER
        assert back["head"].claim == plan["head"].claim
        assert back["head"].claim.kind is ts.ClaimKind.DECORATOR
        assert back.render() == plan.render()

    def test_round_trip_compiled_plan(self):
        model = Net()
        x = torch.randn(4, 3)
        result = ts.Engine(rules=RULES).compile(model, example_inputs=(x,))
        text = result.plan.to_json()
        back = ts.Plan.from_json(text)
        assert back == result.plan
        assert back["layers.1"].outcome == result.plan["layers.1"].outcome
        assert back["layers.1"].outcome.n_verified >= 1

    def test_round_trip_shared(self):
        class Twice(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.a = Block()
                self.b = self.a

        plan = ts.plan(Twice())
        back = ts.Plan.from_json(plan.to_json())
        assert back == plan
        assert back["b"].shared_with == "a"

    def test_from_json_rejects_other_json(self):
        with pytest.raises(ValueError, match="not a torchstitch plan"):
            ts.Plan.from_json('{"root": {}}')

    def test_byte_identical_across_hash_seeds(self, tmp_path):
        script = tmp_path / "make_plan.py"
        script.write_text(
            textwrap.dedent(
                """
                import sys
                import torch
                import torchstitch as ts

                @ts.compile_mode("script")
                class Head(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.out = torch.nn.Linear(3, 2)

                    def forward(self, x):
                        return self.out(x)

                class Net(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.zeta = torch.nn.Identity()
                        self.layers = torch.nn.ModuleList(
                            [torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
                             for _ in range(3)]
                        )
                        self.shared = self.layers[1]
                        self.head = Head()
                        self.alpha = torch.nn.Tanh()

                plan = ts.plan(
                    Net(),
                    rules=[ts.Rule("trace", path="layers.[02]"), ts.Rule(None, type=torch.nn.Tanh)],
                )
                sys.stdout.buffer.write(plan.to_json().encode("utf-8"))
                """
            )
        )
        outputs = []
        for seed in ("0", "12345"):
            env = dict(os.environ, PYTHONHASHSEED=seed)
            proc = subprocess.run(
                [sys.executable, str(script)],
                env=env,
                capture_output=True,
                timeout=120,
                cwd=tmp_path,
            )
            assert proc.returncode == 0, proc.stderr.decode()
            outputs.append(proc.stdout)
        assert outputs[0] == outputs[1]
        data = json.loads(outputs[0])
        paths = [c["path"] for c in data["root"]["children"]]
        assert paths == ["zeta", "layers", "shared", "head", "alpha"]
        assert data["root"]["children"][2]["shared_with"] == "layers.1"


class TestMapNodes:
    def test_map_nodes_replaces_and_keeps_the_rest(self, plan):
        outcome = ts.Outcome(seconds=0.5, n_verified=2, max_abs_diff=0.0)
        new = plan.map_nodes({"layers.0.lin": attrs.evolve(plan["layers.0.lin"], outcome=outcome)})
        assert new["layers.0.lin"].outcome == outcome
        assert plan["layers.0.lin"].outcome is None  # the original plan is unchanged
        assert new["head"] is plan["head"]
        assert [n.path for n in new.walk()] == PREORDER
        assert new != plan


class TestFold:
    """Plan.fold: the one post-order traversal, each module once."""

    def test_children_first_in_module_order(self):
        plan = ts.plan(torch.nn.Sequential(Block(), torch.nn.ReLU()))
        left = []

        def leave(node, children):
            left.append(node.path)
            return (node.path, sorted(children))

        assert plan.fold(leave) == ("", ["0", "1"])
        assert left == ["0.lin", "0.act", "0", "1", ""]

    def test_a_shared_module_is_left_once_and_its_result_reused(self):
        shared = Block()
        plan = ts.plan(torch.nn.Sequential(shared, torch.nn.ReLU(), shared))
        assert plan["2"].shared_with == "0"
        left = []

        def leave(node, children):
            left.append(node.path)
            return children

        result = plan.fold(leave)
        assert left == ["0.lin", "0.act", "0", "1", ""]  # "2" and its children: not again
        assert result["2"] is result["0"]
