"""cocotb bench of :class:`hw.systolic.SystolicArray` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_systolic_cocotb.py``).  The configuration
comes from the exported JSON; heads, tiles, operand beats and expected results come from
:mod:`sim.vectors.array` (golden model + the tile list of :mod:`sim.cycle_model`), the same
generator the Amaranth-simulator tests use.  Every test streams the op beats of whole heads and
compares every result row (accumulators, row index, last, tag) with golden; stream monitors fail
a test on any handshake-rule violation.  Without stalls the measured cycles are compared with
:func:`sim.cycle_model.predict_cycles`.

Environment (optional): ``HDPGEN_SEED`` (base seed, default 1).
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from sim import cocotb_env, cycle_model
from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import array as vec

STALL_ON = 0.4


def _rows(cfg) -> int:
    """Rows of the random heads: the whole sequence for small presets, 24 for the default."""
    return min(cfg.seq_len, 24)


class TB:
    def __init__(self, dut, stall: float, seed: int):
        self.dut = dut
        self.cfg = load_config()
        self.stall = stall
        self.clock = start_clock(dut)
        self.src = StreamSource(dut, "op_in", self.clock, stall=stall, seed=seed)
        self.sink = StreamSink(dut, "res_out", self.clock, stall=stall, seed=seed + 1)
        self.first_in = None
        self.last_out = None
        self.cycle = 0

    async def start(self) -> "TB":
        await reset(self.dut, self.clock)
        cocotb.start_soon(self._count())
        return self

    async def _count(self) -> None:
        """Cycle of the first op_in transfer and of the latest res_out transfer."""
        d = self.dut
        while True:
            await FallingEdge(self.clock.signal)
            await ReadOnly()
            self.cycle += 1
            if self.first_in is None and d.op_in__valid.value == 1 and d.op_in__ready.value == 1:
                self.first_in = self.cycle
            if d.res_out__valid.value == 1 and d.res_out__ready.value == 1:
                self.last_out = self.cycle

    async def run(self, w: vec.ArrayWorkload, seed: int) -> int:
        """Stream a workload, compare everything; returns measured cycles (first beat accepted
        to last result row, inclusive)."""
        beats = vec.pack_beats(self.cfg, w)
        exp = vec.expected_rows(self.cfg, w)
        self.first_in = None
        sender = cocotb.start_soon(self.src.send_many(beats))
        raw = await self.sink.recv_many(len(exp))
        await sender
        got = vec.unpack_results(self.cfg, raw)
        err = vec.compare(got, exp)
        assert err is None, f"config={self.cfg.to_dict()} seed={seed} workload={w.name}: {err}"
        cycles = self.last_out - self.first_in + 1
        self.dut._log.info(f"array {w.name}: {len(w.tiles)} tiles, {len(beats)} op beats, "
                           f"{len(exp)} result rows checked in {cycles} cycles (stall={self.stall})")
        return cycles


def _workloads(cfg, seed: int) -> list[vec.ArrayWorkload]:
    out = []
    for i, changes in enumerate(({}, {"approx": "exact"}, {"prune_mode": "off"},
                                 {"prune_mode": "topk", "k_frac": 1 / 256})):
        c = cfg.replace(**changes)
        q, k, v = vec.random_head(c, seed + i, _rows(c))
        out.append(vec.head_workload(c, f"head_seed{seed + i}_{changes}", q, k, v))
    return out


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def head_tiles(dut, stall: float):
    """Score and P x V tiles of random heads (pruned as configured, exact, dense, and one block
    per block-row: k_frac = 1/256)."""
    seed = cocotb_env.seed()
    tb = await TB(dut, stall, seed).start()
    for w in _workloads(tb.cfg, seed):
        await tb.run(w, seed)


@cocotb.test()
async def cycles_match_model(dut):
    """Without stalls the measured cycles equal sim/cycle_model.predict_cycles, for dense and
    pruned heads; pruned heads take fewer cycles."""
    seed = cocotb_env.seed() + 10
    tb = await TB(dut, 0.0, seed).start()
    cfg = tb.cfg
    q, k, v = vec.random_head(cfg, seed, _rows(cfg))
    results = {}
    for label, changes in (("dense", {"prune_mode": "off"}), ("topk1", {"prune_mode": "topk",
                                                                       "k_frac": 1 / 256})):
        c = cfg.replace(**changes)
        w = vec.head_workload(c, label, q, k, v)
        measured = await tb.run(w, seed)
        predicted = cycle_model.predict_cycles(c, [t.depth(c) for t in w.tiles])
        assert measured == predicted, f"{label}: measured {measured} cycles, model {predicted}"
        results[label] = measured
    assert results["topk1"] < results["dense"], results

