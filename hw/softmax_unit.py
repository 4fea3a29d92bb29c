"""Bit-exact base-2 softmax over the kept scores of a row (twin of :mod:`golden.softmax`)."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.tables import softmax_constants
from hw.config import HDPConfig, unsigned_width

__all__ = ["SoftmaxUnit", "s_in_layout", "p_out_layout"]


def s_in_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``SoftmaxUnit.s_in``: one score of a row, its keep bit, end of row."""
    return data.StructLayout({"s": signed(cfg.score_width), "keep": 1, "last": 1})


def p_out_layout(cfg: HDPConfig) -> data.StructLayout:
    """Payload of ``SoftmaxUnit.p_out``: one probability (``prob_frac`` fraction bits), end of row."""
    return data.StructLayout({"p": unsigned(cfg.prob_width), "last": 1})


# Depth of the exponent pipeline (stage B): read of the score buffer, delta, t, table read.
_EXP_PIPE = 4


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
    ``sum = sum e`` (``exp_sum_width`` bits, exact); ``R = floor(2**(W+P+G) / sum)`` by a restoring
    divider, one quotient bit per cycle (``recip_width`` cycles); ``p = (e * R + 2**(W+G-1)) >>
    (W+G)``: round half up.  Ties for the maximum need no rule (equal scores give equal ``e``).
    Entries with ``keep = 0`` give ``p = 0``; a row with no kept entry gives all zeros (its
    ``sum`` is 0; the divider's result is then unused because every ``e`` is 0).

    Architecture
    ------------
    Four stages, each holding at most one row, joined by multi-bank buffers:

    A. *ingest*: accepts ``s_in`` at one entry per cycle, writes ``(s, keep)`` into one bank of a
       two-bank score buffer (``2 * seq_len`` entries) and tracks the running maximum.
    B. *exponent*: reads the row back (pipelined, 4 stages: buffer read, delta, ``t``, table
       read), writes ``e`` into one bank of a three-bank exponent buffer (``3 * seq_len``
       entries) and accumulates ``sum``.
    D. *divider*: restoring division, one quotient bit per cycle (``recip_width`` cycles).
    C. *normalise*: reads ``e`` back and outputs ``p = round(e * R)`` through a 2-register
       pipeline that stalls as a whole on ``p_out.ready`` (no entry is lost or repeated).

    Three exponent banks let B fill row ``i + 1`` while D divides row ``i`` and C empties row
    ``i - 1``.  A row moves on only when the next stage is empty, so no bank is reused early.

    Latency and throughput (no stalls, row of ``n`` entries, measured by
    ``tests/test_softmax_unit.py``)
    ---------------------------------------------------------------------------------------
    First ``p_out`` beat ``2n + recip_width + 9`` cycles after the row's first ``s_in`` beat is
    accepted (``n + recip_width + 10`` after its last one: stage B re-reads the row before the
    divider starts); the row's last beat ``n - 1`` cycles after its first.  Successive rows
    overlap: one row per ``max(n + 6, recip_width + 2)`` cycles (stage B, or the divider for
    short rows), i.e. ``n / max(n + 6, recip_width + 2)`` entries per cycle: 0.955 for full
    rows of the default preset (128 entries in 134 cycles), 0.5 for tiny's 8-entry rows (16
    cycles, divider-bound with ``recip_width`` = 14).
    ``s_in.ready`` drops while stage A holds a finished row that stage B cannot yet take (at
    least one cycle after each row's last entry).  ``p_out`` beats of one row come out back
    to back when the sink is ready.
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
        cfg, k = self._cfg, self._consts
        m = Module()
        n_max = cfg.seq_len
        sw = cfg.score_width
        W, E, G = cfg.exp_bits, cfg.exp_frac, cfg.recip_guard
        ew = cfg.exp_value_width
        es = self._sum_width
        nq = cfg.recip_width
        iw = unsigned_width(n_max)          # holds 0..seq_len (lengths and indices)
        dw = k.delta_width
        tw = k.t_width
        shw = unsigned_width(W + 1)         # clamped shift amount t >> E
        entry = data.StructLayout({"s": signed(sw), "keep": 1})

        # ---------------------------------------------------------------- buffers
        m.submodules.s_buf = s_buf = Memory(shape=entry, depth=2 * n_max, init=[])
        s_wr = s_buf.write_port()
        s_rd = s_buf.read_port()
        m.submodules.e_buf = e_buf = Memory(shape=unsigned(ew), depth=3 * n_max, init=[])
        e_wr = e_buf.write_port()
        e_rd = e_buf.read_port()
        m.submodules.exp_lut = exp_lut = Memory(shape=unsigned(ew), depth=1 << E, init=k.exp_lut)
        lut_rd = exp_lut.read_port()

        def bank_addr(bank, idx):
            return idx + Mux(bank, n_max, 0)

        def ebank_addr(bank, idx):  # bank in 0..2
            return idx + Mux(bank[1], 2 * n_max, Mux(bank[0], n_max, 0))

        # ---------------------------------------------------------------- stage A: ingest
        a_idx = Signal(iw)
        a_max = Signal(signed(sw))
        a_any = Signal()
        a_full = Signal()
        a_n = Signal(iw)
        a_bank = Signal()

        b_idle = Signal()
        a_to_b = Signal()
        m.d.comb += [
            self.s_in.ready.eq(~a_full),
            a_to_b.eq(a_full & b_idle),
        ]
        s_beat = self.s_in.payload
        with m.If(self.s_in.valid & self.s_in.ready):
            m.d.comb += [
                s_wr.addr.eq(bank_addr(a_bank, a_idx)),
                s_wr.data.s.eq(s_beat.s),
                s_wr.data.keep.eq(s_beat.keep),
                s_wr.en.eq(1),
            ]
            m.d.sync += a_idx.eq(a_idx + 1)
            with m.If(s_beat.keep & (~a_any | (s_beat.s > a_max))):
                m.d.sync += [a_max.eq(s_beat.s), a_any.eq(1)]
            with m.If(s_beat.last):
                m.d.sync += [a_full.eq(1), a_n.eq(a_idx + 1)]

        # ---------------------------------------------------------------- stage B: exponents
        b_run = Signal()
        b_done = Signal()
        b_n = Signal(iw)
        b_max = Signal(signed(sw))
        b_bank = Signal()
        b_ebank = Signal(2)
        b_issue = Signal(iw)
        b_sum = Signal(es)
        d_idle = Signal()
        b_to_d = Signal()
        m.d.comb += [
            b_idle.eq(~b_run & ~b_done),
            b_to_d.eq(b_done & d_idle),
        ]

        with m.If(a_to_b):
            m.d.sync += [
                b_run.eq(1), b_n.eq(a_n), b_max.eq(a_max), b_bank.eq(a_bank),
                b_issue.eq(0), b_sum.eq(0), b_ebank.eq(Mux(b_ebank == 2, 0, b_ebank + 1)),
                a_full.eq(0), a_bank.eq(~a_bank), a_idx.eq(0), a_any.eq(0),
            ]

        # pipeline registers: 1 = buffer data, 2 = delta, 3 = t, 4 = table data
        v = [Signal(name=f"b_v{i}") for i in range(1, _EXP_PIPE + 1)]
        adr = [Signal(iw, name=f"b_idx{i}") for i in range(1, _EXP_PIPE + 1)]
        keep = [Signal(name=f"b_keep{i}") for i in range(2, _EXP_PIPE + 1)]
        delta2 = Signal(dw)
        t3 = Signal(tw)
        sh4 = Signal(shw)

        issue = Signal()
        m.d.comb += [
            issue.eq(b_run & (b_issue < b_n)),
            s_rd.addr.eq(bank_addr(b_bank, b_issue)),
        ]
        with m.If(issue):
            m.d.sync += b_issue.eq(b_issue + 1)
        m.d.sync += [v[0].eq(issue), adr[0].eq(b_issue)]
        for i in range(1, _EXP_PIPE):
            m.d.sync += [v[i].eq(v[i - 1]), adr[i].eq(adr[i - 1])]

        # stage 1 -> 2: delta = min(m - s, delta_max); only kept entries matter (keep masks e)
        diff = Signal(signed(sw + 1))
        m.d.comb += diff.eq(b_max - s_rd.data.s)
        m.d.sync += [
            delta2.eq(Mux(diff > k.delta_max, k.delta_max, diff[:dw])),
            keep[0].eq(s_rd.data.keep),
        ]
        # stage 2 -> 3: t = (delta * scale) >> SCALE_SHIFT
        prod = Signal(dw + k.scale_width)
        m.d.comb += prod.eq(delta2 * k.scale)
        m.d.sync += [t3.eq(prod >> k.scale_shift), keep[1].eq(keep[0])]
        # stage 3 -> 4: table read of t mod 2**E; shift amount t >> E clamped to W + 1
        ti3 = Signal(max(1, tw - E))
        m.d.comb += [
            ti3.eq(t3 >> E),
            lut_rd.addr.eq(t3[:E]),
        ]
        m.d.sync += [sh4.eq(Mux(ti3 > W + 1, W + 1, ti3)), keep[2].eq(keep[1])]
        # stage 4: e, write it back and accumulate
        e4 = Signal(ew)
        m.d.comb += [
            e4.eq(Mux(keep[2], lut_rd.data >> sh4, 0)),
            e_wr.addr.eq(ebank_addr(b_ebank, adr[3])),
            e_wr.data.eq(e4),
            e_wr.en.eq(v[3]),
        ]
        with m.If(v[3]):
            m.d.sync += b_sum.eq(b_sum + e4)
            with m.If(adr[3] == b_n - 1):
                m.d.sync += [b_run.eq(0), b_done.eq(1)]

        # ---------------------------------------------------------------- stage D: divider
        d_busy = Signal()
        d_done = Signal()
        d_n = Signal(iw)
        d_ebank = Signal(2)
        d_d = Signal(es)
        d_r = Signal(es + 1)
        d_q = Signal(nq)
        d_cnt = Signal(range(nq + 1))
        c_idle = Signal()
        d_to_c = Signal()
        m.d.comb += [
            d_idle.eq(~d_busy & ~d_done),
            d_to_c.eq(d_done & c_idle),
        ]

        with m.If(b_to_d):
            m.d.sync += [
                b_done.eq(0),
                d_busy.eq(1), d_n.eq(b_n), d_ebank.eq(b_ebank), d_d.eq(b_sum),
                # 2**(W+P+G) = 2**(W-1) * 2**nq and 2**(W-1) < sum: the quotient fits nq bits
                d_r.eq(1 << (W - 1)), d_q.eq(0), d_cnt.eq(nq),
            ]

        r2 = Signal(es + 2)
        m.d.comb += r2.eq(d_r << 1)
        with m.If(d_busy):
            with m.If(r2 >= d_d):
                m.d.sync += [d_r.eq(r2 - d_d), d_q.eq(Cat(1, d_q[:-1]))]
            with m.Else():
                m.d.sync += [d_r.eq(r2), d_q.eq(Cat(0, d_q[:-1]))]
            m.d.sync += d_cnt.eq(d_cnt - 1)
            with m.If(d_cnt == 1):
                m.d.sync += [d_busy.eq(0), d_done.eq(1)]

        # ---------------------------------------------------------------- stage C: normalise
        c_out = Signal()
        c_n = Signal(iw)
        c_ebank = Signal(2)
        c_q = Signal(nq)
        c_idx = Signal(iw)
        m.d.comb += c_idle.eq(~c_out)

        with m.If(d_to_c):
            m.d.sync += [
                d_done.eq(0),
                c_out.eq(1), c_n.eq(d_n), c_ebank.eq(d_ebank), c_q.eq(d_q), c_idx.eq(0),
            ]

        # output pipeline: o1 = data at the e-buffer read port, then the p_out register;
        # both advance together when the p_out register is empty or being taken
        o1_valid = Signal()
        o1_last = Signal()
        out_valid = Signal()
        out_p = Signal(cfg.prob_width)
        out_last = Signal()
        advance = Signal()
        o_issue = Signal()
        m.d.comb += [
            advance.eq(~out_valid | self.p_out.ready),
            o_issue.eq(c_out & (c_idx < c_n)),
            e_rd.addr.eq(ebank_addr(c_ebank, c_idx)),
            e_rd.en.eq(advance),
        ]
        rounded = Signal(ew + nq + 1)
        m.d.comb += rounded.eq(e_rd.data * c_q + self._round_bias)
        with m.If(advance):
            m.d.sync += [
                o1_valid.eq(o_issue),
                o1_last.eq(c_idx == c_n - 1),
                out_valid.eq(o1_valid),
                out_p.eq(rounded >> (W + G)),
                out_last.eq(o1_last),
            ]
            with m.If(o_issue):
                m.d.sync += c_idx.eq(c_idx + 1)
        with m.If(out_valid & self.p_out.ready & out_last):
            m.d.sync += c_out.eq(0)

        m.d.comb += [
            self.p_out.valid.eq(out_valid),
            self.p_out.payload.p.eq(out_p),
            self.p_out.payload.last.eq(out_last),
            self.busy.eq(a_full | (a_idx != 0) | ~b_idle | ~d_idle | ~c_idle | out_valid),
        ]
        return m
