"""MassPruner in cocotb on Icarus and Verilator (bench: sim/benches/bench_mass.py).

One build per (preset, simulator); every cocotb test of the bench (directed heads, seeded
random heads, MiniLM heads on the default preset, each with stalls off and on, and the
no-stall latency check) runs inside it and compares the whole output with golden.
"""

import json

import pytest

from hw.presets import preset
from sim.runner import run_cocotb

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("name", ["tiny", "odd", "default"])
def test_mass_bench(name, simulator, build_dir):
    res = run_cocotb(unit="mass_pruner", cfg=preset(name), test_module="sim.benches.bench_mass",
                     simulator=simulator, build_dir=build_dir)
    assert res.tests >= (7 if name == "default" else 5)
    counts = json.loads((build_dir / f"mass_pruner-{simulator}" / "mass_counts.json").read_text())
    assert all(c["mask_out"] > 0 for c in counts.values())
    print(f"{name}/{simulator}: {res.seconds:.1f} s, transactions "
          f"{ {k: (c['blk_in'], c['mask_out']) for k, c in counts.items()} }")


@pytest.mark.parametrize("simulator", ["verilator"], indirect=True)
def test_mass_bench_catches_broken_variant(simulator, build_dir):
    """The same bench on a broken unit (shares truncated, not rounded) fails and names the
    first mismatch."""
    from tests.test_mass_pruner import _FloorShares
    cfg = preset("tiny")
    with pytest.raises(AssertionError, match=r"mass (directed|random seed \d+): head \d+ .* "
                                             r"first mismatch at mask beat \d+: expected .* "
                                             r"actual"):
        run_cocotb(unit=_FloorShares(cfg), name="mass_pruner_floor", cfg=cfg,
                   test_module="sim.benches.bench_mass", simulator=simulator,
                   build_dir=build_dir, test_filter="directed_heads|random_heads")
