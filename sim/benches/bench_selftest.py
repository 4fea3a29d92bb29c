"""Bench of ``sim.selftest_dut.SelftestStream``: proves the stream drivers, monitor and runner.

Every test streams seeded random rows through the DUT, checks each output against
``selftest_expected`` in order (scoreboard: nothing lost, changed, duplicated or invented),
and checks that both monitors counted exactly the transfers sent.  ``HDPGEN_SEED`` picks the
stimulus; the tests sweep stall settings themselves.
"""

import random

import cocotb
from cocotb.triggers import ClockCycles

from sim import cocotb_env
from sim.selftest_dut import selftest_expected, selftest_layout
from sim.streams import StreamSink, StreamSource, StreamTimeout, reset, start_clock

N_BEATS = 200


class TB:
    """Clock, reset, a source on ``i`` and a sink on ``o``."""

    def __init__(self, dut, src_stall: float, sink_stall: float, seed: int):
        self.dut = dut
        self.cfg = cocotb_env.load_config()
        self.layout = selftest_layout(self.cfg)
        self.clock = start_clock(dut)
        self.src = StreamSource(dut, "i", self.clock, stall=src_stall, seed=seed)
        self.sink = StreamSink(dut, "o", self.clock, stall=sink_stall, seed=seed + 1)

    def random_payload(self, rng: random.Random, last: bool) -> int:
        lo, hi = -(1 << (self.cfg.qk_bits - 1)), (1 << (self.cfg.qk_bits - 1)) - 1
        row = [rng.randint(lo, hi) for _ in range(self.cfg.head_dim)]
        return self.layout.const({"row": row, "last": int(last)}).as_bits()


async def run_stream(dut, src_stall: float, sink_stall: float, n: int = N_BEATS) -> None:
    seed = cocotb_env.seed()
    tb = TB(dut, src_stall, sink_stall, seed)
    rng = random.Random(seed * 7919 + int(src_stall * 100) * 31 + int(sink_stall * 100))
    mask = rng.getrandbits(tb.cfg.qk_bits * tb.cfg.head_dim)
    dut.mask.value = mask
    await reset(dut, tb.clock)

    sent = [tb.random_payload(rng, last=(k % 7 == 6)) for k in range(n)]
    expected = [selftest_expected(tb.cfg, p, mask) for p in sent]
    sender = cocotb.start_soon(tb.src.send_many(sent))
    got = []
    for k in range(n):
        got.append(await tb.sink.recv())
        if got[k] != expected[k]:
            exp_v = tb.layout.from_bits(expected[k])
            got_v = tb.layout.from_bits(got[k])
            raise AssertionError(
                f"scoreboard: beat {k} of {n} differs (config {tb.cfg.to_dict()}, seed {seed}, "
                f"stall src={src_stall} sink={sink_stall}): expected {expected[k]:#x} "
                f"(row {list(exp_v.row)}, last {exp_v.last}), got {got[k]:#x} "
                f"(row {list(got_v.row)}, last {got_v.last})")
    await sender
    await ClockCycles(dut.clk, 20)
    assert tb.sink.empty(), f"scoreboard: {len(tb.sink)} extra beats after the {n} expected"
    assert tb.src.monitor.count == n, f"input monitor counted {tb.src.monitor.count}, sent {n}"
    assert tb.sink.monitor.count == n, f"output monitor counted {tb.sink.monitor.count}, sent {n}"
    dut._log.info("checked %d transfers (stall src=%s sink=%s, seed %d)", n, src_stall, sink_stall, seed)


@cocotb.test()
@cocotb.parametrize(src_stall=[0.0, 0.5], sink_stall=[0.0, 0.5])
async def test_stream(dut, src_stall: float, sink_stall: float) -> None:
    """Every combination of idle insertion and backpressure."""
    await run_stream(dut, src_stall, sink_stall)


@cocotb.test()
async def test_heavy_backpressure(dut) -> None:
    """The sink is ready one cycle in ten: the skid buffer holds data for many cycles."""
    await run_stream(dut, 0.0, 0.9, n=60)


@cocotb.test()
async def test_recv_times_out(dut) -> None:
    """A sink waiting for data that never comes fails after timeout_cycles, not never."""
    tb = TB(dut, 0.0, 0.0, cocotb_env.seed())
    tb.sink.timeout_cycles = 50
    dut.mask.value = 0
    await reset(dut, tb.clock)
    try:
        await tb.sink.recv()
    except StreamTimeout as exc:
        assert "nothing received for 50 cycles" in str(exc), str(exc)
    else:
        raise AssertionError("recv() returned although nothing was sent")


@cocotb.test()
async def test_send_times_out(dut) -> None:
    """With the output never ready the skid buffer fills (2 beats), then send() times out."""
    cfg = cocotb_env.load_config()
    layout = selftest_layout(cfg)
    clock = start_clock(dut)
    src = StreamSource(dut, "i", clock, timeout_cycles=50)
    dut.o__ready.value = 0
    dut.mask.value = 0
    await reset(dut, clock)
    beat = layout.const({"row": [0] * cfg.head_dim, "last": 0}).as_bits()
    await src.send(beat)
    await src.send(beat)
    try:
        await src.send(beat)
    except StreamTimeout as exc:
        assert "no beat accepted for 50 cycles (2 sent" in str(exc), str(exc)
    else:
        raise AssertionError("a third beat was accepted by a full skid buffer")
