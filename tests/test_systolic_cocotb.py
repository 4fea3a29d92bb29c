"""SystolicArray in cocotb on Icarus and Verilator (bench: sim/benches/bench_array.py).

One build per (preset, simulator); the bench's tests (random heads with stalls off and on,
measured cycles against the cycle model) run inside it.
"""

import pytest

from hw.presets import preset
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_array_bench(name, simulator, build_dir):
    res = run_cocotb(unit="systolic_array", cfg=preset(name), test_module="sim.benches.bench_array",
                     simulator=simulator, build_dir=build_dir)
    assert res.tests >= 3

