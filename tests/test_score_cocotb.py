"""cocotb benches of the ScoreUnit and the HeadDetector on Icarus and Verilator.

One build per (unit, preset, simulator); every ``@cocotb.test`` of a bench module runs inside
that one build.  Stimulus and expected output come from :mod:`sim.vectors.score`, shared with
the Amaranth-simulator tests.
"""

import pytest

from hw.presets import preset

SIMULATORS = ("icarus", "verilator")

pytestmark = pytest.mark.cocotb


def _run(unit, name, simulator, module, tmp_path, cfg=None):
    runner = pytest.importorskip("sim.runner", reason="sim.runner (sim-infra) not in this checkout")
    runner.run_cocotb(unit=unit, cfg=cfg or preset(name), test_module=module,
                      simulator=simulator, build_dir=tmp_path / f"{unit}_{name}_{simulator}")


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("name", ("tiny", "odd", "default"))
def test_score_unit_bench(name, simulator, tmp_path):
    """Directed, random and (default preset) MiniLM heads, stalls on and off, whole output."""
    _run("score_unit", name, simulator, "sim.benches.bench_score", tmp_path)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_score_unit_bench_sum_criterion(simulator, tmp_path):
    """The signed-sum criterion (the presets cover max and abs_sum)."""
    cfg = preset("tiny").replace(criterion="sum")
    _run("score_unit", "tiny_sum", simulator, "sim.benches.bench_score", tmp_path, cfg)


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("name", ("tiny", "default"))
def test_head_detector_bench(name, simulator, tmp_path):
    _run("head_detector", name, simulator, "sim.benches.bench_head_detector", tmp_path)
