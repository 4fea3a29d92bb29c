"""ApproxUnit in cocotb on Icarus and Verilator (bench: sim/benches/bench_approx.py).

One build per (preset, simulator); all cocotb tests of the bench (golden sets with stalls off
and on, throughput/latency, MiniLM entries on the default preset) run inside it.
"""

import pytest

from hw.presets import preset
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_approx_bench(name, simulator, build_dir):
    res = run_cocotb(unit="approx_unit", cfg=preset(name), test_module="sim.benches.bench_approx",
                     simulator=simulator, build_dir=build_dir)
    assert res.tests >= (4 if name == "default" else 3)


def test_broken_variant_fails_in_cocotb(build_dir):
    """The same bench catches a unit whose X register is one bit too narrow (Icarus)."""
    from conftest import require_simulator

    from hw.approx_unit import ApproxUnit
    require_simulator("icarus")
    cfg = preset("odd")

    class NarrowX(ApproxUnit):
        def __init__(self, c):
            super().__init__(c)
            self._x_width = c.x_width - 1

    with pytest.raises(AssertionError, match="first mismatch"):
        run_cocotb(unit=NarrowX(cfg), name="approx_unit", cfg=cfg,
                   test_module="sim.benches.bench_approx", simulator="icarus",
                   build_dir=build_dir)
