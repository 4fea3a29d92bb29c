"""cocotb bench of :class:`hw.block_pruner.BlockPruner` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_block_pruner_cocotb.py``).  The
configuration comes from the exported JSON (:func:`sim.cocotb_env.load_config`); stimulus and
expected masks come from :mod:`sim.vectors.pruner`, the generator the Amaranth-simulator tests
use.  Each test streams whole heads into ``imp_in`` (setting the run-time ports ``mode``,
``k_frac_q``, ``rho_q``, ``valid_len`` per head, after the previous head's last beat) and compares
the whole ``mask_out`` stream with golden; the first mismatch names configuration, case, seed,
beat index (head, block-row, settings), expected and actual.  Stream monitors (started by the
source and sink) fail the test on any handshake-rule violation.

Environment (optional): ``HDPGEN_SEED`` (base seed, default 1), ``PRUNER_MAX_LEN`` (cap on
``valid_len`` of the directed and random cases; default 8 for presets with more than 32
block columns, else none), ``PRUNER_COUNTS`` (file name, default ``pruner_counts.json``, in
the test directory: transactions checked per test, read by the pytest wrapper).
"""

import json
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hw.config import K_FRAC_BITS
from sim import cocotb_env
from sim.cocotb_env import load_config
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import pruner as vec

STALL_ON = 0.3


def _max_len(cfg) -> int | None:
    default = 8 if cfg.n_block_cols > 32 else 0
    v = cocotb_env.env_int("PRUNER_MAX_LEN", default)
    return v or None


def _record(test: str, beats_in: int, beats_out: int, **extra) -> None:
    path = Path(cocotb_env.env_str("PRUNER_COUNTS", "pruner_counts.json"))
    data = json.loads(path.read_text()) if path.exists() else {}
    data[test] = {"imp_in": beats_in, "mask_out": beats_out, **extra}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


class TB:
    """Clock, reset, a source on ``imp_in`` and a sink on ``mask_out`` (both with monitors)."""

    def __init__(self, dut, stall: float, seed: int):
        self.dut = dut
        self.cfg = load_config()
        self.stall = stall
        self.seed = seed
        self.clock = start_clock(dut)
        self.src = StreamSource(dut, "imp_in", self.clock, stall=stall, seed=seed)
        self.sink = StreamSink(dut, "mask_out", self.clock, stall=stall, seed=seed + 1)
        self.beats_in = 0
        self.beats_out = 0
        for port in ("mode", "k_frac_q", "rho_q", "valid_len"):
            getattr(dut, port).value = 0

    async def start(self) -> "TB":
        await reset(self.dut, self.clock)
        return self

    def _settings(self, h: vec.PrunerHead) -> None:
        self.dut.mode.value = h.mode
        self.dut.k_frac_q.value = h.k_frac_q
        self.dut.rho_q.value = h.rho_q
        self.dut.valid_len.value = h.valid_len

    async def _send(self, heads: list[vec.PrunerHead]) -> None:
        for h in heads:
            self._settings(h)
            await self.src.send_many([vec.pack_beat(self.cfg, b) for b in h.beats])

    async def check(self, name: str, heads: list[vec.PrunerHead], seed: int) -> int:
        """Stream ``heads`` through the unit and compare the whole output; returns beats."""
        exp = [vec.pack_mask(self.cfg, mk) for h in heads for mk in h.masks]
        sender = cocotb.start_soon(self._send(heads))
        got = await self.sink.recv_many(len(exp))
        await sender
        msg = vec.first_mismatch(self.cfg, name, seed, exp, got, heads)
        assert msg is None, msg
        for _ in range(8):
            await RisingEdge(self.clock.signal)
        assert self.sink.empty(), f"{name}: mask_out beats beyond the {len(exp)} expected"
        n_in = sum(h.n_blocks for h in heads)
        self.beats_in += n_in
        self.beats_out += len(exp)
        self.dut._log.info(f"pruner {name}: {len(heads)} heads, {n_in} blocks in, {len(exp)} "
                           f"masks checked (stall={self.stall}, seed={seed})")
        return len(exp)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def directed_cases(dut, stall: float):
    """All importances equal, ties at the k-th place, all below threshold but the max,
    negative importances, k_frac_q = 0 / 1 / 2**8 / above, valid_len = 1 and ragged, causal,
    rho = 0, 1 and above 1, mode off and code 3, extremes at the importance width with every
    block column valid."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    for case in vec.directed_cases(tb.cfg, seed=1, max_len=_max_len(tb.cfg)):
        if stall and case.name.startswith("extreme") and tb.cfg.n_block_cols > 32:
            continue  # arithmetic extremes, long rows: checked once, without stalls
        await tb.check(case.name, case.heads, seed=1)
    _record(f"directed_cases_stall{stall}", tb.beats_in, tb.beats_out)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def random_heads(dut, stall: float):
    """Seeded random heads: random settings, importances from random A through golden or drawn
    directly (full range and narrow ranges with many ties)."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    base = cocotb_env.seed()
    for seed in (base, base + 1, base + 2):
        case = vec.random_case(tb.cfg, seed, n_heads=8, max_len=_max_len(tb.cfg))
        await tb.check(case.name, case.heads, seed=seed)
    _record(f"random_heads_stall{stall}", tb.beats_in, tb.beats_out)


