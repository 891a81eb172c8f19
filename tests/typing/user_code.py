"""A user's script of the public API: `.ci/typecheck` checks it with `mypy --strict`.

Not collected by pytest (no test functions); it type-checks what users write.
"""

from __future__ import annotations

import torch

import torchstitch as ts


@ts.compile_mode("trace")
class Features(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


def deploy(model: torch.nn.Module, x: torch.Tensor, path: str) -> ts.Plan | None:
    rules = [ts.Rule("trace", path="features"), ts.Rule(None, type=torch.nn.Tanh)]
    plan: ts.Plan = ts.plan(model, rules=rules, root_strategy="script")
    print(plan.render())
    compiled: torch.nn.Module = ts.compile(
        model, example_inputs=(x,), rules=rules, root_strategy="script", atol=1e-6
    )
    scripted: torch.nn.Module = ts.script(model, example_inputs=[(x,), (x[:2],)])
    traced: torch.nn.Module = ts.trace(Features(), (x,))
    result: ts.CompileResult = ts.Engine(rules=rules).compile(model, example_inputs=(x,))
    timings: dict[str, float] = result.timings
    print(timings, scripted, traced)
    ts.save(compiled, path)
    artifact: ts.Artifact = ts.load(path)
    try:
        ts.compile(model, rules=[ts.Rule("no-such-strategy", path="")])
    except ts.StitchError as exc:
        print(exc.path, exc.strategy)
    return artifact.plan if artifact.plan is not None else ts.plan_of(compiled)
