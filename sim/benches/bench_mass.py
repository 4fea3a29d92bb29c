"""cocotb bench of :class:`hw.mass_pruner.MassPruner` (Icarus and Verilator).

Run through :func:`sim.runner.run_cocotb` (``tests/test_mass_pruner_cocotb.py``).  Stimulus
and expected masks come from :mod:`sim.vectors.mass`, the generator the Amaranth-simulator
tests use.  Each head: its settings on ``valid_len``, ``causal`` and ``eps_q``, its K rows on
``k_in`` (one per cycle), then its blocks on ``blk_in``; the whole ``mask_out`` stream is
compared with golden and the first mismatch names the head, block-row, masks and golden's
block masses.  Stream monitors (started by the source and sink) fail the test on any
handshake-rule violation.

Environment (optional): ``HDPGEN_SEED`` (base seed, default 1), ``MASS_MAX_LEN`` (cap on
``valid_len``; default 24 for presets with more than 32 block columns, else none),
``MASS_COUNTS`` (file name, default ``mass_counts.json``: transactions checked per test).
"""

import json
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hw.mass_pruner import mass_mask_latency
from hw.score_unit import block_layout
from sim import cocotb_env
from sim.cocotb_env import load_config
from sim.fixtures import fixture_names, load_fixture
from sim.streams import StreamSink, StreamSource, reset, start_clock
from sim.vectors import mass as vec

STALL_ON = 0.3


def _max_len(cfg) -> int | None:
    v = cocotb_env.env_int("MASS_MAX_LEN", 24 if cfg.n_block_cols > 32 else 0)
    return v or None


def _record(test: str, beats_in: int, beats_out: int, **extra) -> None:
    path = Path(cocotb_env.env_str("MASS_COUNTS", "mass_counts.json"))
    data = json.loads(path.read_text()) if path.exists() else {}
    data[test] = {"blk_in": beats_in, "mask_out": beats_out, **extra}
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


class TB:
    """Clock, reset, K rows driven on ``k_in``, a source on ``blk_in``, a sink on
    ``mask_out`` (both with monitors)."""

    def __init__(self, dut, stall: float, seed: int):
        self.dut = dut
        self.cfg = load_config()
        self.stall = stall
        self.clock = start_clock(dut)
        self.src = StreamSource(dut, "blk_in", self.clock, stall=stall, seed=seed)
        self.sink = StreamSink(dut, "mask_out", self.clock, stall=stall, seed=seed + 1)
        self.blay = block_layout(self.cfg)
        self.beats_in = self.beats_out = 0
        for port in ("valid_len", "causal", "eps_q", "k_in__valid"):
            getattr(dut, port).value = 0

    async def start(self) -> "TB":
        await reset(self.dut, self.clock)
        return self

    async def _send(self, heads) -> None:
        dut = self.dut
        for h in heads:
            dut.valid_len.value = h.valid_len
            dut.causal.value = int(h.causal)
            dut.eps_q.value = h.eps_q
            for row in h.k_rows:
                await FallingEdge(self.clock.signal)
                dut.k_in__payload.value = vec.pack_k_row(self.cfg, row)
                dut.k_in__valid.value = 1
            await FallingEdge(self.clock.signal)
            dut.k_in__valid.value = 0
            await self.src.send_many([self.blay.const(b).as_bits() for b in h.beats])

    async def check(self, name: str, heads) -> int:
        exp = [vec.pack_mask(self.cfg, mk) for h in heads for mk in h.masks]
        sender = cocotb.start_soon(self._send(heads))
        got = await self.sink.recv_many(len(exp))
        await sender
        k = 0
        for hi, h in enumerate(heads):
            for mk in h.masks:
                assert got[k] == exp[k], (
                    f"mass {name}: head {hi} (L={h.valid_len}, causal={h.causal}, "
                    f"eps_q={h.eps_q}) block-row {mk['row']}: first mismatch at mask beat {k}: "
                    f"expected {exp[k]:#x}, actual {got[k]:#x}; masses "
                    f"{h.mass[mk['row']].tolist()}")
                k += 1
        for _ in range(8):
            await RisingEdge(self.clock.signal)
        assert self.sink.empty(), f"{name}: mask_out beats beyond the {len(exp)} expected"
        self.beats_in += sum(h.n_blocks for h in heads)
        self.beats_out += len(exp)
        return len(exp)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def directed_heads(dut, stall: float):
    """Extremes of Q and K (widest scores and key sums), ties, one peaked key, lengths 1 and
    ragged, causal, eps 0 / 25 / 255."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    await tb.check("directed", vec.directed_heads(tb.cfg, _max_len(tb.cfg)))
    _record(f"directed_stall{stall}", tb.beats_in, tb.beats_out)


@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def random_heads(dut, stall: float):
    """Seeded random heads: lengths, causal, eps, and how peaked the rows are."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    top = _max_len(tb.cfg) or tb.cfg.seq_len
    for seed in range(cocotb_env.seed(), cocotb_env.seed() + 3):
        rng = np.random.default_rng(seed)
        heads = [vec.random_head(tb.cfg, rng, int(rng.integers(1, top + 1)), spread=s)
                 for s in (1, 2, 4, 8)]
        await tb.check(f"random seed {seed}", heads)
    _record(f"random_stall{stall}", tb.beats_in, tb.beats_out)


