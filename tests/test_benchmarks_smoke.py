"""The benchmark harness runs end to end in smoke mode and writes every section."""

import pytest
from benchmark_smoke import run_smoke

pytest.importorskip("e3nn")

pytestmark = [pytest.mark.slow, pytest.mark.e3nn]


def _positive_numbers(value, where=""):
    """Every number in ``value`` (recursively), with where it sits."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _positive_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _positive_numbers(item, f"{where}[{i}]")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_smoke("run.py", tmp_path_factory.mktemp("bench"), "latest.json", "latest.md")


def test_every_section_has_positive_timings(smoke):
    results, _, _ = smoke
    assert results["mode"] == "smoke"
    for model in ("seed", "medium", "large"):
        for variant in ("e3nn.util.jit", "torchstitch", "torchstitch(example_inputs)"):
            assert results["compile"][model][variant]["seconds"] > 0
            overhead = results["overhead"][model][variant]
            assert overhead["total_s"] > 0 and overhead["jit_s"] > 0
            assert overhead["jit_calls"].get("script", 0) > 0
        for variant in ("eager", "e3nn", "torchstitch", "e3nn + torch.jit.freeze", "torchstitch freeze=True"):
            assert results["latency"][model]["threads=1"][variant]["ms"] > 0
    assert results["plan"]["modules"] >= 1000
    assert results["plan"]["named_modules_s"] > 0 and results["plan"]["ts_plan_s"] > 0
    for model in ("medium", "large"):
        rows = results["memory"][model]
        assert set(rows) == {
            "e3nn in_place=True",
            "e3nn in_place=False",
            "torchstitch",
            "torchstitch(example_inputs)",
        }
        assert rows["torchstitch"]["model_weight_mib"] > 0
        # exact, not noisy: e3nn's in_place=False copies every weight, torchstitch shares them
        assert (
            rows["e3nn in_place=False"]["duplicated_weight_mib"]
            == rows["e3nn in_place=False"]["model_weight_mib"]
        )
        assert rows["torchstitch"]["duplicated_weight_mib"] == 0
        assert all(len(row["runs_mib"]) >= 1 and row["extra_mib"] >= 0 for row in rows.values())


def test_reference_networks_and_extra_model(smoke):
    results, _, _ = smoke
    # medium/large are BASELINES' gate-points reference network; NequIPStyle is an extra, untargeted
    assert "GatePoints medium" in results["models"]["medium"]
    assert "GatePoints large" in results["models"]["large"]
    assert "NequIPStyle" in results["models"]["nequip_medium"]
    assert results["compile"]["nequip_medium"]["torchstitch"]["seconds"] > 0
    assert results["latency"]["nequip_medium"]["threads=1"]["torchstitch"]["ms"] > 0
    assert set(results["memory"]) == {"medium", "large"}
    assert not any("nequip_medium" in t["what"] for t in results["targets"])


def test_no_negative_numbers(smoke):
    results, _, _ = smoke
    # peak RSS increases are measured and may read slightly negative (pages given back)
    bad = [(where, v) for where, v in _positive_numbers(results) if v < 0 and ".memory." not in where]
    assert not bad


def test_targets_and_table(smoke):
    results, table, stdout = smoke
    names = {t["target"] for t in results["targets"]}
    assert names == {"compile", "memory", "latency", "plan", "overhead"}
    assert all(t["status"] in ("PASS", "MISS", "n/a") for t in results["targets"])
    for heading in ("Compile wall time", "Extra peak memory", "Forward latency", "plan()", "Targets"):
        assert heading in table
    assert "PASS" in stdout or "MISS" in stdout
