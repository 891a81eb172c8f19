"""A user's script of the public API: `.ci/typecheck` checks it with `mypy --strict`.

Not collected by pytest (no test functions); it type-checks what users write.
"""

from __future__ import annotations

import torch

import torchstitch as ts
from torchstitch.plugins.toolkit import TracingInputs, make_shell


@ts.compile_mode("trace")
class Features(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


# -- a plugin author's module (docs/plugins.md) ---------------------------------


def compile_kept(module: torch.nn.Module, context: ts.CompileContext) -> torch.nn.Module:
    shell: torch.nn.Module = make_shell(module)
    linear: torch.nn.Linear = make_shell(torch.nn.Linear(3, 8))  # same class in, same class out
    print(context.node.path, context.options, linear)
    return shell


KEPT = ts.Strategy(
    name="kept",
    family="python",
    compile=compile_kept,
    can_contain={"python"},
    fallbacks=("script",),
    replaces={"trace"},
    compiled_types=(torch.jit.ScriptModule,),
    description="a copy of the module, left in Python",
)


class KeepPlugin:
    @ts.hookimpl
    def torchstitch_strategies(self) -> list[ts.Strategy]:
        return [KEPT]

    @ts.hookimpl(trylast=True)
    def torchstitch_claim(self, module: torch.nn.Module) -> ts.Claim | None:
        if isinstance(module, torch.nn.Tanh):
            return ts.Claim(KEPT.name, ts.ClaimKind.RULE, "plugin keep", "Tanh stays in Python")
        return None

    @ts.hookimpl
    def torchstitch_tracing_inputs(self, module: torch.nn.Module, n: int) -> TracingInputs | None:
        if not isinstance(module, Features):
            return None
        return [{"forward": (torch.randn(2, 3),)} for _ in range(n)]


# -- a user's script --------------------------------------------------------------


def deploy(model: torch.nn.Module, x: torch.Tensor, path: str) -> ts.Plan | None:
    rules = [ts.Rule("trace", path="features"), ts.Rule(None, type=torch.nn.Tanh)]
    plan: ts.Plan = ts.plan(model, rules=rules, root_strategy="script")
    print(plan.render())
    compiled: torch.nn.Module = ts.compile(
        model, example_inputs=(x,), rules=rules, root_strategy="script", atol=1e-6
    )
    scripted: torch.nn.Module = ts.script(model, example_inputs=(x,))
    traced: torch.nn.Module = ts.trace(Features(), (x,))
    result: ts.CompileResult = ts.Engine(rules=rules).compile(model, example_inputs=(x,))
    timings: dict[str, float] = result.timings
    print(timings, scripted, traced)
    ts.save(compiled, path)
    artifact: ts.Artifact = ts.load(path)
    try:
        ts.compile(model, rules=[ts.Rule("no-such-strategy", path="")])
    except ts.VerificationError as exc:
        print(exc.max_abs_diff, [culprit.path for culprit in exc.culprits])
    except ts.StitchError as exc:
        print(exc.path, exc.strategy)
    with_plugin: torch.nn.Module = ts.compile(model, example_inputs=(x,), plugins=[KeepPlugin(), "no:e3nn"])
    divergences: list[ts.Divergence] = ts.locate(model, with_plugin, (x,))
    for divergence in divergences:
        print(divergence.path, divergence.max_abs_diff, divergence.detail)
    return artifact.plan if artifact.plan is not None else ts.plan_of(compiled)
