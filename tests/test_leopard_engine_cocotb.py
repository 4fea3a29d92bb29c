"""cocotb bench of the LeOPArd engine on Icarus and Verilator (whole record set against golden,
random stalls, stream monitors on every stream).  The engine is not in ``hw.units`` yet (the
top does not instantiate it), so the bench exports the component instance."""

import re

import pytest

from hw.leopard_engine import LeopardEngine
from hw.presets import preset
from tests.conftest import require_simulator

pytestmark = pytest.mark.cocotb


def _run(cfg, lanes, label, simulator, build_dir, min_transactions):
    from sim.runner import run_cocotb
    run = run_cocotb(unit=LeopardEngine(cfg, lanes=lanes), name="leopard_engine", cfg=cfg,
                     test_module="sim.benches.bench_leopard", simulator=simulator,
                     build_dir=build_dir / label)
    log = run.log.read_text(errors="replace")
    total = sum(int(n) for n in re.findall(r"TRANSACTIONS leopard (\d+)", log))
    assert total >= min_transactions, f"only {total} transactions checked"
    print(f"leopard_engine {label} {simulator}: {run.tests} cocotb tests, {total} transactions, "
          f"{run.seconds:.1f} s")
    return log


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_leopard_bench_tiny(simulator, build_dir):
    """tiny preset (B = 8, d = 4, N = 8), 3 lanes: directed, random, stalls on and off."""
    require_simulator(simulator)
    _run(preset("tiny"), 3, "tiny", simulator, build_dir, min_transactions=2000)


def test_leopard_bench_minilm(build_dir):
    """default preset (d = 32), 4 lanes, on Icarus: a real MiniLM head with and without early
    termination (the early-terminating run takes fewer cycles), plus the directed and random
    cases at length <= 8."""
    require_simulator("icarus")
    log = _run(preset("default"), 4, "default", "icarus", build_dir, min_transactions=2000)
    assert "CYCLES leopard" in log


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_leopard_bench_catches_positive_sign_bit(build_dir):
    """The bench fails, naming the first wrong entry, on an engine that weighs k's sign bit
    +2**(B-1) (Icarus, tiny preset)."""
    require_simulator("icarus")
    from sim.runner import run_cocotb

    class PositiveSignBit(LeopardEngine):
        def bit_increment(self, gated_sum, step):
            return gated_sum

    cfg = preset("tiny")
    with pytest.raises(AssertionError, match=r"case=extreme_\w+ .*entry \(\d+, \d+\) \(keep, score, "
                                             r"bits\) expected"):
        run_cocotb(unit=PositiveSignBit(cfg, lanes=3), name="leopard_engine", cfg=cfg,
                   test_module="sim.benches.bench_leopard", simulator="icarus",
                   build_dir=build_dir / "broken", testcase="directed_cases/stall=0.0")
