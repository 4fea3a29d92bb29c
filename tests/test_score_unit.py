"""ScoreUnit in Amaranth's simulator, whole output against golden (sim/vectors/score.py).

``int_lanes`` (products per cycle of each dot product) is covered at ``head_dim`` (one block
per cycle), at a divisor of ``head_dim`` and at non-divisors (the last pass part empty)."""

import gc
import random
import time

import pytest
from amaranth.hdl import Fragment, Value
from amaranth.sim import Simulator

from hw.config import DSP_OPERAND_BITS
from hw.presets import preset
from hw.score_unit import (
    PIPELINE_DEPTH,
    ScoreUnit,
    block_cycles,
    pack_shift,
    pipeline_depth,
)
from sim.amaranth_streams import StreamChecker
from sim.vectors import score as vec

PRESETS = ("tiny", "odd", "default")


def run_unit(dut: ScoreUnit, cases: list[vec.ScoreCase], *, stall_in: float = 0.0,
             stall_out: float = 0.0, seed: int = 0) -> dict:
    """Stream every case through ``dut`` in one simulation.

    K and Q sources insert idle cycles with probability ``stall_in``; ``blk_out`` and ``h_out``
    sinks drop ready with probability ``stall_out``.  The run-time ports of a case are set only
    after the previous case's last ``h_out`` (they must be stable during a head).

    Returns per case the ``blk_out`` beats and ``h_out`` values, and the cycle numbers (cycle 0
    is the first clock edge) of every ``k_in`` / ``q_in`` accept and output handshake, plus any
    stream-rule violations seen by the sinks."""
    cfg = dut.cfg
    heads = [(ci, h) for ci, c in enumerate(cases) for h in c.heads]
    n_blk = sum(c.n_blocks for c in cases)
    st = {"h_done": 0, "blk": [], "h": [], "t_k": [], "t_q": [], "t_blk": [], "t_h": [],
          "violations": []}
    first_head = [sum(len(c.heads) for c in cases[:ci]) for ci in range(len(cases))]
    case_of_head = [ci for ci, _ in heads]
    limit = 50 * (sum(c.valid_len * 2 for c in cases for _ in c.heads) + n_blk + 100)

    def source(port, rows_of, key, rng_seed):
        rng = random.Random(rng_seed)

        async def bench(ctx):
            cycle = 0
            for hi, (ci, head) in enumerate(heads):
                # wait until every head of the earlier cases has finished (ports stay stable)
                while st["h_done"] < first_head[ci]:
                    await ctx.tick()
                    cycle += 1
                if key == "t_k":
                    ctx.set(dut.valid_len, cases[ci].valid_len)
                    ctx.set(dut.causal, cases[ci].causal)
                else:
                    # the Q source of a case waits for the K source to set its ports
                    while len(st["t_k"]) == 0 or case_of_head[st["k_head"]] != ci:
                        await ctx.tick()
                        cycle += 1
                rows = rows_of(head)
                i, valid = 0, False
                while i < len(rows):
                    # idle cycles only before a beat is offered: an offer stays until taken
                    valid = valid or rng.random() >= stall_in
                    ctx.set(port.valid, valid)
                    if valid:
                        ctx.set(Value.cast(port.payload), vec.pack_row(cfg, rows[i]))
                    _, _, ready = await ctx.tick().sample(port.ready)
                    if valid and ready:
                        st[key].append(cycle)
                        if key == "t_k":
                            st["k_head"] = hi
                        i += 1
                        valid = False
                    cycle += 1
                ctx.set(port.valid, 0)
        return bench

    def sink(port, key, t_key, count, rng_seed, on_beat=None):
        rng = random.Random(rng_seed)

        async def bench(ctx):
            cycle, held = 0, None
            while len(st[key]) < count and cycle < limit:
                ready = rng.random() >= stall_out
                ctx.set(port.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(port.valid, Value.cast(port.payload))
                if held is not None:
                    if not valid:
                        st["violations"].append(f"{key} cycle {cycle}: valid withdrawn")
                    elif payload != held:
                        st["violations"].append(f"{key} cycle {cycle}: payload changed")
                held = None
                if valid and ready:
                    st[key].append(payload)
                    st[t_key].append(cycle)
                    if on_beat:
                        on_beat()
                elif valid:
                    held = payload
                cycle += 1
            ctx.set(port.ready, 0)
            st[f"{key}_cycles"] = cycle
        return bench

    def h_beat():
        st["h_done"] += 1

    checkers = {name: StreamChecker(getattr(dut, name), name)
                for name in ("k_in", "q_in")}  # the sinks check the outputs
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for checker in checkers.values():
        sim.add_testbench(checker.testbench, background=True)
    sim.add_testbench(source(dut.k_in, lambda h: h.k_q, "t_k", seed), background=True)
    sim.add_testbench(source(dut.q_in, lambda h: h.q_q, "t_q", seed + 1), background=True)
    sim.add_testbench(sink(dut.blk_out, "blk", "t_blk", n_blk, seed + 2))
    sim.add_testbench(sink(dut.h_out, "h", "t_h", len(heads), seed + 3, h_beat))
    sim.run()
    # split the outputs per case
    out, bi, hi = [], 0, 0
    for c in cases:
        nb = c.n_blocks
        out.append((st["blk"][bi:bi + nb], st["h"][hi:hi + len(c.heads)]))
        bi += nb
        hi += len(c.heads)
    st["per_case"] = out
    st["transfers"] = {name: c.count for name, c in checkers.items()}
    return st


def check_whole(cfg, cases, res, seed, label):
    """Every output beat compared; the first mismatch names config, seed, index, expected, actual."""
    assert not res["violations"], f"{label}: stream rule broken: {res['violations'][:3]}"
    rows = sum(c.valid_len * len(c.heads) for c in cases)
    assert res["transfers"]["k_in"] == rows and res["transfers"]["q_in"] == rows, \
        f"{label}: {res['transfers']} transfers for {rows} K and Q rows"
    for case, (blk, h) in zip(cases, res["per_case"]):
        msg = vec.first_mismatch(cfg, seed, case, blk, h)
        assert msg is None, f"{label}: {msg}"


def _run_and_check(cfg, cases, seed, label, **kw):
    dut = ScoreUnit(cfg)
    res = run_unit(dut, cases, seed=seed, **kw)
    check_whole(cfg, cases, res, seed, label)
    return res


@pytest.mark.parametrize("name", ("tiny", "odd"))
@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_directed_and_random(name, stall):
    """Directed edge cases (equal scores, extremes, valid_len 1 / full / ragged, causal) and
    seeded random heads, stalls on both sides on and off."""
    cfg = preset(name)
    seed = 11 + PRESETS.index(name)
    cases = vec.standard_cases(cfg, seed, n_random=4, fixture=False)
    _run_and_check(cfg, cases, seed, f"{name}/stall={stall}", stall_in=stall, stall_out=stall)


@pytest.mark.parametrize("criterion", ["abs_sum", "sum", "max"])
def test_each_criterion(criterion):
    """All three importance criteria (an elaboration constant) on the odd preset, with stalls."""
    cfg = preset("odd").replace(criterion=criterion)
    seed = 21
    cases = vec.directed_cases(cfg, seed) + [vec.random_case(cfg, seed, n_heads=2)]
    _run_and_check(cfg, cases, seed, f"odd/{criterion}", stall_in=0.2, stall_out=0.2)


@pytest.mark.parametrize("stall", [0.0, 0.3], ids=["nostall", "stall"])
def test_default_preset(stall):
    """The default preset (d = 32, 2 x 2 blocks): extremes and ragged lengths (L <= 16) and two
    random heads of moderate length."""
    cfg = preset("default")
    seed = 31
    cases = vec.directed_cases(cfg, seed, small=True)
    cases = [c for c in cases if c.name in ("extreme_min_words", "extreme_mixed_signs",
                                            "valid_len_1", "valid_len_ragged_causal",
                                            "all_equal")]
    cases.append(vec.random_case(cfg, seed, n_heads=2, valid_len=21, causal=False))
    _run_and_check(cfg, cases, seed, f"default/stall={stall}", stall_in=stall, stall_out=stall)


def test_extremes_full_length_default():
    """H reaches h_max: q = k = -2^(B-1) over the whole default seq_len (4096 blocks)."""
    cfg = preset("default")
    case = [c for c in vec.directed_cases(cfg, 0) if c.name == "extreme_min_words"][0]
    assert case.heads[0].h == cfg.h_max
    res = _run_and_check(cfg, [case], 0, "default/extreme full")
    # and the full-length rate: L + passes * blocks + 10 cycles (128 + 2 * 4096 + 10)
    assert block_cycles(cfg) == 2 and pipeline_depth(cfg) == PIPELINE_DEPTH + 1
    assert res["t_h"][0] - res["t_k"][0] + 1 == 128 + 2 * 64 * 64 + 10


# (preset, int_lanes): head_dim itself (one block per cycle, as before the knob), divisors of
# head_dim and non-divisors (the last pass only partly used: odd d = 5 in passes of 2, 2, 1;
# default d = 32 in 7 passes of 5 multipliers, the last one of 2)
LANES = [("tiny", 4), ("tiny", 2), ("tiny", 1), ("odd", 2), ("odd", 3), ("default", 32),
         ("default", 16), ("default", 8), ("default", 5)]


@pytest.mark.parametrize("name,lanes", LANES, ids=[f"{n}-lanes{w}" for n, w in LANES])
def test_int_lanes_stalls(name, lanes):
    """Whole outputs bit-exact against golden for each lane count, random stalls on the
    inputs and outputs; directed extremes (the widest A), ragged and causal lengths."""
    cfg = preset(name).replace(int_lanes=lanes)
    seed = 70 + lanes
    cases = vec.directed_cases(cfg, seed, small=True)
    keep = ("extreme_min_words", "extreme_mixed_signs", "valid_len_1", "valid_len_ragged_causal",
            "all_equal")
    cases = [c for c in cases if c.name in keep]
    max_len = 12 if name == "default" else None
    cases.append(vec.random_case(cfg, seed, n_heads=2, max_len=max_len))
    _run_and_check(cfg, cases, seed, f"{name}/int_lanes={lanes}", stall_in=0.3, stall_out=0.3)


# packing two key columns per multiplier: where it applies (pairs, and an odd last column
# alone) and where it does not (one column; an operand too wide for one DSP)
PACKING = [("tiny", {"block_cols": 3}), ("tiny", {"block_cols": 1}),
           ("odd", {"block_cols": 3, "int_lanes": 2}),
           ("tiny", {"qk_bits": 12, "qk_frac": 4, "int_lanes": 2})]


def test_pack_shift():
    """S = a_width where the packed operand (qk_int_bits + S + 1 bits) fits one MULT18X18D."""
    d = preset("default")
    assert pack_shift(d) == d.a_width == 13 and d.qk_int_bits + 13 + 1 == DSP_OPERAND_BITS
    assert pack_shift(preset("large")) is None           # A is 14 bits: a 19-bit operand
    assert pack_shift(d.replace(block_cols=1)) is None
    assert pack_shift(d, acc_width=12) == 12
    assert pack_shift(preset("tiny").replace(qk_bits=12, qk_frac=4)) is None


@pytest.mark.parametrize("name,changes", PACKING,
                         ids=["pair+single", "one-column", "odd-pair+single", "too-wide"])
def test_packing_layouts(name, changes):
    """Whole outputs bit-exact against golden, stalls on both sides, for each way the key
    columns are grouped into multipliers (the presets cover pairs alone)."""
    cfg = preset(name).replace(**changes)
    seed = 90 + PACKING.index((name, changes))
    cases = [c for c in vec.directed_cases(cfg, seed, small=True)
             if c.name in ("extreme_min_words", "extreme_mixed_signs", "valid_len_ragged_causal")]
    cases.append(vec.random_case(cfg, seed, n_heads=2))
    _run_and_check(cfg, cases, seed, f"{name}/{changes}", stall_in=0.3, stall_out=0.3)


def test_int_lanes_used_and_passes():
    """Passes and multipliers per dot product: ceil(d / int_lanes) passes, then as few lanes
    as give that many passes; int_lanes >= head_dim is one pass."""
    d32 = preset("default")
    got = {w: (block_cycles(d32.replace(int_lanes=w)), d32.replace(int_lanes=w).int_lanes_used)
           for w in (1, 5, 8, 12, 16, 31, 32, 33, 1024)}
    assert got == {1: (32, 1), 5: (7, 5), 8: (4, 8), 12: (3, 11), 16: (2, 16), 31: (2, 16),
                   32: (1, 32), 33: (1, 32), 1024: (1, 32)}
    assert block_cycles(preset("tiny")) == block_cycles(preset("odd")) == 1


def test_minilm_fixture():
    """Real all-MiniLM-L6-v2 Q/K (bundled capture, 30 tokens), three heads, causal and not."""
    cfg = preset("default")
    cases = [vec.fixture_case(cfg, "long", heads=(0, 37, 71)),
             vec.fixture_case(cfg, "padded", heads=(5,), causal=True)]
    if any(c is None for c in cases):
        pytest.skip("MiniLM fixture (sim.fixtures / tests/data) not in this checkout")
    _run_and_check(cfg, cases, 0, "default/minilm", stall_in=0.1, stall_out=0.1)


THROUGHPUT = [("tiny", 16, 8), ("odd", 16, 13), ("default", 32, 64), ("default", 16, 64),
              ("odd", 2, 13), ("default", 5, 24)]


@pytest.mark.parametrize("name,lanes,n", THROUGHPUT,
                         ids=[f"{a}-lanes{w}-L{n}" for a, w, n in THROUGHPUT])
def test_throughput_and_latency(name, lanes, n):
    """No stalls: one block every P = block_cycles(cfg) cycles; cycles per head against the
    ideal P * ceil(L/b_r) * ceil(L/b_c) + L K rows, and the fixed latencies (first issue 1
    cycle after the last K row, blk_out pipeline_depth(cfg) + 2 after a block's last pass:
    PIPELINE_DEPTH + 2 = 10 with one pass, 11 with several)."""
    cfg = preset(name).replace(int_lanes=lanes)
    p, depth = block_cycles(cfg), pipeline_depth(cfg)
    assert depth == PIPELINE_DEPTH + (p > 1)
    case = vec.random_case(cfg, 5, n_heads=2, valid_len=n, causal=False)
    dut = ScoreUnit(cfg)
    res = run_unit(dut, [case], seed=5)
    check_whole(cfg, [case], res, 5, f"{name}/int_lanes={lanes}/throughput")
    nb = case.heads[0].n_blocks
    # head 0: first k_in accept to its h_out; head 1 starts the cycle after head 0's h_out
    t0 = res["t_k"][0]
    head_cycles = res["t_h"][0] - t0 + 1
    ideal = n + p * nb
    assert head_cycles == ideal + depth + 1, \
        f"{name}: {head_cycles} cycles per head, ideal {ideal}"
    # steady state: the blocks of a head leave every P cycles
    t_blk = res["t_blk"][:nb]
    assert t_blk == list(range(t_blk[0], t_blk[0] + p * nb, p)), \
        f"{name}: blk_out not 1 per {p} cycles"
    # first block: issued 1 cycle after the last K row, on blk_out depth + 2 cycles after its
    # last pass
    first_lat = t_blk[0] - res["t_k"][n - 1]
    assert first_lat == 1 + (p - 1) + depth + 2, \
        f"{name}: last k_in -> first blk_out {first_lat} cycles"
    assert res["t_k"][n] == res["t_h"][0] + 1, "next head's K not accepted right after h_out"
    print(f"{name} int_lanes={lanes} (P={p}): L={n} blocks={nb} cycles/head={head_cycles} "
          f"ideal={ideal} (efficiency {ideal / head_cycles:.3f})")


class NarrowAccScoreUnit(ScoreUnit):
    """Deliberately broken: the A accumulator one bit narrower than ``cfg.a_width``."""

    @property
    def acc_width(self) -> int:
        return self.cfg.a_width - 1


@pytest.mark.parametrize("lanes", [5, 2], ids=["lanes5", "lanes2"])
def test_broken_variant_fails(lanes):
    """One bit too narrow wraps the extreme A (in one pass, or accumulated over three): the
    golden comparison must fail, and report it, while the correct unit passes the same
    vectors."""
    cfg = preset("odd").replace(int_lanes=lanes)
    case = [c for c in vec.directed_cases(cfg, 0) if c.name == "extreme_min_words"][0]
    _run_and_check(cfg, [case], 0, "good unit")
    res = run_unit(NarrowAccScoreUnit(cfg), [case], seed=0)
    with pytest.raises(AssertionError, match=r"seed=0 case=extreme_min_words: blk_out beat 0"):
        check_whole(cfg, [case], res, 0, "narrow A")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_checks():
    with pytest.raises(TypeError, match="cfg must be an HDPConfig, not 3"):
        ScoreUnit(3)
    gc.collect()  # the half-built object warns when collected: inside this test's filter
    Fragment.get(ScoreUnit(preset("tiny")), None)


def test_runtime_budget():
    """Guard: the tiny preset's full directed set simulates in well under a few seconds."""
    cfg = preset("tiny")
    t = time.monotonic()
    _run_and_check(cfg, vec.directed_cases(cfg, 0), 0, "tiny/budget")
    assert time.monotonic() - t < 20


@pytest.mark.parametrize("lanes", [5, 2], ids=["lanes5", "lanes2"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (4, 1), (3, 5), (7, 7)],
                         ids=lambda s: f"b{s[0]}x{s[1]}")
def test_block_shapes(shape, lanes):
    """Block shapes from 1 x 1 to one block covering the whole matrix (7 x 7 on seq_len 7),
    including shapes where Q loading, not the block rate, bounds the throughput; one pass
    and three passes per block."""
    cfg = preset("odd").replace(seq_len=7, block_rows=shape[0], block_cols=shape[1], k_frac=1 / 256,
                                int_lanes=lanes)
    seed = 50 + shape[0] * 10 + shape[1]
    cases = [c for c in vec.directed_cases(cfg, seed) if c.name.startswith(("extreme", "valid"))]
    cases.append(vec.random_case(cfg, seed, n_heads=3))
    _run_and_check(cfg, cases, seed, f"odd seq_len=7 blocks={shape}", stall_in=0.2, stall_out=0.2)


@pytest.mark.parametrize("fmt", [(8, 0), (8, 7), (2, 1), (16, 4)], ids=lambda f: f"B{f[0]}F{f[1]}")
def test_number_formats(fmt):
    """F = 0 (whole word is integer), F = B - 1 (1-bit integer part), B = 2, B = 16; d = 1."""
    cfg = preset("tiny").replace(qk_bits=fmt[0], qk_frac=fmt[1], head_dim=1 if fmt[0] == 2 else 3)
    seed = 60 + fmt[0] + fmt[1]
    cases = vec.directed_cases(cfg, seed) + [vec.random_case(cfg, seed, n_heads=2)]
    _run_and_check(cfg, cases, seed, f"tiny B={fmt[0]} F={fmt[1]}", stall_in=0.2, stall_out=0.2)
