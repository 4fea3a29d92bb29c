"""Loader: a head's input rows into the K, Q and V memories, and the integer pass's inputs."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from hw.axil import AxiStreamSignature
from hw.config import HDPConfig
from hw.score_unit import qk_row_layout

from .common import Dims, addr_width, in_lane_width, qk_mem_row, v_mem_row

__all__ = ["Loader"]


class Loader(wiring.Component):
    """Accepts the ``3L`` rows of a head (``L`` K rows, ``L`` Q rows, ``L`` V rows) on
    ``s_axis`` at one row per cycle and writes them into the K, Q and V memories.

    In a pruned head (``dense`` low) the K rows also go to the integer pass (``k_out``, the
    stream only waits if the score unit is not ready, which it always is at the start of a
    head), and a feeder reads the Q rows back from the Q memory (``q_rd``) into ``q_out`` at
    the integer pass's own pace: row ``i`` is read the cycle after it is written, and is on
    ``q_out`` from an output register two cycles later.  So the input stream never waits for the integer pass.

    Each K row's compensation ``c_j = ((2^F - 1) * sum_d k_F) >> 1`` (the ``comp``
    approximation, :func:`golden.approx.key_compensation`) is written into the compensation
    memory (``c_wr``) two cycles after the row: a registered sum of the fraction parts by
    groups of eight lanes, then the total and the scaling.  It is read only by the softmax
    stage, long after the head's load.

    ``start`` (one cycle, when the head's first beat is offered) resets the row counters;
    ``active`` is high while the sequencer loads; ``last`` marks the accept of the head's
    last V row.  ``s_axis.tlast`` is not used (the count decides).
    """

    def __init__(self, cfg: HDPConfig):
        self._cfg = cfg
        self._dims = d = Dims.of(cfg)
        aw = addr_width(d.N)
        super().__init__({
            "s_axis": In(AxiStreamSignature(in_lane_width(cfg) * d.D)),
            "start": In(1), "active": In(1), "valid_len": In(d.iw), "dense": In(1),
            "last": Out(1),
            "k_wr": In(WritePort.Signature(addr_width=aw, shape=qk_mem_row(cfg))),
            "q_wr": In(WritePort.Signature(addr_width=aw, shape=qk_mem_row(cfg))),
            "v_wr": In(WritePort.Signature(addr_width=aw, shape=v_mem_row(cfg))),
            "c_wr": In(WritePort.Signature(addr_width=aw, shape=unsigned(cfg.comp_width))),
            "q_rd": In(ReadPort.Signature(addr_width=aw, shape=qk_mem_row(cfg))),
            "k_out": Out(stream.Signature(qk_row_layout(cfg))),
            "q_out": Out(stream.Signature(qk_row_layout(cfg))),
        })

    def elaborate(self, platform):
        d = self._dims
        m = Module()
        L, dense = self.valid_len, self.dense
        row = Signal(d.iw)               # row of the current section
        sec = Signal(2)                  # 0 K, 1 Q, 2 V, 3 loaded
        lanes = data.ArrayLayout(in_lane_width(self._cfg), d.D)
        tin = data.View(lanes, self.s_axis.tdata)
        fire = Signal()
        m.d.comb += [
            self.k_out.valid.eq(self.active & ~dense & (sec == 0) & self.s_axis.tvalid),
            self.s_axis.tready.eq(self.active & ((sec != 0) | dense | self.k_out.ready)),
            fire.eq(self.s_axis.tvalid & self.s_axis.tready),
            self.last.eq(fire & (sec == 2) & (row + 1 == L)),
        ]
        for k, port in enumerate((self.k_wr, self.q_wr, self.v_wr)):
            m.d.comb += [port.addr.eq(row), port.en.eq(fire & (sec == k))]
            for e in range(d.D):
                m.d.comb += port.data[e].eq(tin[e].as_signed())
        for e in range(d.D):
            m.d.comb += self.k_out.payload[e].eq(tin[e].as_signed())
        with m.If(self.start):
            m.d.sync += [row.eq(0), sec.eq(0)]
        with m.Elif(fire):
            with m.If(row + 1 == L):
                m.d.sync += [row.eq(0), sec.eq(sec + 1)]
            with m.Else():
                m.d.sync += row.eq(row + 1)

        self._compensation(m, tin, fire & (sec == 0), row)

        # Q feeder: Q memory -> output register -> integer pass, at its pace.  The block
        # RAM's output only feeds the register (placed beside it), never the far consumer.
        qf_i = Signal(d.iw)              # next Q row to read
        qf_v = Signal()                  # q_rd.data holds a row not yet in the register
        qo_v = Signal()                  # the output register holds a row for q_out
        qo = Signal(qk_row_layout(self._cfg), name="q_out_reg")
        q_avail = Signal(d.iw)           # Q rows written so far
        adv, take = Signal(), Signal()
        m.d.comb += [
            q_avail.eq(Mux(sec == 1, row, Mux(sec == 0, 0, L))),
            take.eq(~qo_v | self.q_out.ready),       # the register is (or becomes) free
            adv.eq(~qf_v | take),                    # the memory's row moves on
            self.q_rd.addr.eq(qf_i), self.q_rd.en.eq(adv),
            self.q_out.valid.eq(qo_v), self.q_out.payload.eq(qo),
        ]
        with m.If(take):
            m.d.sync += qo_v.eq(qf_v)
            for e in range(d.D):
                m.d.sync += qo[e].eq(self.q_rd.data[e])
        with m.If(self.start):
            m.d.sync += qf_i.eq(0)
        with m.Elif(adv):
            m.d.sync += qf_v.eq(~dense & (qf_i < q_avail))
            with m.If(~dense & (qf_i < q_avail)):
                m.d.sync += qf_i.eq(qf_i + 1)
        return m

    def _compensation(self, m, tin, k_fire, row):
        """``c_wr``: the K row's ``((2^F - 1) * sum_d k_F) >> 1``, two registered steps."""
        cfg, d = self._cfg, self._dims
        F = cfg.qk_frac
        groups = [list(range(g, min(g + 8, d.D))) for g in range(0, d.D, 8)]
        part = [Signal(range(len(g) * ((1 << F) - 1) + 1), name=f"cpart_{n}")
                for n, g in enumerate(groups)]
        v1, a1 = Signal(), Signal.like(row)
        for p_sig, g in zip(part, groups):
            m.d.sync += p_sig.eq(sum(tin[e][:F] for e in g) if F else 0)
        m.d.sync += [v1.eq(k_fire), a1.eq(row)]
        total = Signal(range(d.D * ((1 << F) - 1) + 1))
        m.d.comb += total.eq(sum(part))
        # (2^F - 1) * total as a shift and a subtraction: a constant product stays in LUTs
        m.d.sync += [self.c_wr.en.eq(v1), self.c_wr.addr.eq(a1),
                     self.c_wr.data.eq(((total << F) - total) >> 1)]
