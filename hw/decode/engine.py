"""The whole Token-Picker decode step of one KV group: :class:`DecodeGroup` plus the final
softmax (the project's :class:`hw.softmax_unit.SoftmaxUnit`, configured like
:func:`golden.token_picker.softmax_config`) and P x V with the golden's requantization."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.config import HDPConfig
from hw.softmax_unit import SoftmaxUnit

from .group import DecodeGroup, out_beat_layout
from .params import DecodeParams

__all__ = ["DecodeEngine", "softmax_hdp_config", "KIND_OUT"]

KIND_OUT = 2


def softmax_hdp_config(p: DecodeParams) -> HDPConfig:
    """An :class:`HDPConfig` whose softmax is :func:`golden.token_picker.softmax_config`'s:
    same ``exp_frac``, ``exp_bits``, ``prob_frac``, ``head_dim``, ``qk_frac = sm_frac / 2``,
    ``seq_len = N`` (so ``recip_guard = clog2(N) + 2``), and ``qk_bits = 16``, whose score
    range holds every score at ``sm_frac`` fraction bits (checked)."""
    cfg = p.cfg
    h = HDPConfig(seq_len=p.n_cache, head_dim=p.d, qk_bits=16, qk_frac=cfg.sm_frac // 2,
                  exp_frac=cfg.exp_frac, exp_bits=cfg.exp_bits, prob_frac=cfg.prob_frac)
    need = p.score_width + cfg.sm_frac
    if need > h.score_width:
        raise ValueError(f"scores at sm_frac = {cfg.sm_frac} fraction bits need {need} bits, "
                         f"more than the softmax unit's {h.score_width} (d = {p.d})")
    return h


class DecodeEngine(DecodeGroup):
    """:class:`DecodeGroup` whose V rows go into an on-chip buffer and whose output is, per
    query head, the ``d`` requantized attention outputs of :func:`golden.token_picker.decode_step`.

    Extra port: ``v_frac`` (In, the KV head's V fraction bits).  ``m_axis`` carries, head 0
    first, ``d`` beats per head of :func:`out_beat_layout` with ``kind = 2``, ``tok`` = the
    head, ``idx`` = the element, ``payload`` = the ``out_bits`` output sign-extended; ``tlast``
    on the last.  Per head: its kept scores go (rounded to ``sm_frac`` fraction bits, round half
    up) into the softmax unit; each probability ``p`` then adds ``p * v[tok]`` to ``d``
    accumulators (the V row read from the buffer); the sums are requantized with
    ``out_shift = prob_frac + v_frac - out_frac`` (round half up) and saturated.
    """

    def __init__(self, p: DecodeParams, addr_width: int = 32):
        self._hdp = softmax_hdp_config(p)
        # A rule a test may switch off to build a broken variant (always on in a real build):
        # the output requantization rounds half up (off: truncates).
        self._round_out = True
        super().__init__(p, addr_width)

    def _extra_ports(self) -> dict:
        return {"v_frac": In(range(self.p.cfg.v_bits))}

    def elaborate(self, platform):
        p = self.p
        # the V row buffer: one row per token, written a word at a time
        self._vmem = Memory(shape=unsigned(self._vw * p.cfg.word_bits), depth=p.n_cache, init=[])
        self._vwr = self._vmem.write_port(granularity=p.cfg.word_bits)
        self._vrd = self._vmem.read_port()
        m = super().elaborate(platform)
        m.submodules.vbuf = self._vmem
        return m

    def _v_word(self, m: Module, rd, tag, wi) -> None:
        """Store the V word into its place in token ``tag.tok``'s row of the buffer."""
        idx = self._v_index(tag, wi)
        m.d.comb += [rd.ready.eq(1), self._vwr.addr.eq(tag.tok),
                     self._vwr.data.eq(rd.payload.data.replicate(self._vw)),
                     self._vwr.en.eq(Mux(rd.valid, 1 << idx[:max(1, (self._vw - 1).bit_length())],
                                         0))]

    def _drain(self, m: Module, h):
        """Per head: softmax over the kept scores, P x V, requantized outputs on ``m_axis``."""
        p, cfg = self.p, self.p.cfg
        m.submodules.softmax = sm = SoftmaxUnit(self._hdp)
        m.submodules.toks = toks = SyncFIFO(width=p.tok_width, depth=p.n_cache)
        acc_w = cfg.prob_frac + cfg.v_bits + p.cap + 3
        acc = [Signal(signed(acc_w), name=f"acc{i}") for i in range(p.d)]
        done = Signal()
        row_done = Signal()
        self._feed_softmax(m, h, sm, toks)
        self._pv(m, sm, toks, acc, row_done)
        i = Signal(range(p.d + 1))
        with m.FSM(name="drain"):
            with m.State("ROW"):
                with m.If(row_done):
                    m.d.sync += i.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                out = Signal(out_beat_layout(p))
                val = self._requantize(m, acc, i)
                m.d.comb += [out.payload.eq(val), out.tok.eq(h), out.idx.eq(i),
                             out.kind.eq(KIND_OUT), self.m_axis.tvalid.eq(1),
                             self.m_axis.tdata.eq(out),
                             self.m_axis.tlast.eq((i == p.d - 1) & (h == p.group - 1))]
                with m.If(self.m_axis.tready):
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == p.d - 1):
                        m.d.sync += [a.eq(0) for a in acc]
                        m.d.sync += h.eq(h + 1)
                        m.next = "ROW"
                        with m.If(h == p.group - 1):
                            m.d.comb += done.eq(1)
        return done

    def _feed_softmax(self, m: Module, h, sm, toks) -> None:
        """Head ``h``'s kept scores, rounded to ``sm_frac`` fraction bits, into the softmax; their
        tokens into ``toks``."""
        cfg = self.p.cfg
        with m.Switch(h):
            for i, c in enumerate(self._cores):
                with m.Case(i):
                    so, sf = c.s_out, c.sf
                    sh = Signal(signed(8), name=f"smsh{i}")
                    m.d.comb += sh.eq(sf - cfg.sm_frac)
                    s = so.payload.s
                    rounded = Signal(signed(len(s) + cfg.sm_frac + 1), name=f"sms{i}")
                    m.d.comb += rounded.eq(Mux(sh > 0,
                                               (s + (Const(1, 1) << (sh - 1)[:5])) >> sh.as_unsigned()[:5],
                                               s << (-sh).as_unsigned()[:5]))
                    m.d.comb += [sm.s_in.valid.eq(so.valid & toks.w_rdy),
                                 sm.s_in.payload.s.eq(rounded), sm.s_in.payload.keep.eq(1),
                                 sm.s_in.payload.last.eq(so.payload.last),
                                 so.ready.eq(sm.s_in.ready & toks.w_rdy),
                                 toks.w_data.eq(so.payload.tok),
                                 toks.w_en.eq(so.valid & sm.s_in.ready & toks.w_rdy)]

    def _pv(self, m: Module, sm, toks, acc, row_done) -> None:
        """For each probability: read the token's V row (one cycle), add ``p * v`` to ``acc``;
        a token whose low plane was not read uses its high bits and the low bits' midpoint
        (:func:`golden.token_picker.coarse_v`)."""
        p, cfg = self.p, self.p.cfg
        busy, p_reg, last_reg = Signal(), Signal(unsigned(len(sm.p_out.payload.p))), Signal()
        tok_reg = Signal(unsigned(p.tok_width))
        fire = sm.p_out.valid & ~busy
        m.d.comb += [sm.p_out.ready.eq(~busy), toks.r_en.eq(fire),
                     self._vrd.addr.eq(toks.r_data)]
        m.d.sync += busy.eq(fire)
        with m.If(fire):
            m.d.sync += [p_reg.eq(sm.p_out.payload.p), last_reg.eq(sm.p_out.payload.last),
                         tok_reg.eq(toks.r_data)]
        lo_bits = cfg.v_lo_bits
        hi = data.ArrayLayout(signed(cfg.v_bits - lo_bits), p.d)(
            self._vrd.data[:p.d * (cfg.v_bits - lo_bits)])
        if lo_bits:
            lo = data.ArrayLayout(unsigned(lo_bits), p.d)(
                self._vrd.data[self._vh * cfg.word_bits:][:p.d * lo_bits])
            full = self._union_lo.bit_select(tok_reg, 1)
            v = [Cat(Mux(full, lo[i], 1 << (lo_bits - 1)), hi[i]).as_signed() for i in range(p.d)]
        else:
            v = [hi[i] for i in range(p.d)]
        with m.If(busy):
            m.d.sync += [a.eq(a + p_reg * v[i]) for i, a in enumerate(acc)]
        m.d.comb += row_done.eq(busy & last_reg)

    def _requantize(self, m: Module, acc, i):
        """``saturate(shift_round_half_up(acc[i], prob_frac + v_frac - out_frac), out_bits)``."""
        cfg = self.p.cfg
        a = Array(acc)[i]
        sh = Signal(signed(8))
        m.d.comb += sh.eq(cfg.prob_frac + self.v_frac - cfg.out_frac)
        r = Signal(signed(len(acc[0]) + 32))
        bias = (Const(1, 1) << (sh - 1)[:5]) if self._round_out else 0
        m.d.comb += r.eq(Mux(sh > 0, (a + bias) >> sh.as_unsigned()[:5],
                             a << (-sh).as_unsigned()[:5]))
        lo, hi = -(1 << (cfg.out_bits - 1)), (1 << (cfg.out_bits - 1)) - 1
        out = Signal(signed(cfg.out_bits))
        m.d.comb += out.eq(Mux(r < lo, lo, Mux(r > hi, hi, r)))
        return out
