"""cocotb bench of :class:`hw.approx_unit.ApproxUnit` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_approx_cocotb.py``).  The configuration
comes from the exported JSON (:func:`sim.cocotb_env.load_config`); stimulus and expected scores
come from :mod:`sim.vectors.approx`, the generator the Amaranth-simulator tests use.  Every test
streams whole sets into ``in_`` and compares the whole ``out`` stream (score and tag) against
golden; the first mismatch names configuration, seed, set, index, expected and actual.  The
stream monitors started by the sources and sinks fail a test on any handshake-rule violation.

Environment (optional): ``HDPGEN_SEED`` (base seed, default 1).
"""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time

from hw.approx_unit import ApproxUnit
from sim import cocotb_env
from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import approx as vec

STALL_ON = 0.4
PERIOD_NS = 10.0


class TB:
    def __init__(self, dut, stall: float, seed: int):
        self.dut = dut
        self.cfg = load_config()
        self.stall = stall
        self.clock = start_clock(dut, PERIOD_NS)
        self.src = StreamSource(dut, "in_", self.clock, stall=stall, seed=seed)
        self.sink = StreamSink(dut, "out", self.clock, stall=stall, seed=seed + 1)

    async def start(self) -> "TB":
        self.dut.exact.value = 0
        await reset(self.dut, self.clock)
        return self

    async def check(self, v: vec.ApproxVectors, seed: int) -> float:
        """Stream ``v`` (with its ``exact`` mode) and compare the whole output; returns the
        cycles from the first beat offered to the last beat received."""
        self.dut.exact.value = v.exact
        beats = vec.pack_in(self.cfg, v)
        t0 = get_sim_time(unit="ns")
        sender = cocotb.start_soon(self.src.send_many(beats))
        raw = await self.sink.recv_many(len(beats))
        await sender
        cycles = (get_sim_time(unit="ns") - t0) / PERIOD_NS
        s, tag = vec.unpack_out(self.cfg, raw)
        bad = np.nonzero((s != v.s) | (tag != v.tag))[0]
        if bad.size:
            i = int(bad[0])
            raise AssertionError(
                f"config={self.cfg.to_dict()} seed={seed} set={v.name}: first mismatch at entry "
                f"{i}: expected s={int(v.s[i])} tag={int(v.tag[i])}, got s={int(s[i])} "
                f"tag={int(tag[i])} ({bad.size} mismatches)")
        for _ in range(4):
            await RisingEdge(self.clock.signal)
        assert self.sink.empty(), f"{v.name}: output beats beyond the {len(beats)} expected"
        self.dut._log.info(f"approx {v.name}: {len(beats)} entries checked in {cycles:.0f} cycles "
                           f"(stall={self.stall}; monitor in_={self.src.monitor.count}, "
                           f"out={self.sink.monitor.count})")
        return cycles


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def golden_sets(dut, stall: float):
    """Directed extremes, seeded random entries and a pruned head's kept entries, both modes."""
    seed = cocotb_env.seed()
    tb = await TB(dut, stall, seed).start()
    for v in vec.vector_sets(tb.cfg, seed, n_random=200):
        await tb.check(v, seed)


@cocotb.test()
async def throughput_and_latency(dut):
    """No stalls: n entries take n + latency cycles (one per cycle, fixed latency)."""
    tb = await TB(dut, 0.0, 5).start()
    v = vec.random_vectors(tb.cfg, 5, 300, 1)
    lat = ApproxUnit(tb.cfg).latency
    cycles = await tb.check(v, 5)
    # measured from the falling edge the first beat is driven to the rising edge the last is taken
    assert abs(cycles - (len(v) + lat - 0.5)) <= 1, \
        f"{len(v)} entries took {cycles} cycles, expected {len(v)} + latency {lat}"


def _fixture_ok() -> bool:
    try:
        return vec.fixture_vectors(load_config(), 0, "long", (0,), max_entries=1) is not None
    except RuntimeError:
        return False


@cocotb.skipif(not _fixture_ok(), reason="MiniLM fixture needs head_dim 32 and seq_len >= 30")
@cocotb.test()
async def minilm_entries(dut):
    """The first 400 kept entries of two real heads (first and last layer) of the 'long'
    capture, each mode, with stalls."""
    tb = await TB(dut, STALL_ON, 9).start()
    for exact in (0, 1):
        for head in (0, 71):
            await tb.check(vec.fixture_vectors(tb.cfg, exact, "long", (head,), max_entries=400), 9)
