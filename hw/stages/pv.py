"""P x V stage (P): a row group's probabilities times V on the array, requantized and sent."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from hw.axil import AxiStreamSignature
from hw.config import HDPConfig
from hw.systolic import op_layout, res_layout

from .common import Dims, addr_width, group_layout, key_layout, out_lane_width, prob_ports, v_mem_row

__all__ = ["PVStage"]


class PVStage(wiring.Component):
    """P: takes a group descriptor from M (``group_in``) and runs ``ceil(head_dim / C)`` P x V
    tiles on the array (``op``), each ``R`` rows x ``C`` output dimensions deep by the
    group's gathered keys: a six-stage feeder reads the key (``key_rd``), registers its row,
    reads the V row (``v_rd``) and registers it, reads the rows' probabilities (``prob_rd_r``)
    a stage later and registers the operands.  Results (``res``) are
    requantized (:func:`golden.pv.requantize`: round half up, saturate) into registers and
    the next cycle into an output buffer; then the group's rows leave on ``m_axis``
    (``tlast`` on the head's last row) and ``done`` pulses (``last``: it was the head's last
    group).
    """

    def __init__(self, cfg: HDPConfig):
        self._cfg = cfg
        self._dims = d = Dims.of(cfg)
        members = {
            "run": In(1), "valid_len": In(d.iw),
            "group_in": In(stream.Signature(group_layout(cfg))),
            "key_rd": In(ReadPort.Signature(addr_width=addr_width(3 * d.N),
                                            shape=key_layout(cfg))),
            "v_rd": In(ReadPort.Signature(addr_width=addr_width(d.N), shape=v_mem_row(cfg))),
            "op": Out(stream.Signature(op_layout(cfg, d.tagw))),
            "res": In(stream.Signature(res_layout(cfg, d.tagw))),
            "m_axis": Out(AxiStreamSignature(out_lane_width(cfg) * d.D)),
            "done": Out(1), "last": Out(1),
        }
        members.update(prob_ports(cfg, "rd"))
        super().__init__(members)

    def elaborate(self, platform):
        cfg, d = self._cfg, self._dims
        m = Module()
        pi = Signal(group_layout(cfg))         # the group being processed
        out_buf = [[Signal(signed(cfg.out_bits), name=f"out_{r}_{e}") for e in range(d.D)]
                   for r in range(d.R)]
        o_r = Signal(d.rw)
        pv_active = Signal()
        u, t = Signal(range(d.nu + 1)), Signal(d.iw)
        out = Signal(range(d.nu + 2))          # P x V tiles issued, results not all back
        fire = Signal()
        m.d.comb += fire.eq(self.op.valid & self.op.ready)

        # ---------------------------------------------------------------- feeder
        # issue (t, u) -> p1: key at the key memory's output -> p2: its row j registered, V
        # read -> p3: the V row at the memory's output, probability reads -> p4: the V row
        # registered (p4_v), the probabilities at their memories' outputs -> p5: the operands
        # registered (p4_v's lanes for p4's u).  A block RAM's output (about 5.8 ns on ECP5)
        # only ever feeds a register: never the lane select.
        adv = Signal()
        p_valid = [Signal(name=f"p{k}_valid") for k in range(1, 6)]
        p_t = [Signal(d.iw, name=f"p{k}_t") for k in range(1, 5)]
        p_u = [Signal(range(d.nu + 1), name=f"p{k}_u") for k in range(1, 6)]
        p2_j = Signal(d.iw)
        p4_v = Signal(v_mem_row(cfg))
        p_last = Signal()                      # p5: its key is the group's last (p4_t + 1 == nkept)
        m.d.comb += [adv.eq(~p_valid[4] | fire),
                     self.key_rd.addr.eq(t + pi.b3 * d.N), self.key_rd.en.eq(adv),
                     self.v_rd.addr.eq(p2_j), self.v_rd.en.eq(adv)]
        for r in range(d.R):
            port = getattr(self, f"prob_rd_{r}")
            m.d.comb += [port.addr.eq(p_t[2] + Mux(pi.b2, d.N, 0)), port.en.eq(adv)]
        op = self.op.payload
        ops = Signal.like(op)
        with m.If(adv):
            m.d.sync += [p_valid[0].eq(pv_active), p_t[0].eq(t), p_u[0].eq(u),
                         p2_j.eq(self.key_rd.data.j), p4_v.eq(self.v_rd.data),
                         p_last.eq(p_t[3] + 1 == pi.nkept)]
            m.d.sync += [p_valid[k].eq(p_valid[k - 1]) for k in range(1, 5)]
            m.d.sync += [p_t[k].eq(p_t[k - 1]) for k in range(1, 4)]
            m.d.sync += [p_u[k].eq(p_u[k - 1]) for k in range(1, 5)]
            for r in range(d.R):
                m.d.sync += ops.a1[r].eq(getattr(self, f"prob_rd_{r}").data)
            for c in range(d.C):
                vsel = Array(p4_v[k * d.C + c] if k * d.C + c < d.D
                             else Const(0, cfg.v_bits) for k in range(d.nu))
                m.d.sync += ops.b1[c].eq(vsel[p_u[3]])
            with m.If(pv_active):
                with m.If(t + 1 == pi.nkept):
                    m.d.sync += [t.eq(0), u.eq(u + 1)]
                    with m.If(u + 1 == d.nu):
                        m.d.sync += pv_active.eq(0)
                with m.Else():
                    m.d.sync += t.eq(t + 1)

        # ---------------------------------------------------------------- operands
        m.d.comb += [op.eq(ops), op.last.eq(p_last),
                     op.tag.eq(Cat(p_u[4].as_unsigned() | Const(0, d.idxw), Const(0, 1),
                                   Const(1, 1))),
                     self.op.valid.eq(p_valid[4])]

        # ---------------------------------------------------------------- results
        res_last = Signal()
        self._requantize(m, out_buf, res_last)
        m.d.comb += self.res.ready.eq(1)
        m.d.sync += out.eq(out + (fire & self.op.payload.last) - res_last)

        # ---------------------------------------------------------------- control
        tout = data.View(data.ArrayLayout(signed(out_lane_width(cfg)), d.D),
                         self.m_axis.tdata)
        for e in range(d.D):
            # the row o_r, read in place: shifting the buffer's rows on each sent beat put the
            # handshake in front of all R x D words (the whole top's critical path at seed 2)
            m.d.comb += tout[e].eq(Array(out_buf[r][e] for r in range(d.R))[o_r])
        m.d.comb += self.m_axis.tlast.eq(pi.i0 + o_r + 1 == self.valid_len)
        sent = Signal()
        m.d.comb += sent.eq(self.m_axis.tvalid & self.m_axis.tready)
        with m.FSM(name="p_fsm") as fsm:
            with m.State("IDLE"):
                with m.If(self.run & self.group_in.valid):
                    m.d.sync += [pi.eq(self.group_in.payload), u.eq(0), t.eq(0),
                                 pv_active.eq(1)]
                    m.next = "PV"
            with m.State("PV"):
                with m.If(~pv_active & ~Cat(*p_valid).any() & (out == 0)
                          & ~(fire & self.op.payload.last)):
                    m.d.sync += o_r.eq(0)
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(sent):
                    m.d.sync += o_r.eq(o_r + 1)
                    with m.If(o_r + 1 == pi.nrows):
                        m.next = "IDLE"
        # plain, not under a state (Icarus: see ScoreStage)
        m.d.comb += [self.m_axis.tvalid.eq(fsm.ongoing("SEND")),
                     self.group_in.ready.eq(fsm.ongoing("IDLE") & self.run & self.group_in.valid),
                     self.done.eq(fsm.ongoing("SEND") & sent & (o_r + 1 == pi.nrows)),
                     self.last.eq(pi.i0 + d.R >= self.valid_len)]
        return m

    def _requantize(self, m, out_buf, res_last):
        """Result rows of a P x V tile into the output buffer (golden.pv.requantize): each row
        requantized into registers (``rq_*``, beside the array's result port), written into
        the buffer the next cycle (the buffer is far from the array; the rounding adder, the
        saturation and that distance in one cycle were the whole top's critical path).
        ``res_last`` pulses when a tile's last row is in the buffer."""
        cfg, d = self._cfg, self._dims
        sh = cfg.out_shift
        lo, hi = cfg.out_range
        res = self.res.payload

        def requant(x):
            y = (x + (1 << (sh - 1))) >> sh if sh > 0 else x << (-sh)
            return Mux(y > hi, hi, Mux(y < lo, lo, y))

        # one requantizer per array column, shared by every output dimension it writes
        rq = [Signal(signed(cfg.out_bits), name=f"rq_{c}") for c in range(d.C)]
        rq_last = Signal()
        m.d.sync += rq_last.eq(self.res.valid & res.last)
        m.d.sync += [rq[c].eq(requant(res.acc[c])) for c in range(d.C)]
        m.d.comb += res_last.eq(rq_last)
        # the buffer's write enables, one per (row, column group), decoded a cycle early and
        # registered beside rq: decoded from the registered valid, tag and row, they reached
        # the buffer's words across the die through two LUTs (the whole top's critical path at
        # nextpnr seed 1, 99.2 MHz, 8.9 ns of routing)
        rq_we = [[Signal(name=f"rq_we_{r}_{k}") for k in range(d.nu)] for r in range(d.R)]
        m.d.sync += [rq_we[r][k].eq(self.res.valid & (res.tag[:d.idxw] == k) & (res.row == r))
                     for r in range(d.R) for k in range(d.nu)]
        for k in range(d.nu):
            for r in range(d.R):
                with m.If(rq_we[r][k]):
                    for c in range(d.C):
                        if k * d.C + c < d.D:
                            m.d.sync += out_buf[r][k * d.C + c].eq(rq[c])
