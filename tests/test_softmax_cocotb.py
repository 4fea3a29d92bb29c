"""SoftmaxUnit in cocotb on Icarus and Verilator (bench: sim/benches/bench_softmax.py).

One build per (preset, simulator); every cocotb test of the bench (directed cases, seeded random
rows, MiniLM rows on the default preset; stalls off and on) runs inside it and compares the whole
output with golden.  The ``simulator`` and ``build_dir`` fixtures come from ``tests/conftest.py``.
"""

import pytest

from hw.presets import preset
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_softmax_bench(name, simulator, build_dir):
    res = run_cocotb(unit="softmax_unit", cfg=preset(name), test_module="sim.benches.bench_softmax",
                     simulator=simulator, build_dir=build_dir)
    # directed, random and MiniLM (default preset only), each with stalls off and on
    assert res.tests >= 4
