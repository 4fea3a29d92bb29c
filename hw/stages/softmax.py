"""Softmax stage (M): a row group's gathered scores through the softmax unit."""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from hw.config import HDPConfig
from hw.softmax_unit import p_out_layout, s_in_layout

from .common import Dims, addr_width, fine_layout, group_layout, key_layout, prob_ports

__all__ = ["SoftmaxStage"]


class SoftmaxStage(wiring.Component):
    """M: takes a group descriptor from S (``group_in``), feeds every gathered entry of each
    of its rows to the softmax unit (``sm_in``, one per cycle) and writes the probabilities
    coming back (``sm_out``) into the probability memory of the row (``prob_wr_r``).

    The feeder is six stages: issue (row, entry), key memory read (``key_rd``: the key's
    row ``j`` and block column ``c``), fine-score read (``fine_rd``), the fine-score word
    registered (with the key's compensation ``c_j`` from the compensation memory's
    asynchronous read, ``comp_addr``/``comp_data``, when ``comp`` is high), the entry's lane
    chosen from the word, and the entry register in front of the unit (the chosen score
    plus ``c_j``); an entry is kept when its row's own block-row mask keeps column ``c``
    (LeOPArd front end: when its tile entry's own keep bit is set) and, causal, ``j <= i``.
    A group starts when a probability bank is free (credits returned by ``p_done``, one per group P
    finishes); when the group's last probability is written, ``done`` pulses and the
    descriptor goes on to P (``group_out``, a one-entry register).
    """

    def __init__(self, cfg: HDPConfig):
        self._cfg = cfg
        self._dims = d = Dims.of(cfg)
        members = {
            "clear": In(1), "run": In(1), "causal": In(1), "p_done": In(1), "comp": In(1),
            "comp_addr": Out(addr_width(d.N)), "comp_data": In(cfg.comp_width),
            "group_in": In(stream.Signature(group_layout(cfg))),
            "group_out": Out(stream.Signature(group_layout(cfg))),
            "done": Out(1),
            "key_rd": In(ReadPort.Signature(addr_width=addr_width(3 * d.N),
                                            shape=key_layout(cfg))),
            "fine_rd": In(ReadPort.Signature(addr_width=addr_width(2 * d.n_words),
                                             shape=fine_layout(cfg))),
            "sm_in": Out(stream.Signature(s_in_layout(cfg))),
            "sm_out": In(stream.Signature(p_out_layout(cfg))),
        }
        members.update(prob_ports(cfg, "wr"))
        super().__init__(members)

    def elaborate(self, platform):
        cfg, d = self._cfg, self._dims
        m = Module()
        N, C, R = d.N, d.C, d.R
        mi = Signal(group_layout(cfg))         # the group being processed
        prob_cr = Signal(range(3), init=2)      # free probability banks
        # feeder: stage 0 issue (f_), 1 key read (s1_), 2 fine-score read (s2_)
        f_active, f_r, f_p = Signal(), Signal(d.rw), Signal(d.iw)
        f_word, f_lane = Signal(range(d.n_words + 1)), Signal(range(C))
        s1_valid, s1_r, s1_p = Signal(), Signal(d.rw), Signal(d.iw)
        s1_word, s1_lane = Signal(range(d.n_words + 1)), Signal(range(C))
        s2_valid, s2_r, s2_p, s2_lane = Signal(), Signal(d.rw), Signal(d.iw), Signal(range(C))
        s2_key = Signal(key_layout(cfg))
        # the row's query index i0 + r, formed as the entry enters stage 2 (mi holds still
        # while a group's entries are in the feeder): the adder in front of the causal
        # comparison, fed from s2_r (which also steers the lane choice 40 columns away), was
        # the whole top's critical path at nextpnr seeds 1 and 2 (83.2 and 85.1 MHz)
        s2_i = Signal(d.iw + 1)
        c_r, c_p = Signal(d.rw + 1), Signal(d.iw)    # collector: row, entry

        # ---------------------------------------------------------------- feeder
        advance = Signal()
        s4_valid = Signal()
        s4 = Signal.like(self.sm_in.payload)
        m.d.comb += [advance.eq(~s4_valid | self.sm_in.ready),
                     self.key_rd.addr.eq(f_p + mi.b3 * N), self.key_rd.en.eq(advance),
                     self.fine_rd.addr.eq(s1_word + Mux(mi.b2, d.n_words, 0)),
                     self.fine_rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1_valid.eq(f_active), s1_r.eq(f_r), s1_p.eq(f_p), s1_word.eq(f_word),
                         s1_lane.eq(f_lane),
                         s2_valid.eq(s1_valid), s2_r.eq(s1_r), s2_p.eq(s1_p), s2_lane.eq(s1_lane),
                         s2_i.eq(mi.i0 + s1_r), s2_key.eq(self.key_rd.data)]
            with m.If(f_active):
                with m.If(f_p + 1 == mi.nkept):
                    m.d.sync += [f_p.eq(0), f_word.eq(0), f_lane.eq(0), f_r.eq(f_r + 1)]
                    with m.If(f_r + 1 == mi.nrows):
                        m.d.sync += f_active.eq(0)
                with m.Else():
                    m.d.sync += f_p.eq(f_p + 1)
                    with m.If(f_lane == C - 1):
                        m.d.sync += [f_lane.eq(0), f_word.eq(f_word + 1)]
                    with m.Else():
                        m.d.sync += f_lane.eq(f_lane + 1)
        # stage 3: the fine-score word registered straight from the block RAM's output (about
        # 5.8 ns on ECP5), with the keep bit; stage 3b: the entry's lane chosen from the word
        # and registered (the 16:1 choice and the compensation adder in one cycle, routed
        # across the die between them, were the whole top's critical path at nextpnr seed 2,
        # 86.9 MHz); stage 4: the entry (score + c_j, keep, last) registered, so the softmax
        # unit's first stage follows a register
        own = Array(mi.rowmask[r] for r in range(R))[s2_r]
        s3_valid, s3_r, s3_lane = Signal(), Signal(d.rw), Signal(range(C))
        s3_keep, s3_last, s3_causal_ok = Signal(), Signal(), Signal()
        s3_word = Signal.like(self.fine_rd.data)
        s3_comp = Signal(cfg.comp_width)
        s3b_valid, s3b_keep, s3b_last, s3b_causal_ok = Signal(), Signal(), Signal(), Signal()
        s3b_lane = Signal(fine_layout(cfg).elem_shape)
        s3b_comp = Signal(cfg.comp_width)
        m.d.comb += self.comp_addr.eq(s2_key.j)
        with m.If(advance):
            m.d.sync += [
                s3_valid.eq(s2_valid), s3_r.eq(s2_r), s3_lane.eq(s2_lane),
                s3_word.eq(self.fine_rd.data),
                s3_comp.eq(Mux(self.comp, self.comp_data, 0)),
                s3_causal_ok.eq(~self.causal | (s2_key.j <= s2_i)),
                s3_keep.eq(own.bit_select(s2_key.c, 1) & (~self.causal | (s2_key.j <= s2_i))),
                s3_last.eq(s2_p + 1 == mi.nkept),
                s3b_valid.eq(s3_valid), s3b_keep.eq(s3_keep), s3b_last.eq(s3_last),
                s3b_causal_ok.eq(s3_causal_ok), s3b_comp.eq(s3_comp),
                s3b_lane.eq(s3_word[s3_r * C + s3_lane]),
                s4_valid.eq(s3b_valid), s4.last.eq(s3b_last),
            ]
            lane = s3b_lane
            if cfg.front_end == "hdp":
                m.d.sync += [s4.s.eq(lane + s3b_comp), s4.keep.eq(s3b_keep)]
            else:
                # LeOPArd: each entry carries its keep bit (rowmask is unused); the causal
                # test still masks the entries a row never computed
                m.d.sync += [s4.s.eq(lane.s), s4.keep.eq(lane.keep & s3b_causal_ok)]
        m.d.comb += [self.sm_in.valid.eq(s4_valid), self.sm_in.payload.eq(s4),
                     self.sm_out.ready.eq(1)]

        # ---------------------------------------------------------------- collector
        for r in range(R):
            port = getattr(self, f"prob_wr_{r}")
            m.d.comb += [port.addr.eq(c_p + Mux(mi.b2, N, 0)),
                         port.data.eq(self.sm_out.payload.p),
                         port.en.eq(self.sm_out.valid & (c_r == r))]
        with m.If(self.sm_out.valid):
            with m.If(self.sm_out.payload.last):
                m.d.sync += [c_p.eq(0), c_r.eq(c_r + 1)]
            with m.Else():
                m.d.sync += c_p.eq(c_p + 1)

        # ---------------------------------------------------------------- group in / out
        # (after the feeder and the collector: a start's resets take precedence)
        start = Signal()
        m.d.comb += start.eq(self.run & self.group_in.valid & (prob_cr != 0))
        with m.FSM(name="m_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [mi.eq(self.group_in.payload), f_active.eq(1), f_r.eq(0),
                                 f_p.eq(0), f_word.eq(0), f_lane.eq(0), c_r.eq(0), c_p.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.done):
                    m.next = "IDLE"
        # plain, not under a state (Icarus: see ScoreStage)
        m.d.comb += [self.done.eq(fsm.ongoing("RUN") & (c_r == mi.nrows)),
                     self.group_in.ready.eq(fsm.ongoing("IDLE") & start)]
        with m.If(self.clear):
            m.d.sync += prob_cr.eq(2)
        with m.Else():
            m.d.sync += prob_cr.eq(prob_cr + self.p_done - self.done)
        out_valid = Signal()
        m.d.comb += [self.group_out.valid.eq(out_valid)]
        with m.If(self.group_out.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(self.done):
            m.d.sync += [self.group_out.payload.eq(mi), out_valid.eq(1)]

        return m
