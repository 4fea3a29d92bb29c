"""cocotb bench of :class:`hw.leopard_engine.LeopardEngine` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_leopard_engine_cocotb.py``).  The
configuration comes from the exported JSON (:func:`sim.cocotb_env.load_config`); stimulus and
expected records come from :mod:`sim.vectors.leopard`, the generator the Amaranth-simulator
tests use.  Every case streams its K rows, then its Q rows with their thresholds, and compares
the whole ``res_out`` record set against :func:`golden.leopard.front_end` (every valid entry
exactly once, rows in order); the first mismatch names configuration, seed, case, entry,
expected and actual.  Stream monitors (started by the sources and sinks) fail the test on any
handshake-rule violation.  The number of transactions checked is logged as
``TRANSACTIONS leopard <n>``.

Environment (optional): ``HDPGEN_SEED`` (default 1).
"""

import cocotb
from cocotb.triggers import RisingEdge

from sim.cocotb_env import load_config, seed
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import leopard as vec


async def _run(dut, cases: list[vec.LeopardCase], seed: int, stall: float) -> list[int]:
    """Stream every case through the engine and compare; returns the engine's ``cycles`` of
    every case."""
    cfg = load_config()
    clock = start_clock(dut)
    dut.valid_len.value = 1
    dut.causal.value = 0
    dut.no_et.value = 0
    await reset(dut, clock)
    k_src = StreamSource(dut, "k_in", clock, stall=stall, seed=seed)
    q_src = StreamSource(dut, "q_in", clock, stall=stall, seed=seed + 1)
    sink = StreamSink(dut, "res_out", clock, stall=stall, seed=seed + 2)
    cycles = []
    n_checked = 0
    for case in cases:
        # run-time ports are stable during a case: the previous case has fully finished
        dut.valid_len.value = case.valid_len
        dut.causal.value = int(case.causal)
        dut.no_et.value = int(case.no_et)
        k_task = cocotb.start_soon(k_src.send_many(vec.k_beats(cfg, case)))
        q_task = cocotb.start_soon(q_src.send_many(vec.q_beats(cfg, case)))
        recs = await sink.recv_many(vec.n_records(case))
        await k_task
        await q_task
        while not int(dut.done.value):
            await RisingEdge(dut.clk)
        cycles.append(int(dut.cycles.value))
        msg = vec.first_mismatch(cfg, seed, case, [int(r) for r in recs])
        assert msg is None, msg
        n_checked += len(recs)
    for _ in range(2 * cfg.qk_bits + 8):
        await RisingEdge(dut.clk)
    assert sink.empty(), f"extra res_out record after the last case: {sink.recv_nowait():#x}"
    n_in = sum(2 * c.valid_len for c in cases)
    dut._log.info(f"TRANSACTIONS leopard {n_checked + n_in} ({n_checked} records checked, "
                  f"{n_in} input rows; {len(cases)} cases, stall={stall}, seed={seed})")
    return cycles


def _max_len(cfg) -> int | None:
    return 5 if cfg.seq_len > 16 else None


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3])
async def directed_cases(dut, stall: float):
    """Operand extremes at both threshold ends, keep-all / diagonal-only thresholds, ties at
    th, zeros, valid_len 1, causal, no_et, ragged valid_len (with stalls: every third case)."""
    cfg = load_config()
    cases = vec.directed_cases(cfg, seed(), max_len=_max_len(cfg))
    await _run(dut, cases if stall == 0.0 else cases[::3], seed=seed(), stall=stall)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.4])
async def random_heads(dut, stall: float):
    """Seeded random heads (random valid_len, causal, no_et, thresholds near the scores)."""
    cfg = load_config()
    cases = [vec.random_case(cfg, seed() * 100 + n, max_len=_max_len(cfg)) for n in range(6)]
    await _run(dut, cases, seed=seed(), stall=stall)


@cocotb.test()
async def minilm_head(dut):
    """A real all-MiniLM-L6-v2 head (long capture) at logit >= 0, with and without early
    termination, when the configuration fits it; the early-terminating run must be faster."""
    cfg = load_config()
    cases = [vec.fixture_case(cfg, "long", 17, 0.0), vec.fixture_case(cfg, "long", 17, 0.0,
                                                                      no_et=True)]
    if cases[0] is None:
        dut._log.info("minilm_head not applicable (fixture missing or head_dim/seq_len differ)")
        return
    et, full = await _run(dut, cases, seed=0, stall=0.0)
    dut._log.info(f"CYCLES leopard et={et} no_et={full}")
    assert et < full, (et, full)
