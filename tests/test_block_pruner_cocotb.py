"""BlockPruner in cocotb on Icarus and Verilator (bench: sim/benches/bench_pruner.py).

One build per (preset, simulator); every cocotb test of the bench (directed cases, seeded random
heads, MiniLM heads on the default preset, each with stalls off and on, and the no-stall
throughput check) runs inside it and compares the whole output with golden.  The ``simulator``
and ``build_dir`` fixtures come from ``tests/conftest.py``.
"""

import json

import pytest
from amaranth.hdl import Cat, Const

from hw.block_pruner import BlockPruner
from hw.presets import preset
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_pruner_bench(name, simulator, build_dir):
    res = run_cocotb(unit="block_pruner", cfg=preset(name), test_module="sim.benches.bench_pruner",
                     simulator=simulator, build_dir=build_dir)
    # directed and random (stalls off and on), throughput; MiniLM on the default preset
    assert res.tests >= (7 if name == "default" else 5)
    counts = json.loads((build_dir / f"block_pruner-{simulator}" / "pruner_counts.json").read_text())
    assert counts["throughput_no_stalls"]["refused"] == 0
    assert all(c["mask_out"] > 0 for c in counts.values())
    print(f"{name}/{simulator}: {res.seconds:.1f} s, transactions "
          f"{ {k: (c['imp_in'], c['mask_out']) for k, c in counts.items()} }")


class _TiesToHigherIndex(BlockPruner):
    """Deliberately broken: among equal importances the higher column wins."""

    def _ranks_ahead(self, u_other, u_item, lower):
        return Cat(~lower, u_other) > Cat(Const(0, 1), u_item)


@pytest.mark.parametrize("simulator", ["verilator"], indirect=True)
def test_pruner_bench_catches_broken_variant(simulator, build_dir):
    """The same bench on a broken unit fails, and its message names the first mismatch."""
    cfg = preset("tiny")
    with pytest.raises(AssertionError, match=r"config .* case \w+ seed \d+: first mismatch at "
                                             r"mask beat \d+ .*expected .* actual"):
        run_cocotb(unit=_TiesToHigherIndex(cfg), name="block_pruner_ties_high", cfg=cfg,
                   test_module="sim.benches.bench_pruner", simulator=simulator,
                   build_dir=build_dir, test_filter="directed_cases")
