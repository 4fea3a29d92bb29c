"""Bit-exact base-2 softmax over the kept scores of a row (twin of :mod:`golden.softmax`)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.tables import softmax_constants
from hw.config import HDPConfig, unsigned_width
from hw.dsp import DSP_OPERAND_MAX, registered_product

__all__ = ["EXP_PIPE", "SoftmaxUnit", "divider_steps", "s_in_layout", "p_out_layout"]


def s_in_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``SoftmaxUnit.s_in``: one score of a row, its keep bit, end of row."""
    return data.StructLayout({"s": signed(cfg.score_width), "keep": 1, "last": 1})


def p_out_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``SoftmaxUnit.p_out``: one probability (``prob_frac`` fraction bits), end of row."""
    return data.StructLayout({"p": unsigned(cfg.prob_width), "last": 1})


# Registers of the exponent pipeline (stage B) from the score-buffer read to the e write:
# buffer data, delta, product, shift amount (table read), table data, e.
EXP_PIPE = 7
# Banks of the exponent buffer: rows in stage B (two), in the divider, in stage C.
_E_BANKS = 4


def divider_steps(cfg: HDPConfig) -> int:
    """Cycles of the radix-4 divider per row: ``ceil(recip_width / 2)``."""
    return (cfg.recip_width + 1) // 2


class SoftmaxUnit(wiring.Component):
    """Bit-exact softmax of a row's kept scores; golden twin :func:`golden.softmax.softmax_rows`.

    Parameters
    ----------
    cfg : HDPConfig
        The whole configuration.  Elaboration limits: ``seq_len`` (longest row), ``score_width``,
        ``exp_bits`` W, ``exp_frac`` E, ``prob_frac`` P, ``recip_guard`` G; the constants
        (``scale``, ``delta_max``, ``exp_lut``) come from :func:`golden.tables.softmax_constants`.

    Ports
    -----
    s_in : In(stream.Signature(s_in_layout(cfg)))
        A row's entries in order, ``{s: signed(score_width), keep: 1, last: 1}``; ``last`` marks
        the row's final entry.  Rows have any length 1..``seq_len`` (a longer row is illegal).
    p_out : Out(stream.Signature(p_out_layout(cfg)))
        One beat per input entry, same order, ``{p: unsigned(prob_width), last: 1}``.
    busy : Out(1)
        A row is inside the unit (accepted, not yet fully delivered).  Not part of the
        stream contract; for a top level that wants to know when the unit has drained.

    Arithmetic (exactly golden's)
    -----------------------------
    ``m`` = max of the kept scores; ``delta = min(m - s, delta_max)``; ``t = (delta * scale) >> 16``
    (floor); ``e = exp_lut[t mod 2**E] >> min(t >> E, W + 1)`` and ``e = 0`` for ``keep = 0``;
    ``sum = sum e`` (``exp_sum_width`` bits, exact); ``R = floor(2**(W+P+G) / sum)`` by a radix-4
    restoring divider, two quotient bits per cycle (``nd = ceil(recip_width / 2)`` cycles, see
    :func:`divider_steps`); ``p = (e * R + 2**(W+G-1)) >> (W+G)``: round half up, computed as
    ``(e * R >> (W+G)) + bit W+G-1 of e * R``.  Ties for the maximum need no rule (equal scores
    give equal ``e``).  Entries with ``keep = 0`` give ``p = 0``; a row with no kept entry gives
    all zeros (its ``sum`` is 0; the divider's result is then unused because every ``e`` is 0).

    Architecture
    ------------
    Four stages joined by multi-bank buffers; every block-RAM read lands in a register, the
    multipliers have registered inputs and outputs, and no carry chain follows another in one
    cycle (ECP5, nextpnr: 125.7 MHz for the default preset with 8 probability bits, 58.0 MHz
    before the pipelining; not re-measured at the default's 12 bits, where stage C's product
    ``e * R`` is 17 x 22 bits: two MULT18X18D and the adder that joins them, in one cycle):

    A. *ingest*: accepts ``s_in`` at one entry per cycle, writes ``(s, keep)`` into one bank of a
       two-bank score buffer (``2 * seq_len`` entries) and tracks the running maximum.
    B. *exponent*: an issue side reads a row back, one entry per cycle, into a 7-register
       pipeline (:data:`EXP_PIPE`: buffer data, ``delta``, ``delta * scale``, shift amount and
       table read, table data, ``e``) that writes ``e`` into one bank of a four-bank exponent
       buffer (``4 * seq_len`` entries) and accumulates ``sum``.  Each entry carries its row's
       parity, address, end mark and maximum, so the issue side takes the next row as soon as it
       has issued the last entry of the current one.  Two *row slots* (by row parity) hold a
       row's length, bank, running sum and done flag from its entry into B until the divider
       takes it: at most two rows are in B at once.
    D. *divider*: radix-4 restoring division (``nd`` cycles), free again as soon as C takes its
       quotient.
    C. *normalise*: reads ``e`` back (one row at a time, the next row issued right after the
       current one) and outputs ``p = round(e * R)`` through a 4-register pipeline (buffer data;
       ``e`` and ``R``; ``e * R``; ``p_out``) that stalls as a whole on ``p_out.ready`` (no entry
       is lost or repeated).

    Four exponent banks hold the rows in B (two), in D and in C; a row enters B only when its
    parity's slot is free, so no bank is reused early.

    Latency and throughput (no stalls, row of ``n`` entries, ``nd = ceil(recip_width / 2)``,
    measured by ``tests/test_softmax_unit.py``)
    ---------------------------------------------------------------------------------------
    First ``p_out`` beat ``2n + nd + 14`` cycles after the row's first ``s_in`` beat is accepted
    (``n + nd + 15`` after its last one: stage B re-reads the row before the divider starts);
    the row's last beat ``n - 1`` cycles after its first.  Successive rows overlap: one row per
    ``max(n + 1, nd + 1)`` cycles (ingest and issue, or the divider for short rows), i.e.
    ``n / max(n + 1, nd + 1)`` entries per cycle: 0.992 for full rows of the default preset
    (128 entries in 129 cycles; 134 before), 0.89 for tiny's 8-entry rows (9 cycles; 16 before
    with a radix-2 divider and stages that held a row until their pipeline drained).
    ``s_in.ready`` drops for one cycle after each row's last entry (while stage A hands the row
    to B), longer when B cannot yet take it.  ``p_out`` beats of one row come out back to back
    when the sink is ready.
    """

    def __init__(self, cfg: HDPConfig) -> None:
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        self._consts = softmax_constants(cfg)
        # Internal widths and the rounding bias, kept as attributes so a test can build a
        # deliberately broken variant (never narrower than these in a real build).
        self._sum_width = cfg.exp_sum_width
        self._round_bias = 1 << (cfg.exp_bits + cfg.recip_guard - 1)
        super().__init__({
            "s_in": In(stream.Signature(s_in_layout(cfg))),
            "p_out": Out(stream.Signature(p_out_layout(cfg))),
            "busy": Out(1),
        })

    @property
    def cfg(self) -> HDPConfig:
        return self._cfg

    @property
    def consts(self):
        """The :class:`golden.tables.SoftmaxConstants` this unit is built from."""
        return self._consts

    def elaborate(self, platform) -> Module:
        """The four stages in order A, B, D, C (the order matters where two stages assign the
        same register: the later assignment wins), sharing their signals through one dict."""
        m = Module()
        s = self._buffers(m)
        self._ingest(m, s)
        self._exponent_issue(m, s)
        self._exponent_pipe(m, s)
        self._divider(m, s)
        self._normalise(m, s)
        self._outputs(m, s)
        return m

    def _s_base(self, bank):
        """First address of score bank 0..1."""
        n_max = self._cfg.seq_len
        return Mux(bank, n_max, 0)

    def _e_base(self, bank):
        """First address of exponent bank 0..3."""
        n_max = self._cfg.seq_len
        return Mux(bank[1], Mux(bank[0], 3 * n_max, 2 * n_max), Mux(bank[0], n_max, 0))

    # ---------------------------------------------------------------- buffers
    def _buffers(self, m):
        """The score, exponent and table memories; returns the dict of shared widths and
        signals the stages fill in."""
        cfg, k = self._cfg, self._consts
        n_max = cfg.seq_len
        sw = cfg.score_width
        E = cfg.exp_frac
        ew = cfg.exp_value_width
        entry = data.StructLayout({"s": signed(sw), "keep": 1})

        m.submodules.s_buf = s_buf = Memory(shape=entry, depth=2 * n_max, init=[])
        s_wr = s_buf.write_port()
        s_rd = s_buf.read_port()
        m.submodules.e_buf = e_buf = Memory(shape=unsigned(ew), depth=_E_BANKS * n_max, init=[])
        e_wr = e_buf.write_port()
        e_rd = e_buf.read_port()
        m.submodules.exp_lut = exp_lut = Memory(shape=unsigned(ew), depth=1 << E, init=k.exp_lut)
        lut_rd = exp_lut.read_port()
        return {
            "iw": unsigned_width(n_max),    # holds 0..seq_len (lengths and counts)
            "nd": divider_steps(cfg),       # radix-4 steps: two quotient bits each
            "saw": len(s_rd.addr), "eaw": len(e_rd.addr),
            "s_wr": s_wr, "s_rd": s_rd, "e_wr": e_wr, "e_rd": e_rd, "lut_rd": lut_rd,
        }

    # ---------------------------------------------------------------- stage A: ingest
    def _ingest(self, m, s):
        sw, iw = self._cfg.score_width, s["iw"]
        s_wr = s["s_wr"]
        a_idx = Signal(iw)
        a_max = Signal(signed(sw))
        a_any = Signal()
        a_full = Signal()
        a_n = Signal(iw)
        a_bank = Signal()

        a_to_b = Signal()
        m.d.comb += self.s_in.ready.eq(~a_full)
        s_beat = self.s_in.payload
        with m.If(self.s_in.valid & self.s_in.ready):
            m.d.comb += [
                s_wr.addr.eq(self._s_base(a_bank) + a_idx),
                s_wr.data.s.eq(s_beat.s),
                s_wr.data.keep.eq(s_beat.keep),
                s_wr.en.eq(1),
            ]
            m.d.sync += a_idx.eq(a_idx + 1)
            with m.If(s_beat.keep & (~a_any | (s_beat.s > a_max))):
                m.d.sync += [a_max.eq(s_beat.s), a_any.eq(1)]
            with m.If(s_beat.last):
                m.d.sync += [a_full.eq(1), a_n.eq(a_idx + 1)]
        s.update(a_idx=a_idx, a_max=a_max, a_any=a_any, a_full=a_full, a_n=a_n, a_bank=a_bank,
                 a_to_b=a_to_b)

    # ---------------------------------------------------------------- stage B: exponents
    def _exponent_issue(self, m, s):
        """Stage B's row slots and issue side (takes a row from A, reads it back)."""
        k = self._consts
        sw, iw, saw, eaw, es = self._cfg.score_width, s["iw"], s["saw"], s["eaw"], self._sum_width
        a_idx, a_max, a_any, a_full, a_n, a_bank, a_to_b = (
            s[n] for n in ("a_idx", "a_max", "a_any", "a_full", "a_n", "a_bank", "a_to_b"))
        # Two row slots (by row parity) hold what a row leaves behind in stage B: its length,
        # exponent bank, running sum and "all exponents written" flag.  A row takes the slot of
        # its parity on entering B and frees it when the divider takes its sum.
        b_par = Signal()                    # parity of the next row to enter B
        e_next = Signal(2)                  # exponent bank of the next row to enter B
        sl_busy = [Signal(name=f"slot{p}_busy") for p in range(2)]
        sl_done = [Signal(name=f"slot{p}_done") for p in range(2)]
        sl_n = [Signal(iw, name=f"slot{p}_n") for p in range(2)]
        sl_ebase = [Signal(eaw, name=f"slot{p}_ebase") for p in range(2)]
        sl_sum = [Signal(es, name=f"slot{p}_sum") for p in range(2)]

        # issue side: one row at a time, one buffer read per cycle
        b_run = Signal()
        b_left = Signal(iw)
        b_saddr = Signal(saw)
        b_eaddr = Signal(eaw)
        b_rpar = Signal()
        b_m = Signal(signed(sw))
        b_lim = Signal(signed(sw + 1))      # m - delta_max: s below it clamps delta
        m.d.comb += a_to_b.eq(a_full & ~b_run & ~Mux(b_par, sl_busy[1], sl_busy[0]))

        with m.If(a_to_b):
            m.d.sync += [
                b_run.eq(1), b_left.eq(a_n), b_saddr.eq(self._s_base(a_bank)),
                b_eaddr.eq(self._e_base(e_next)),
                b_rpar.eq(b_par), b_m.eq(a_max), b_lim.eq(a_max - k.delta_max),
                b_par.eq(~b_par), e_next.eq(e_next + 1),
                a_full.eq(0), a_bank.eq(~a_bank), a_idx.eq(0), a_any.eq(0),
            ]
            for p in range(2):
                with m.If(b_par == p):
                    m.d.sync += [sl_busy[p].eq(1), sl_n[p].eq(a_n),
                                 sl_ebase[p].eq(self._e_base(e_next)), sl_sum[p].eq(0)]

        m.d.comb += s["s_rd"].addr.eq(b_saddr)
        with m.If(b_run):
            m.d.sync += [b_saddr.eq(b_saddr + 1), b_eaddr.eq(b_eaddr + 1), b_left.eq(b_left - 1)]
            with m.If(b_left == 1):
                m.d.sync += b_run.eq(0)
        s.update(sl_busy=sl_busy, sl_done=sl_done, sl_n=sl_n, sl_ebase=sl_ebase, sl_sum=sl_sum,
                 b_run=b_run, b_left=b_left, b_eaddr=b_eaddr, b_rpar=b_rpar, b_m=b_m, b_lim=b_lim)

    def _exponent_pipe(self, m, s):
        """Stage B's exponent pipeline (:data:`EXP_PIPE` registers), e write and row sums."""
        cfg, k = self._cfg, self._consts
        sw, eaw = cfg.score_width, s["eaw"]
        W, E = cfg.exp_bits, cfg.exp_frac
        ew = cfg.exp_value_width
        dw = k.delta_width
        shw = unsigned_width(W + 1)         # clamped shift amount t >> E
        s_rd, e_wr, lut_rd = s["s_rd"], s["e_wr"], s["lut_rd"]
        b_run, b_left, b_rpar, b_eaddr, b_m, b_lim = (
            s[n] for n in ("b_run", "b_left", "b_rpar", "b_eaddr", "b_m", "b_lim"))
        sl_sum, sl_done = s["sl_sum"], s["sl_done"]

        # the exponent pipeline: every entry carries its row's parity, its exponent address,
        # the end-of-row mark and (until used) the row maximum
        def stage(i, **extra):
            fields = {"v": 1, "last": 1, "par": 1, "ea": eaw, **extra}
            return Signal(data.StructLayout(fields), name=f"b_p{i}")

        p1 = stage(1, m=signed(sw), lim=signed(sw + 1))
        p2 = stage(2, m=signed(sw), lim=signed(sw + 1), s=signed(sw), keep=1)
        p3 = stage(3, keep=1)
        p4 = stage(4, keep=1)
        p5 = stage(5, sh=shw)
        p6 = stage(6, sh=shw, lut=ew)
        p7 = stage(7, e=ew)

        def carry(dst, src):
            return [dst.v.eq(src.v), dst.last.eq(src.last), dst.par.eq(src.par), dst.ea.eq(src.ea)]

        # 0 -> 1: issue (the score buffer reads at this edge)
        m.d.sync += [p1.v.eq(b_run), p1.last.eq(b_left == 1), p1.par.eq(b_rpar),
                     p1.ea.eq(b_eaddr), p1.m.eq(b_m), p1.lim.eq(b_lim)]
        # 1 -> 2: the score buffer's data registered
        m.d.sync += carry(p2, p1) + [p2.m.eq(p1.m), p2.lim.eq(p1.lim),
                                     p2.s.eq(s_rd.data.s), p2.keep.eq(s_rd.data.keep)]
        # 2 -> 3: delta = min(m - s, delta_max) (s < m - delta_max <=> m - s > delta_max);
        # only kept entries matter (keep masks e)
        diff = Signal(signed(sw + 1))
        m.d.comb += diff.eq(p2.m - p2.s)
        # into the DSP block's operand register (hw/dsp.py)
        p4_prod = registered_product(m, "exp_mul", Mux(p2.s < p2.lim, k.delta_max, diff[:dw]),
                                     k.scale, a_shape=unsigned(dw),
                                     into=Signal(dw + k.scale_width, name="b_p4_prod"))
        m.d.sync += carry(p3, p2) + [p3.keep.eq(p2.keep)]
        # 3 -> 4: the product delta * scale, in the DSP block's output register
        m.d.sync += carry(p4, p3) + [p4.keep.eq(p3.keep)]
        # 4 -> 5: t = product >> SCALE_SHIFT; table read of t mod 2**E (at this edge); shift
        # amount t >> E clamped to W + 1, and W + 1 for keep = 0 (table entries are below
        # 2**(W+1), so that shift gives e = 0)
        t4 = Signal(k.t_width)
        ti4 = Signal(max(1, k.t_width - E))
        m.d.comb += [t4.eq(p4_prod >> k.scale_shift), ti4.eq(t4 >> E), lut_rd.addr.eq(t4[:E])]
        m.d.sync += carry(p5, p4) + [p5.sh.eq(Mux(~p4.keep | (ti4 > W + 1), W + 1, ti4))]
        # 5 -> 6: the table's data registered
        m.d.sync += carry(p6, p5) + [p6.sh.eq(p5.sh), p6.lut.eq(lut_rd.data)]
        # 6 -> 7: e
        m.d.sync += carry(p7, p6) + [p7.e.eq(p6.lut >> p6.sh)]
        # 7: write e back, add it to its row's sum; the row's last entry marks the slot done
        m.d.comb += [e_wr.addr.eq(p7.ea), e_wr.data.eq(p7.e), e_wr.en.eq(p7.v)]
        for p in range(2):
            with m.If(p7.v & (p7.par == p)):
                m.d.sync += sl_sum[p].eq(sl_sum[p] + p7.e)
                with m.If(p7.last):
                    m.d.sync += sl_done[p].eq(1)

    # ---------------------------------------------------------------- stage D: divider
    def _divider(self, m, s):
        cfg = self._cfg
        W = cfg.exp_bits
        es = self._sum_width
        nq = cfg.recip_width
        iw, eaw, nd = s["iw"], s["eaw"], s["nd"]
        sl_busy, sl_done, sl_n, sl_ebase, sl_sum = (
            s[n] for n in ("sl_busy", "sl_done", "sl_n", "sl_ebase", "sl_sum"))
        # radix 4: each cycle the remainder gains two numerator bits (all zero) and the
        # largest of 3d, 2d, d, 0 not above it is subtracted; the quotient gains two bits
        d_par = Signal()                    # parity of the next row the divider takes
        d_busy = Signal()
        d_done = Signal()
        d_n = Signal(iw)
        d_ebase = Signal(eaw)
        d_d = Signal(es)
        d_d3 = Signal(es + 2)
        d_r = Signal(es)
        d_q = Signal(2 * nd)
        d_cnt = Signal(range(nd + 1))
        c_run = Signal()
        d_free = Signal()
        b_to_d = Signal()
        d_to_c = Signal()
        m.d.comb += [
            d_to_c.eq(d_done & ~c_run),
            d_free.eq(~d_busy & (~d_done | d_to_c)),
            b_to_d.eq(Mux(d_par, sl_done[1], sl_done[0]) & d_free),
        ]

        sum_sel = Signal(es)
        m.d.comb += sum_sel.eq(Mux(d_par, sl_sum[1], sl_sum[0]))
        with m.If(b_to_d):
            m.d.sync += [
                d_busy.eq(1), d_par.eq(~d_par),
                d_n.eq(Mux(d_par, sl_n[1], sl_n[0])), d_ebase.eq(Mux(d_par, sl_ebase[1], sl_ebase[0])),
                d_d.eq(sum_sel), d_d3.eq(sum_sel + (sum_sel << 1)),
                # 2**(W+P+G) = 2**(W-1) * 2**nq = r0 * 2**(2 nd) with r0 < 2**W <= sum: the
                # quotient fits 2 nd bits (its top one is 0 when nq is odd)
                d_r.eq((1 << (W - 1)) >> (2 * nd - nq)), d_q.eq(0), d_cnt.eq(nd),
            ]
            for p in range(2):
                with m.If(d_par == p):
                    m.d.sync += [sl_busy[p].eq(0), sl_done[p].eq(0)]

        r4 = Signal(es + 2)
        x1 = Signal(signed(es + 3))
        x2 = Signal(signed(es + 3))
        x3 = Signal(signed(es + 3))
        m.d.comb += [r4.eq(d_r << 2), x1.eq(r4 - d_d), x2.eq(r4 - (d_d << 1)), x3.eq(r4 - d_d3)]
        with m.If(d_busy):
            with m.If(~x3[-1]):
                m.d.sync += [d_r.eq(x3), d_q.eq(Cat(Const(3, 2), d_q[:-2]))]
            with m.Elif(~x2[-1]):
                m.d.sync += [d_r.eq(x2), d_q.eq(Cat(Const(2, 2), d_q[:-2]))]
            with m.Elif(~x1[-1]):
                m.d.sync += [d_r.eq(x1), d_q.eq(Cat(Const(1, 2), d_q[:-2]))]
            with m.Else():
                m.d.sync += [d_r.eq(r4), d_q.eq(Cat(Const(0, 2), d_q[:-2]))]
            m.d.sync += d_cnt.eq(d_cnt - 1)
            with m.If(d_cnt == 1):
                m.d.sync += [d_busy.eq(0), d_done.eq(1)]
        with m.If(d_to_c):
            m.d.sync += d_done.eq(0)
        s.update(d_busy=d_busy, d_done=d_done, d_n=d_n, d_ebase=d_ebase, d_q=d_q, c_run=c_run,
                 d_to_c=d_to_c)

    # ---------------------------------------------------------------- stage C: normalise
    def _normalise(self, m, s):
        cfg = self._cfg
        W, G = cfg.exp_bits, cfg.recip_guard
        ew = cfg.exp_value_width
        nq = cfg.recip_width
        iw, eaw, e_rd = s["iw"], s["eaw"], s["e_rd"]
        d_n, d_ebase, d_q, c_run, d_to_c = (s[n] for n in ("d_n", "d_ebase", "d_q", "c_run", "d_to_c"))
        c_left = Signal(iw)
        c_addr = Signal(eaw)
        c_q = Signal(nq)
        with m.If(d_to_c):
            m.d.sync += [c_run.eq(1), c_left.eq(d_n), c_addr.eq(d_ebase), c_q.eq(d_q[:nq])]

        # output pipeline, one entry per register, all advancing together when the p_out
        # register is empty or being taken: o1 = the e-buffer's read data, o2 = e and R
        # registered (multiplier inputs), o3 = e * R in pieces of at most 18 bits of R, each
        # in a DSP block's output register (hw/dsp.py), then the p_out register, which adds
        # the pieces and rounds.  With the pieces summed behind their DSPs into one o3
        # register, o2 -> DSP -> partial-product carry chain was the whole top's critical
        # path at nextpnr seed 2 (97.0 MHz).
        o1 = Signal(data.StructLayout({"v": 1, "last": 1, "q": nq}))
        o2 = Signal(data.StructLayout({"v": 1, "last": 1, "q": nq, "e": ew}))
        o3 = Signal(data.StructLayout({"v": 1, "last": 1}))
        out_valid = Signal()
        out_p = Signal(cfg.prob_width)
        out_last = Signal()
        advance = Signal()
        m.d.comb += [
            advance.eq(~out_valid | self.p_out.ready),
            e_rd.addr.eq(c_addr),
            e_rd.en.eq(advance),
        ]
        o3_parts = []
        for lo in range(0, nq, DSP_OPERAND_MAX):
            piece = o2.q[lo:lo + DSP_OPERAND_MAX]
            o3_parts.append(registered_product(
                m, f"out_mul_{lo}", o2.e, piece, a_shape=unsigned(ew),
                b_shape=unsigned(len(piece)), input_regs=False, ce_out=advance) << lo)
        # p = (e * R + bias) >> (W + G), its low prob_width bits (bias 2**(W+G-1): half up)
        sh = W + G
        rounded = Signal(max(ew + nq, self._round_bias.bit_length()) + 1)
        m.d.comb += rounded.eq(sum(o3_parts) + self._round_bias)
        with m.If(advance):
            m.d.sync += [
                o1.v.eq(c_run), o1.last.eq(c_left == 1), o1.q.eq(c_q),
                o2.v.eq(o1.v), o2.last.eq(o1.last), o2.q.eq(o1.q), o2.e.eq(e_rd.data),
                o3.v.eq(o2.v), o3.last.eq(o2.last),
                out_valid.eq(o3.v), out_last.eq(o3.last),
                out_p.eq(rounded[sh:sh + cfg.prob_width]),
            ]
            with m.If(c_run):
                m.d.sync += [c_addr.eq(c_addr + 1), c_left.eq(c_left - 1)]
                with m.If(c_left == 1):
                    m.d.sync += c_run.eq(0)
        s.update(o1=o1, o2=o2, o3=o3, out_valid=out_valid, out_p=out_p, out_last=out_last)

    # ---------------------------------------------------------------- ports
    def _outputs(self, m, s):
        """``p_out`` from the output register; ``busy`` while any stage holds a row."""
        sl_busy = s["sl_busy"]
        m.d.comb += [
            self.p_out.valid.eq(s["out_valid"]),
            self.p_out.payload.p.eq(s["out_p"]),
            self.p_out.payload.last.eq(s["out_last"]),
            self.busy.eq(s["a_full"] | (s["a_idx"] != 0) | s["b_run"] | sl_busy[0] | sl_busy[1]
                         | s["d_busy"] | s["d_done"] | s["c_run"] | s["o1"].v | s["o2"].v
                         | s["o3"].v | s["out_valid"]),
        ]
