"""cocotb bench of :class:`hw.softmax_unit.SoftmaxUnit` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_softmax_cocotb.py``).  The configuration
comes from the exported JSON (:func:`sim.cocotb_env.load_config`); stimulus and expected
probabilities come from :mod:`sim.vectors.softmax`, the same generator the Amaranth-simulator
tests use.  Every test streams whole rows into ``s_in`` and compares the whole ``p_out`` stream
against golden; the first mismatch names configuration, seed, set, row, index, expected and
actual.  Stream monitors (started by the sources and sinks) fail the test on any handshake-rule
violation.

Environment (optional): ``HDPGEN_SEED`` (base seed of stalls and random rows, default 1),
``SOFTMAX_SEEDS`` (comma-separated random-row seeds, default the base seed and the next).
"""

import cocotb
from cocotb.triggers import RisingEdge

from sim import cocotb_env
from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import softmax as vec

STALL_ON = 0.4


def _label(cfg) -> str:
    return (f"HDPConfig(seq_len={cfg.seq_len}, head_dim={cfg.head_dim}, "
            f"score_width={cfg.score_width}, exp_bits={cfg.exp_bits}, exp_frac={cfg.exp_frac}, "
            f"prob_frac={cfg.prob_frac})")


def _seeds() -> list[int]:
    base = cocotb_env.seed()
    return [int(s) for s in cocotb_env.env_str("SOFTMAX_SEEDS", f"{base},{base + 1}").split(",")
            if s.strip()]


def _directed(cfg) -> vec.SoftmaxVectors:
    """Every directed case for short rows; for long rows (the default preset's 128) the cases
    whose rows stay few."""
    cases = vec.DIRECTED_CASES if cfg.seq_len <= 32 else (
        "none_kept", "length_one", "full_length", "ties_max", "all_pruned_but_one", "delta_boundary")
    return vec.merge("directed", [vec.directed_vectors(cfg, c, seed=0) for c in cases])


class TB:
    """Clock, reset, a source on ``s_in`` and a sink on ``p_out`` (both with monitors)."""

    def __init__(self, dut, stall: float, seed: int):
        self.dut = dut
        self.cfg = load_config()
        self.stall = stall
        self.seed = seed
        self.clock = start_clock(dut)
        self.src = StreamSource(dut, "s_in", self.clock, stall=stall, seed=seed)
        self.sink = StreamSink(dut, "p_out", self.clock, stall=stall, seed=seed + 1)

    async def start(self) -> "TB":
        await reset(self.dut, self.clock)
        return self

    async def check(self, v: vec.SoftmaxVectors, seed: int) -> int:
        """Stream ``v`` through the unit and compare the whole output; returns beats checked."""
        beats = [vec.pack_in(self.cfg, b) for b in v.in_beats()]
        sender = cocotb.start_soon(self.src.send_many(beats))
        raw = await self.sink.recv_many(len(beats))
        await sender
        actual = [vec.unpack_out(self.cfg, b) for b in raw]
        msg = vec.first_mismatch(_label(self.cfg), seed, v, actual)
        assert msg is None, msg
        for _ in range(8):
            await RisingEdge(self.clock.signal)
        assert self.sink.empty(), f"{v.name}: p_out beats beyond the {len(beats)} expected"
        self.dut._log.info(f"softmax {v.name}: {v.n_rows} rows, {len(beats)} beats checked "
                           f"(stall={self.stall}, seed={seed}; monitor counts "
                           f"s_in={self.src.monitor.count}, p_out={self.sink.monitor.count})")
        return len(beats)


def _fixture_reason() -> str | None:
    try:
        return vec.fixture_available(load_config())
    except RuntimeError as exc:  # not run through sim.runner: the tests themselves will say so
        return str(exc)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def directed_cases(dut, stall: float):
    """All scores equal, single kept entry, no kept entry, length-1 rows, full rows, extreme
    scores (deltas beyond delta_max), ties for the max, all pruned but one, delta boundaries."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    await tb.check(_directed(tb.cfg), seed=0)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def random_rows(dut, stall: float):
    """Seeded random rows (lengths, keep densities, spreads, sometimes the full score range)."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    n_rows = 4 if tb.cfg.seq_len > 32 else 24
    for seed in _seeds():
        await tb.check(vec.random_vectors(tb.cfg, seed, n_rows=n_rows), seed=seed)


@cocotb.skipif(_fixture_reason() is not None, reason="MiniLM rows need head_dim 32 and the fixture")
@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def minilm_rows(dut, stall: float):
    """Real scores: the golden model's rows on the all-MiniLM-L6-v2 fixture (head_dim 32 only)."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    await tb.check(vec.fixture_vectors(tb.cfg, heads=(3, 40)), seed=40)
