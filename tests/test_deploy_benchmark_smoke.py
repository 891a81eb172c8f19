"""The deployment benchmark (benchmarks/deploy.py) runs end to end in smoke mode."""

import pytest
from benchmark_smoke import run_smoke

pytest.importorskip("e3nn")

COMPILER_BUILDS = {
    "ts_aoti",
    "direct_aoti",
    "torch_compile_whole",
    "ts_inductor_regional",
    "ts_inductor_nested",
}

pytestmark = [pytest.mark.slow, pytest.mark.e3nn]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_smoke("deploy.py", tmp_path_factory.mktemp("deploy"), "deploy.json", "deploy.md")


def test_every_section_has_positive_numbers(smoke):
    results, _, _ = smoke
    assert results["mode"] == "smoke"
    assert "torch" in results["machine"]
    # smoke mode runs only the (tiny) medium network: large is full mode only
    assert set(results["sizes"]) == {"medium"}
    medium = results["sizes"]["medium"]
    assert medium["model"].startswith("GatePoints medium")
    builds, latency = medium["builds"], medium["latency"]
    assert set(builds) == {"e3nn_torchscript"}
    for row in builds.values():
        assert row["build_s"] > 0 and row["artifact_mib"] > 0 and row["process_wall_s"] > 0
    assert set(latency) == {"eager", "e3nn_torchscript", "gemm_floor"}
    for row in latency.values():
        assert row["ms"] > 0 and row["vs_eager"] > 0 and all(v > 0 for v in row["runs_ms"])
    assert medium["diagnostics"]["gemm_floor_vs_e3nn_torchscript"] > 0


def test_compiler_builds_are_skipped_and_said_so(smoke):
    results, table, _ = smoke
    # AOTI and torch.compile builds of even the tiny model take ~60 s here: smoke mode skips them
    medium = results["sizes"]["medium"]
    assert set(medium["skipped_builds"]) == COMPILER_BUILDS
    assert "smoke mode" in results["skipped"] and "large" in results["skipped"]
    assert "Skipped:" in table
    assert "## Large" in table and "Not run:" in table
    assert not COMPILER_BUILDS & set(medium["latency"])


def test_targets_and_table(smoke):
    results, table, stdout = smoke
    per_size = {(t["size"], t["target"]) for t in results["targets"]}
    assert per_size == {
        ("medium", "aoti"),
        ("medium", "regional_build"),
        ("medium", "regional_latency"),
        ("large", "regional_build"),
        ("large", "regional_latency"),
        ("medium", "nested_build"),
        ("medium", "nested_latency"),
        ("large", "nested_build"),
        ("large", "nested_latency"),
    }
    assert all(t["status"] == "skipped" for t in results["targets"])
    for heading in ("Machine:", "Medium: forward latency and build time", "diagnostics", "Targets (issue 6)"):
        assert heading in table
    assert "skipped" in stdout
    assert results["seconds"] < 60
