"""SoftmaxUnit in cocotb on Icarus and Verilator (bench: sim/benches/bench_softmax.py).

One build per (preset, simulator); every cocotb test of the bench (directed cases, seeded random
rows, MiniLM rows on the default preset; stalls off and on) runs inside it and compares the whole
output with golden.  The ``simulator`` and ``build_dir`` fixtures come from ``tests/conftest.py``.
"""

import pytest

from hw.presets import preset
from hw.softmax_unit import SoftmaxUnit
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_softmax_bench(name, simulator, build_dir):
    res = run_cocotb(unit="softmax_unit", cfg=preset(name), test_module="sim.benches.bench_softmax",
                     simulator=simulator, build_dir=build_dir)
    # directed, random and MiniLM (default preset only), each with stalls off and on
    assert res.tests >= 4


@pytest.mark.parametrize("simulator", ["verilator"], indirect=True)
@pytest.mark.parametrize("name,changes", [("large", {}), ("default", {"prob_frac": 16})],
                         ids=["large", "default-prob16"])
def test_softmax_bench_wide_probabilities(name, changes, simulator, build_dir):
    """The probability widths beyond the default preset's, bit-exact against golden: ``large``
    (N = 512, P = 12: a 24-bit reciprocal, 12 divider steps, a 17 x 24 normalise product) and
    the widest legal P = 16 at N = 128 (a 26-bit reciprocal, 13 steps)."""
    cfg = preset(name).replace(**changes)
    label = "_".join([name] + [f"{k}{v}" for k, v in changes.items()])
    res = run_cocotb(unit=SoftmaxUnit(cfg), name=f"softmax_{label}", cfg=cfg,
                     test_module="sim.benches.bench_softmax", simulator=simulator,
                     build_dir=build_dir)
    assert res.tests >= 4


class _TruncatingSoftmax(SoftmaxUnit):
    """Deliberately broken: truncates p instead of rounding half up."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._round_bias = 0


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_softmax_bench_catches_broken_variant(simulator, build_dir):
    """The same bench on a broken unit fails, and its message names the first mismatch."""
    cfg = preset("tiny")
    with pytest.raises(AssertionError, match=r"softmax mismatch: config=.* row=\d+ index=\d+: expected"):
        run_cocotb(unit=_TruncatingSoftmax(cfg), name="softmax_truncating", cfg=cfg,
                   test_module="sim.benches.bench_softmax", simulator=simulator, build_dir=build_dir)
