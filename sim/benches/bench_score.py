"""cocotb bench of :class:`hw.score_unit.ScoreUnit` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_score_cocotb.py``).  The configuration
comes from the exported JSON (:func:`sim.cocotb_env.load_config`); stimulus and expected beats
come from :mod:`sim.vectors.score`, the same generator the Amaranth-simulator tests use.  Every
case streams its heads' K and Q rows and compares the whole ``blk_out`` and ``h_out`` streams
against golden; the first mismatch names configuration, seed, case, beat, expected and actual.
Stream monitors (started by the sources and sinks) fail the test on any handshake-rule
violation.  The number of transactions checked is logged as ``TRANSACTIONS score <n>``.

Environment (optional): ``SCORE_SEED`` (default 1).
"""

import os

import cocotb
from cocotb.triggers import RisingEdge

from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import score as vec


def _seed() -> int:
    return int(os.environ.get("SCORE_SEED", "1"))


async def _run(dut, cases: list[vec.ScoreCase], seed: int, stall: float) -> int:
    """Stream every case through the unit and compare; returns the output beats checked."""
    cfg = load_config()
    clock = start_clock(dut)
    await reset(dut, clock)
    k_src = StreamSource(dut, "k_in", clock, stall=stall, seed=seed)
    q_src = StreamSource(dut, "q_in", clock, stall=stall, seed=seed + 1)
    blk_sink = StreamSink(dut, "blk_out", clock, stall=stall, seed=seed + 2)
    h_sink = StreamSink(dut, "h_out", clock, stall=stall, seed=seed + 3)
    checked = 0
    for case in cases:
        # run-time ports are stable during a case: the previous case has fully finished
        dut.valid_len.value = case.valid_len
        dut.causal.value = int(case.causal)
        k_rows = [vec.pack_row(cfg, r) for head in case.heads for r in head.k_q]
        q_rows = [vec.pack_row(cfg, r) for head in case.heads for r in head.q_q]
        k_task = cocotb.start_soon(k_src.send_many(k_rows))
        q_task = cocotb.start_soon(q_src.send_many(q_rows))
        h_task = cocotb.start_soon(h_sink.recv_many(len(case.heads)))
        blk = await blk_sink.recv_many(case.n_blocks)
        h = await h_task
        await k_task
        await q_task
        msg = vec.first_mismatch(cfg, seed, case, [int(b) for b in blk], [int(x) for x in h])
        assert msg is None, msg
        checked += len(blk) + len(h)
    for _ in range(8):
        await RisingEdge(dut.clk)
        assert not int(dut.blk_out__valid.value), "extra blk_out beat after the last case"
        assert not int(dut.h_out__valid.value), "extra h_out beat after the last case"
    n_in = sum(2 * c.valid_len * len(c.heads) for c in cases)
    dut._log.info(f"TRANSACTIONS score {checked + n_in} ({checked} output beats checked, "
                  f"{n_in} input rows; {len(cases)} cases, stall={stall}, seed={seed})")
    return checked


def _small(cfg) -> bool:
    return cfg.seq_len > 32


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def directed_cases(dut, stall: float):
    """All scores equal, zeros, extremes (all q = k = -2^(B-1), max positive, mixed signs,
    random signs), valid_len = 1, full, ragged and small, causal on and off."""
    cfg = load_config()
    cases = vec.directed_cases(cfg, _seed(), small=_small(cfg))
    await _run(dut, cases, seed=_seed(), stall=stall)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def random_heads(dut, stall: float):
    """Seeded random heads (random valid_len and causal; L <= 24 for the default preset)."""
    cfg = load_config()
    seed = _seed()
    max_len = 24 if _small(cfg) else None
    cases = [vec.random_case(cfg, seed * 100 + i, n_heads=2, max_len=max_len) for i in range(3)]
    await _run(dut, cases, seed=seed, stall=stall)


@cocotb.test()
async def minilm_heads(dut):
    """Real all-MiniLM-L6-v2 Q/K (bundled capture) when the configuration fits it."""
    cfg = load_config()
    case = vec.fixture_case(cfg, "long", heads=(0, 37))
    if case is None:
        dut._log.info("minilm_heads not applicable (fixture missing or head_dim/seq_len differ)")
        return
    await _run(dut, [case], seed=0, stall=0.2)
