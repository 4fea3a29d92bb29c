"""SystolicArray in Amaranth's simulator: score and P x V tiles bit-exact against golden, random
stalls at both stream ends, and measured cycles equal to the scheduler's cycle model."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.presets import preset
from hw.systolic import SystolicArray, array_widths, min_tile_cycles
from sim import cycle_model
from sim.vectors import array as vec


def run_array(dut: SystolicArray, beats: list[int], n_rows: int, *, stall_in: float = 0.0,
              stall_out: float = 0.0, seed: int = 0) -> dict:
    """Feed ``beats`` into op_in, collect ``n_rows`` result beats; cycle 0 is the first clock
    edge; returns outputs, the first accept cycle and the last output cycle."""
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    res = {"out": [], "t_in": [], "t_out": [], "violations": []}
    limit = (len(beats) + 50 * n_rows + 200) * (1 + int(10 * max(stall_in, stall_out)))

    async def source(ctx):
        i, cycle = 0, 0
        while i < len(beats):
            valid = rng_in.random() >= stall_in
            ctx.set(dut.op_in.valid, valid)
            if valid:
                ctx.set(dut.op_in.payload.as_value(), beats[i])
            _, _, ready = await ctx.tick().sample(dut.op_in.ready)
            if valid and ready:
                res["t_in"].append(cycle)
                i += 1
            cycle += 1
        ctx.set(dut.op_in.valid, 0)

    async def sink(ctx):
        cycle, held = 0, None
        while len(res["out"]) < n_rows and cycle < limit:
            ready = rng_out.random() >= stall_out
            ctx.set(dut.res_out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.res_out.valid,
                                                          dut.res_out.payload.as_value())
            if held is not None and (not valid or payload != held):
                res["violations"].append(f"cycle {cycle}: output changed or withdrawn before ready")
            held = None
            if valid and ready:
                res["out"].append(payload)
                res["t_out"].append(cycle)
            elif valid:
                held = payload
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return res


def check(cfg, w: vec.ArrayWorkload, res: dict, label: str) -> None:
    assert not res["violations"], f"{label}: {res['violations'][:3]}"
    got = vec.unpack_results(cfg, res["out"])
    err = vec.compare(got, vec.expected_rows(cfg, w))
    assert err is None, f"{label} config={cfg.to_dict()}: {err}"


def workload(cfg, seed, n=None, **changes):
    cfg = cfg.replace(**changes)
    return cfg, vec.head_workload(cfg, f"seed{seed}", *vec.random_head(cfg, seed, n))


CASES = [
    ("tiny", {}),
    ("tiny", {"approx": "exact"}),
    ("tiny", {"prune_mode": "off"}),
    ("odd", {}),
    ("odd", {"approx": "exact", "causal": False, "prune_mode": "topk", "k_b": 2}),
    ("tiny", {"array_rows": 3, "array_cols": 2, "approx": "exact"}),
    ("tiny", {"array_rows": 1, "array_cols": 4}),
    ("odd", {"qk_frac": 6, "approx": "exact"}),   # F = B - 1: 2^F X alone needs the wider acc
]


@pytest.mark.parametrize("name,changes", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_head_tiles_bit_exact(name, changes, stall):
    """Every issued score and P x V tile of a random pruned head, compared whole."""
    seed = 17 + len(changes)
    cfg, w = workload(preset(name), seed, **changes)
    beats = vec.pack_beats(cfg, w)
    res = run_array(SystolicArray(cfg), beats, len(w.tiles) * cfg.array_rows,
                    stall_in=stall, stall_out=stall, seed=seed)
    check(cfg, w, res, f"{name}{changes} seed={seed} stall={stall}")


def test_extreme_operands():
    """Largest-magnitude operands at every width: full-scale score tiles (q = k = min word,
    q = min / k = max, alternating) and P x V with p = 1.0 everywhere and v = min/max words."""
    for name in ("tiny", "odd"):
        cfg = preset(name).replace(prune_mode="off", approx="exact")
        n, d = cfg.seq_len, cfg.head_dim
        lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1
        f = cfg.qk_frac
        mix = (cfg.qk_int_range[0] << f) + cfg.qk_frac_max    # min integer part, max fraction
        for qv, kv in ((lo, lo), (lo, hi), (hi, hi), (mix, mix), (-1, -1)):
            q = np.full((n, d), qv)
            k = np.full((n, d), kv)
            k[1::2] = lo if kv != lo else hi
            v = np.full((n, d), -(1 << (cfg.v_bits - 1)))
            v[:, 1::2] = (1 << (cfg.v_bits - 1)) - 1
            w = vec.head_workload(cfg, f"extreme{qv},{kv}", q, k, v)
            res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w),
                            len(w.tiles) * cfg.array_rows)
            check(cfg, w, res, f"{name} extremes q={qv} k={kv}")


def test_minilm_fixture_head():
    """A real all-MiniLM-L6-v2 head (the 'padded' capture, valid_len 7 of 12), pruned top-k."""
    from golden.model import quantize_qkv
    from sim.fixtures import fixture_names, load_fixture
    if "padded" not in fixture_names():
        pytest.skip("MiniLM fixture 'padded' not in this checkout")
    fx = load_fixture("padded")
    cfg = preset("default").replace(seq_len=16, k_b=4, array_rows=4, array_cols=4)
    q, k, v = quantize_qkv(fx["q"][40], fx["k"][40], fx["v"][40], cfg)
    w = vec.head_workload(cfg, "minilm_padded_h40", q, k, v, valid_len=fx["valid_len"])
    res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows,
                    stall_in=0.2, stall_out=0.2, seed=5)
    check(cfg, w, res, "minilm padded head 40")


MASK_CASES = ["dense", "topk", "threshold", "one_block_per_row", "pruned_head"]


@pytest.mark.parametrize("kind", MASK_CASES)
def test_cycles_equal_model(kind):
    """Without stalls the measured cycles (first accepted beat to last result row, inclusive)
    equal sim/cycle_model.predict_cycles for the tiles the keep mask issues."""
    base = preset("tiny").replace(seq_len=12, array_rows=2, array_cols=2, k_b=2)
    changes = {"dense": {"prune_mode": "off"}, "topk": {"prune_mode": "topk", "k_b": 2},
               "threshold": {"prune_mode": "threshold", "rho": 0.75},
               "one_block_per_row": {"prune_mode": "topk", "k_b": 1},
               "pruned_head": {"head_prune": True, "tau_head": base.replace(
                   head_prune=True).h_max}}[kind]
    cfg, w = workload(base, 23, **changes)
    depths = [t.depth(cfg) for t in w.tiles]
    predicted = cycle_model.predict_cycles(cfg, depths)
    if kind == "pruned_head":
        assert not w.tiles and predicted == 0
        return
    dut = SystolicArray(cfg)
    res = run_array(dut, vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, kind)
    measured = res["t_out"][-1] - res["t_in"][0] + 1
    assert measured == predicted, f"{kind}: measured {measured}, model {predicted}"
    if kind != "dense":
        dense_cfg, dense_w = workload(base, 23, prune_mode="off")
        assert len(w.tiles) < len(dense_w.tiles), "pruning issued no fewer tiles"


def test_latency_and_back_to_back_tiles():
    """Tiles of depth >= 2R-1 are accepted back to back (one beat per cycle), the first result
    row comes ``latency`` cycles after the last beat, rows every 2 cycles."""
    cfg = preset("default").replace(seq_len=16, k_b=4, array_rows=4, array_cols=4, prune_mode="off")
    cfg, w = workload(cfg, 3)
    dut = SystolicArray(cfg)
    beats = vec.pack_beats(cfg, w)
    res = run_array(dut, beats, len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, "back to back")
    assert all(t.depth(cfg) >= min_tile_cycles(cfg) for t in w.tiles)
    assert res["t_in"] == list(range(len(beats))), "a bubble between tiles"
    first_last = w.beats[0].__len__() - 1
    assert res["t_out"][0] - res["t_in"][first_last] == dut.latency
    assert res["t_out"][1] - res["t_out"][0] == 2


def test_short_tiles_are_padded():
    """P x V tiles shorter than 2R-1 cost 2R-1 cycles (drain rate), still bit-exact."""
    cfg = preset("tiny").replace(array_rows=4, array_cols=2, prune_mode="topk", k_b=1)
    cfg, w = workload(cfg, 8)
    res = run_array(SystolicArray(cfg), vec.pack_beats(cfg, w), len(w.tiles) * cfg.array_rows)
    check(cfg, w, res, "short tiles")
    depths = [t.depth(cfg) for t in w.tiles]
    assert min(depths) < min_tile_cycles(cfg)
    assert res["t_out"][-1] - res["t_in"][0] + 1 == cycle_model.predict_cycles(cfg, depths)


class NarrowAccArray(SystolicArray):
    """Deliberately broken: accumulators one bit narrower than derived."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._widths.acc -= 1


def test_broken_variant_fails():
    """At F = B - 1 the fine pass needs the full accumulator (2^F X reaches -2^F 2d (2^F-1)):
    one bit less wraps and the comparison fails, while the real array passes."""
    cfg = preset("odd").replace(qk_frac=6, prune_mode="off", approx="drop_ff")
    n, d = cfg.seq_len, cfg.head_dim
    q = np.full((n, d), -1)          # q_I = -1, q_F = 2^F - 1
    v = np.full((n, d), -(1 << (cfg.v_bits - 1)))
    w = vec.head_workload(cfg, "extreme", q, q, v, passes=("score",))
    beats = vec.pack_beats(cfg, w)
    good = run_array(SystolicArray(cfg), beats, len(w.tiles) * cfg.array_rows)
    check(cfg, w, good, "good")
    bad = NarrowAccArray(cfg)
    assert bad.widths.acc == array_widths(cfg).acc - 1
    res = run_array(bad, beats, len(w.tiles) * cfg.array_rows)
    with pytest.raises(AssertionError, match="first difference"):
        check(cfg, w, res, "narrow acc")