def _fixture_ok() -> bool:
    try:
        cfg = load_config()
    except RuntimeError:
        return False
    return cfg.head_dim == 32 and "para128" in fixture_names()


@cocotb.skipif(not _fixture_ok(), reason="MiniLM heads need head_dim 32")
@cocotb.test()
@cocotb.parametrize(stall=[0.0, STALL_ON])
async def minilm_heads(dut, stall: float):
    """Real data: MiniLM heads of a 128-token paragraph (cut to the configuration's length
    cap), several layers and eps values."""
    tb = await TB(dut, stall, cocotb_env.seed()).start()
    data = load_fixture("para128")
    L = _max_len(tb.cfg) or tb.cfg.seq_len
    heads = [vec.fixture_head(tb.cfg, data, h, eps, valid_len=L)
             for h, eps in ((0, 25), (30, 13), (71, 64))]
    await tb.check("minilm", heads)
    _record(f"minilm_stall{stall}", tb.beats_in, tb.beats_out)


@cocotb.test()
async def throughput_no_stalls(dut):
    """No stalls: a head's blocks go in back to back, and each mask leaves
    ``mass_mask_latency`` cycles after its row's last block."""
    tb = await TB(dut, 0.0, cocotb_env.seed()).start()
    cfg = tb.cfg
    rng = np.random.default_rng(4)
    top = _max_len(cfg) or cfg.seq_len
    heads = [vec.random_head(cfg, rng, L) for L in sorted({1, max(1, top // 2), top})]
    refused, ins, outs, cycle, done = 0, [], [], 0, False

    async def count():
        nonlocal refused, cycle
        while not done:
            await FallingEdge(tb.clock.signal)
            await ReadOnly()
            v, r = dut.blk_in__valid.value == 1, dut.blk_in__ready.value == 1
            refused += v and not r
            if v and r:
                ins.append(cycle)
            if dut.mask_out__valid.value == 1 and dut.mask_out__ready.value == 1:
                outs.append(cycle)
            cycle += 1

    counter = cocotb.start_soon(count())
    await tb.check("throughput", heads)
    done = True
    await counter
    ends, k = [], 0
    for h in heads:
        m_cols = -(-h.valid_len // cfg.block_cols)
        for _ in h.masks:
            k += m_cols
            ends.append((ins[k - 1], m_cols))
    lat = [o - e for o, (e, _) in zip(outs, ends)]
    assert lat == [mass_mask_latency(cfg, m) for _, m in ends], f"latencies {lat}"
    # within a head the blocks go in back to back (a head's first block may wait for the
    # previous head's last mask to leave the scans)
    first = 0
    for h in heads:
        seg = ins[first:first + h.n_blocks]
        assert seg == list(range(seg[0], seg[0] + len(seg))), f"head L={h.valid_len}: held"
        first += h.n_blocks
    _record("throughput_no_stalls", tb.beats_in, tb.beats_out, refused=refused)
