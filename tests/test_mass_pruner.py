"""MassPruner (the ``mass`` pruning mode) against golden, in Amaranth's simulator: directed
extremes, seeded random heads, real MiniLM heads, random stalls on both streams, the
throughput and latency the cycle models read, and broken variants that must be caught."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module

from hw.block_pruner import mask_layout
from hw.mass_pruner import MassPruner, mass_mask_latency
from hw.presets import preset
from hw.score_unit import block_layout
from sim.amaranth_streams import StreamChecker, handshake_trace, run_amaranth, stream_get, stream_put
from sim.fixtures import load_fixture
from sim.vectors import mass as vec

PRESETS = ("tiny", "odd", "default")
MAX_LEN = {"tiny": None, "odd": None, "default": 14}


def _cfg(name):
    """The preset; the default one cut to N = 16 (Amaranth's simulator is slow on the full
    64-column design; the cocotb bench runs it whole)."""
    cfg = preset(name)
    return cfg.replace(seq_len=16) if name == "default" else cfg


def run_heads(cfg, heads, *, stall_in=0.0, stall_out=0.0, seed=0, dut=None, trace=None):
    """Stream every head (K rows, then blocks) through a MassPruner; the packed mask beats."""
    dut = MassPruner(cfg) if dut is None else dut
    blay = block_layout(cfg)
    n_out = sum(len(h.masks) for h in heads)
    got: list[int] = []
    in_rng, out_rng = random.Random(seed), random.Random(seed + 1)

    async def producer(ctx):
        for h in heads:
            ctx.set(dut.valid_len, h.valid_len)
            ctx.set(dut.causal, h.causal)
            ctx.set(dut.eps_q, h.eps_q)
            for row in h.k_rows:
                ctx.set(dut.k_in.payload, [int(x) for x in row])
                ctx.set(dut.k_in.valid, 1)
                await ctx.tick()
            ctx.set(dut.k_in.valid, 0)
            for beat in h.beats:
                await stream_put(ctx, dut.blk_in, blay.const(beat), in_rng, stall_in)
            # the next head's settings may change once its last block is in
            ctx.set(dut.eps_q, 255 - h.eps_q)

    async def consumer(ctx):
        for _ in range(n_out):
            got.append((await stream_get(ctx, dut.mask_out, out_rng, stall_out)).as_bits())

    checkers = [StreamChecker(dut.blk_in, "blk_in"), StreamChecker(dut.mask_out, "mask_out")]
    background = [c.testbench for c in checkers] + (
        [handshake_trace(trace, in_=dut.blk_in, out=dut.mask_out)] if trace is not None else [])
    run_amaranth(dut, [producer, consumer], background=background, clock=1e-6)
    assert checkers[0].count == sum(h.n_blocks for h in heads)
    return got


def check(cfg, heads, label, **kw):
    got = run_heads(cfg, heads, **kw)
    exp = [vec.pack_mask(cfg, mk) for h in heads for mk in h.masks]
    assert len(got) == len(exp)
    k = 0
    for h in heads:
        for mk in h.masks:
            if got[k] != exp[k]:
                g = mask_layout(cfg).from_bits(got[k])
                r = mk["row"]
                raise AssertionError(f"{label}: head L={h.valid_len} causal={h.causal} eps_q={h.eps_q} "
                            f"block-row {r}: mask {int(g.mask):b} row {int(g.row)}, expected "
                            f"{mk['mask']:b} row {r}; masses {h.mass[r].tolist()}")
            k += 1


def test_rejects_configs_it_cannot_build():
    cfg = preset("tiny")
    with pytest.raises(TypeError, match="HDPConfig"):
        MassPruner("tiny")
    with pytest.raises(ValueError, match="exp_bits"):
        MassPruner(cfg.replace(exp_bits=5))
    with pytest.raises(ValueError, match="prob_frac"):
        MassPruner(cfg.replace(exp_bits=6, prob_frac=13))


@pytest.mark.parametrize("name", PRESETS)
def test_directed(name):
    cfg = _cfg(name)
    check(cfg, vec.directed_heads(cfg, MAX_LEN[name]), f"{name} directed")


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", [1, 2])
def test_random_with_stalls(name, seed):
    cfg = _cfg(name)
    rng = np.random.default_rng(seed)
    top = MAX_LEN[name] or cfg.seq_len
    heads = [vec.random_head(cfg, rng, int(rng.integers(1, top + 1)), spread=s)
             for s in (1, 2, 4, 1)]
    check(cfg, heads, f"{name} seed {seed}", stall_in=0.3, stall_out=0.5, seed=seed)


def test_real_minilm_heads():
    cfg = preset("default").replace(seq_len=24)
    data = load_fixture("long")
    heads = [vec.fixture_head(cfg, data, h, eps) for h, eps in ((0, 25), (7, 13), (40, 64))]
    check(cfg, heads, "minilm", stall_in=0.2, stall_out=0.2, seed=5)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_throughput_and_latency(name):
    """With ``mask_out`` always ready: one block per cycle, never held, and each mask
    :func:`mass_mask_latency` cycles after its row's last block."""
    cfg = _cfg(name)
    rng = np.random.default_rng(3)
    top = MAX_LEN[name] or cfg.seq_len
    heads = [vec.random_head(cfg, rng, L) for L in (top, 1, max(1, top // 2))]
    trace: dict = {}
    check(cfg, heads, f"{name} timing", trace=trace)
    ins, outs = trace["in"], trace["out"]
    k = 0
    ends = []
    for h in heads:
        m_cols = -(-h.valid_len // cfg.block_cols)
        for _r in range(len(h.masks)):
            k += m_cols
            ends.append((ins[k - 1], m_cols))
    assert [o - e for o, (e, _) in zip(outs, ends)] == [mass_mask_latency(cfg, m) for _, m in ends]
    # the blocks went in back to back within each head (the producer never waits)
    first = 0
    for h in heads:
        seg = ins[first:first + h.n_blocks]
        assert seg == list(range(seg[0], seg[0] + len(seg)))
        first += h.n_blocks


# ---------------------------------------------------------------------------- broken variants
class _FloorShares(MassPruner):
    """Shares truncated instead of rounded half up."""
    _round_shares = False


class _NoDiagonal(MassPruner):
    """Diagonal blocks not forced."""
    _keep_diagonal = False


@pytest.mark.parametrize("broken", ["floor_shares", "no_diagonal", "eps_ignored", "eps_max"])
def test_broken_variant_fails(broken):
    """A variant that drops a rule must fail the directed and a few random heads."""
    cfg = preset("tiny")
    dut = _BROKEN[broken](cfg)
    rng = np.random.default_rng(7)
    heads = vec.directed_heads(cfg) + [vec.random_head(cfg, rng, spread=s) for s in (1, 2, 4, 8) * 8]
    with pytest.raises(AssertionError):
        check(cfg, heads, broken, dut=dut)


class _EpsIgnored(MassPruner):
    """The eps register ignored (a constant instead)."""
    def __init__(self, cfg, value=0):
        super().__init__(cfg)
        self._value = value

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = MassPruner(self._cfg)
        for name in ("valid_len", "causal"):
            m.d.comb += getattr(inner, name).eq(getattr(self, name))
        m.d.comb += inner.eps_q.eq(self._value)
        for port in ("k_in", "blk_in"):
            s, i = getattr(self, port), getattr(inner, port)
            m.d.comb += [i.valid.eq(s.valid), i.payload.eq(s.payload), s.ready.eq(i.ready)]
        s, i = self.mask_out, inner.mask_out
        m.d.comb += [s.valid.eq(i.valid), s.payload.eq(i.payload), i.ready.eq(s.ready)]
        return m


_BROKEN = {"floor_shares": _FloorShares, "no_diagonal": _NoDiagonal,
           "eps_ignored": _EpsIgnored, "eps_max": lambda cfg: _EpsIgnored(cfg, 255)}