def _fixture_reason() -> str | None:
    try:
        cfg = load_config()
    except RuntimeError as exc:  # not run through sim.runner: the tests themselves will say so
        return str(exc)
    if vec.fixture_case(cfg, "short", heads=(0,)) is None:
        return "MiniLM fixture missing or does not fit (needs head_dim 32, seq_len >= N)"
    return None


@cocotb.skipif(_fixture_reason() is not None, reason="MiniLM importances need head_dim 32 "
               "and the fixture")
@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def minilm_heads(dut, stall: float):
    """Real data: golden importances of all-MiniLM-L6-v2 heads (long fixture, 30 tokens, layer 5
    head 11; the Amaranth tests run two heads of the medium fixture), every mode, causal on
    and off."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    case = vec.fixture_case(tb.cfg, "long", heads=(71,))
    await tb.check(case.name, case.heads, seed=0)
    _record(f"minilm_heads_stall{stall}", tb.beats_in, tb.beats_out)


@cocotb.test()
async def throughput_no_stalls(dut):
    """No stalls on either side: imp_in is never refused (one block per cycle across rows and
    heads of non-decreasing row length, every mode), and consecutive masks of a full-width
    head come exactly n_block_cols cycles apart."""
    tb = await TB(dut, 0.0, cocotb_env.seed()).start()
    cfg = tb.cfg
    rng = np.random.default_rng(3)
    lo, hi = cfg.importance_range
    lens = sorted({1, min(cfg.seq_len, 2 * cfg.block_cols + 1), cfg.seq_len})
    heads = []
    for n in lens:
        for mode in (vec.MODE_OFF, vec.MODE_TOPK, vec.MODE_THRESHOLD):
            valid = vec.block_validity(cfg, n, False)
            imp = rng.integers(lo, hi + 1, size=valid.shape) * valid
            # at most 4 block-rows per head: enough for row-to-row timing, short on big presets
            heads.append(vec.make_head(cfg, imp, valid, n, False, mode=mode,
                                       k_frac_q=1 << (K_FRAC_BITS - 1),
                                       rows=list(range(min(4, valid.shape[0])))))
    refused = 0
    out_cycles: list[int] = []
    cycle = 0
    done = False

    async def count():
        nonlocal refused, cycle
        while not done:
            await FallingEdge(tb.clock.signal)
            await ReadOnly()
            if dut.imp_in__valid.value == 1 and dut.imp_in__ready.value == 0:
                refused += 1
            if dut.mask_out__valid.value == 1 and dut.mask_out__ready.value == 1:
                out_cycles.append(cycle)
            cycle += 1

    counter = cocotb.start_soon(count())
    await tb.check("throughput", heads, seed=3)
    done = True
    await counter
    assert refused == 0, f"imp_in refused {refused} beats without backpressure"
    last = heads[-1]
    tail = out_cycles[-len(last.masks):]
    gaps = sorted({b - a for a, b in zip(tail, tail[1:])})
    assert gaps in ([], [cfg.n_block_cols]), f"mask gaps {gaps}, expected {cfg.n_block_cols}"
    _record("throughput_no_stalls", tb.beats_in, tb.beats_out, refused=refused,
            cycles_per_full_row=gaps[0] if gaps else None)
