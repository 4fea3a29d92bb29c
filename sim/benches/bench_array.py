"""cocotb bench of :class:`hw.systolic.SystolicArray` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_systolic_cocotb.py``).  The configuration
comes from the exported JSON; heads, tiles, operand beats and expected results come from
:mod:`sim.vectors.array` (golden model + the scheduler of :mod:`sim.cycle_model`), the same
generator the Amaranth-simulator tests use.  Every test streams the op beats of whole heads and
compares every result row (accumulators, row index, last, tag) with golden; stream monitors fail
a test on any handshake-rule violation.  Without stalls the measured cycles are compared with
:func:`sim.cycle_model.predict_cycles`.

The same module also drives :class:`hw.systolic.TileScheduler` when run with
``ARRAY_BENCH_DUT=scheduler``: block-row masks of golden heads in, tile commands out, compared
command for command with :func:`sim.cycle_model.scheduler_commands`.

Environment (optional): ``HDPGEN_SEED`` (base seed, default 1), ``ARRAY_BENCH_DUT``
(``array``, the default, or ``scheduler``).
"""

import os

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from sim import cocotb_env, cycle_model
from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import array as vec

STALL_ON = 0.4
_SCHED = os.environ.get("ARRAY_BENCH_DUT", "array") == "scheduler"


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
                                 {"prune_mode": "topk", "k_b": 1})):
        c = cfg.replace(**changes)
        q, k, v = vec.random_head(c, seed + i, _rows(c))
        out.append(vec.head_workload(c, f"head_seed{seed + i}_{changes}", q, k, v))
    return out


@cocotb.skipif(_SCHED, reason="array tests")
@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def head_tiles(dut, stall: float):
    """Score and P x V tiles of random heads (pruned as configured, exact, dense, k_b = 1)."""
    seed = cocotb_env.seed()
    tb = await TB(dut, stall, seed).start()
    for w in _workloads(tb.cfg, seed):
        await tb.run(w, seed)


@cocotb.skipif(_SCHED, reason="array tests")
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
                                                                       "k_b": 1})):
        c = cfg.replace(**changes)
        w = vec.head_workload(c, label, q, k, v)
        measured = await tb.run(w, seed)
        predicted = cycle_model.predict_cycles(c, [t.depth(c) for t in w.tiles])
        assert measured == predicted, f"{label}: measured {measured} cycles, model {predicted}"
        results[label] = measured
    assert results["topk1"] < results["dense"], results


@cocotb.skipif(not _SCHED, reason="scheduler tests (ARRAY_BENCH_DUT=scheduler)")
@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def scheduler_commands(dut, stall: float):
    """Keep masks of golden heads (as configured, dense, k_b = 1, a pruned head, a short
    valid_len) -> exactly the model's kept tiles, in order; pruned tiles never appear."""
    import numpy as np

    from golden.model import attention_head_int
    from hw.block_pruner import mask_layout
    from hw.systolic import cmd_layout
    seed = cocotb_env.seed()
    cfg = load_config()
    clock = start_clock(dut)
    src = StreamSource(dut, "mask_in", clock, stall=stall, seed=seed)
    sink = StreamSink(dut, "cmd_out", clock, stall=stall, seed=seed + 1)
    dut.valid_len.value = cfg.seq_len
    dut.head_keep.value = 1
    await reset(dut, clock)
    mlay, clay = mask_layout(cfg), cmd_layout(cfg)
    cases = [({}, cfg.seq_len, 1), ({"prune_mode": "off"}, cfg.seq_len, 1),
             ({"prune_mode": "topk", "k_b": 1}, cfg.seq_len, 1),
             ({}, max(1, cfg.seq_len - 3), 1), ({}, cfg.seq_len, 0)]
    for i, (changes, vl, keep) in enumerate(cases):
        c = cfg.replace(**changes)
        q, k, v = vec.random_head(c, seed + i)
        res = attention_head_int(q, k, v, c, vl)
        bk = np.zeros((cfg.n_block_rows, cfg.n_block_cols), bool)
        if keep:
            bk[:res.block_keep.shape[0], :res.block_keep.shape[1]] = res.block_keep
        exp = cycle_model.scheduler_commands(cfg, bk, vl)
        dut.valid_len.value = vl
        dut.head_keep.value = keep
        nbr = -(-vl // cfg.block_rows)
        beats = [mlay.const({"mask": sum(1 << col for col in range(bk.shape[1]) if bk[r, col]),
                             "row": r, "last": int(r == nbr - 1)}).as_bits() for r in range(nbr)]
        await src.send_many(beats)
        raw = await sink.recv_many(len(exp))
        got = [(int(x.kind), int(x.ti), int(x.tj), int(x.cols), int(x.row_last), int(x.last))
               for x in (clay.from_bits(b) for b in raw)]
        first = next((j for j, (g, e) in enumerate(zip(got, exp)) if g != e), None)
        assert first is None, (f"config={cfg.to_dict()} seed={seed} case={changes} "
                               f"valid_len={vl} head_keep={keep}: first difference at command "
                               f"{first}: expected {exp[first]}, got {got[first]}")
        for _ in range(3 * cfg.n_block_cols + 10):
            await RisingEdge(clock.signal)
        extra = [clay.from_bits(sink.recv_nowait()) for _ in range(len(sink))]
        assert not extra, (f"case {i} {changes} valid_len={vl} head_keep={keep}: commands "
                           f"beyond the {len(exp)} expected: "
                           f"{[(int(x.kind), int(x.ti), int(x.tj)) for x in extra]}")
        dut._log.info(f"scheduler case {i} {changes} valid_len={vl} head_keep={keep}: "
                      f"{len(exp)} commands checked (stall={stall})")
