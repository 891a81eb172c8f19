"""The main job: compile the first seed scenario end to end (``python -m torchstitch.demo``).

A module holding an ``e3nn.o3.Norm`` (which e3nn marks for tracing) with a
data-dependent ``if`` of its own is compiled with its root scripted; the Norm is
traced on the inputs recorded from one eager run.  The plan is printed, the
compiled model is compared with eager on fresh inputs that take both branches,
and the artifact is saved, loaded back and compared again.
"""

import argparse
import sys
import time

import torch

import torchstitch as ts

#: the irreps of the seed model's ``o3.Norm`` (its input)
IRREPS = "8x0e + 4x1o + 2x2e"


def build_seed_model() -> torch.nn.Module:
    """Seed scenario 1 (DESIGN.md): ``o3.Norm`` inside a parent with a data-dependent branch."""
    from e3nn import o3

    class NormThenBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = o3.Norm(IRREPS)

        def forward(self, x):
            n = self.norm(x)
            if bool((n > 1.0).any()):
                return n * 2.0
            return n - 1.0

    return NormThenBranch()


def _input_dim() -> int:
    from e3nn import o3

    return o3.Irreps(IRREPS).dim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchstitch.demo", description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", default="seed_model.pt", help="where to save the artifact")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = build_seed_model().eval()
    dim = _input_dim()
    example = (torch.randn(16, dim),)

    result = ts.Engine().compile(
        model,
        example_inputs=example,
        root_strategy="script",
    )
    print("Plan (after compiling):")
    print(result.plan.render())
    print()
    print(f"compiled in {result.seconds:.3f} s; root: {type(result.module).__name__}")

    print("\nCompiled vs eager on fresh inputs:")
    worst = 0.0
    for scale, branch in ((0.05, "n - 1"), (10.0, "n * 2")):
        x = scale * torch.randn(32, dim)
        diff = (result.module(x) - model(x)).abs().max().item()
        worst = max(worst, diff)
        print(f"  inputs x{scale:<5} (branch {branch}): max |compiled - eager| = {diff:.3e}")

    result.save(args.output)
    loaded = ts.load(args.output)
    x = torch.randn(32, dim)
    diff = (loaded(x) - model(x)).abs().max().item()
    worst = max(worst, diff)
    same_plan = loaded.plan == result.plan
    print(
        f"\nSaved {args.output}; loaded back: max |loaded - eager| = {diff:.3e}, plan embedded: {same_plan}"
    )

    start = time.perf_counter()
    for _ in range(200):
        model(x)
    eager_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(200):
        loaded(x)
    compiled_s = time.perf_counter() - start
    print(
        f"forward latency, compiled / eager: {compiled_s / eager_s:.2f} "
        f"(200 calls each, {torch.get_num_threads()} threads)"
    )

    ok = worst < 1e-5 and same_plan
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
