"""cocotb benches of the ScoreUnit and the HeadDetector on Icarus and Verilator.

One build per (unit, preset, simulator); every ``@cocotb.test`` of a bench module runs inside
that one build.  Stimulus and expected output come from :mod:`sim.vectors.score`, shared with
the Amaranth-simulator tests.  Each bench logs ``TRANSACTIONS <unit> <n>`` per cocotb test;
the wrapper sums them, checks that work was done, and prints the total.
"""

import re

import pytest

from hw.presets import preset

SIMULATORS = ("icarus", "verilator")

pytestmark = pytest.mark.cocotb


def _run(unit, label, simulator, module, tmp_path, cfg=None, min_transactions=1):
    runner = pytest.importorskip("sim.runner", reason="sim.runner (sim-infra) not in this checkout")
    reason = runner.simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    run = runner.run_cocotb(unit=unit, cfg=cfg or preset(label), test_module=module,
                            simulator=simulator, build_dir=tmp_path / label)
    counts = [int(n) for n in re.findall(rf"TRANSACTIONS {unit.split('_')[0]}\w* (\d+)",
                                         run.log.read_text(errors="replace"))]
    total = sum(counts)
    assert total >= min_transactions, f"only {total} transactions checked ({counts})"
    print(f"{unit} {label} {simulator}: {run.tests} cocotb tests, {total} transactions checked, "
          f"{run.seconds:.1f} s")
    return total


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("name", ("tiny", "odd", "default"))
def test_score_unit_bench(name, simulator, tmp_path):
    """Directed, random and (default preset) MiniLM heads, stalls on and off, whole output
    (tiny and odd: one block per cycle; default: int_lanes 16, two passes per block)."""
    _run("score_unit", name, simulator, "sim.benches.bench_score", tmp_path,
         min_transactions=500)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_score_unit_bench_int_lanes(simulator, tmp_path):
    """Several passes per block with a partly used last pass: the odd preset (d = 5) with
    int_lanes = 2 (passes of 2, 2 and 1 products); the default preset covers 2 full passes."""
    cfg = preset("odd").replace(int_lanes=2)
    _run("score_unit", "odd_lanes2", simulator, "sim.benches.bench_score", tmp_path, cfg,
         min_transactions=500)


def test_score_unit_bench_sum_criterion(tmp_path):
    """The signed-sum criterion (the presets cover max and abs_sum); Icarus only, to keep the
    Verilator build count down (the criterion changes no stream handling)."""
    cfg = preset("tiny").replace(criterion="sum")
    _run("score_unit", "tiny_sum", "icarus", "sim.benches.bench_score", tmp_path,
         cfg, min_transactions=500)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_head_detector_bench(simulator, tmp_path):
    """H around tau_head, pruning on and off, random H, stalls on and off (default preset: the
    widest H)."""
    _run("head_detector", "default", simulator, "sim.benches.bench_head_detector", tmp_path,
         min_transactions=100)


def test_score_unit_bench_catches_narrow_accumulator(tmp_path):
    """The bench fails, naming the first differing beat, on a unit whose A accumulator is one
    bit too narrow (Icarus, tiny preset)."""
    runner = pytest.importorskip("sim.runner", reason="sim.runner (sim-infra) not in this checkout")
    if runner.simulator_missing("icarus"):
        pytest.skip(runner.simulator_missing("icarus"))
    from hw.score_unit import ScoreUnit

    class NarrowAccScoreUnit(ScoreUnit):
        @property
        def acc_width(self) -> int:
            return self.cfg.a_width - 1

    cfg = preset("tiny")
    with pytest.raises(AssertionError, match=r"case=extreme_min_words: blk_out beat 0 differs"):
        runner.run_cocotb(unit=NarrowAccScoreUnit(cfg), name="score_unit", cfg=cfg,
                          test_module="sim.benches.bench_score", simulator="icarus",
                          build_dir=tmp_path / "narrow")
