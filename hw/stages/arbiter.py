"""Array arbiter: the score stage and the P x V stage share the systolic array tile by tile."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import HDPConfig
from hw.systolic import op_layout, res_layout

from .common import Dims

__all__ = ["ArrayArbiter"]


class ArrayArbiter(wiring.Component):
    """Grants the array's operand stream to one stage for a whole tile, and routes results.

    ``s_op`` (score stage) and ``p_op`` (P x V stage) offer operand beats; ``op`` goes to
    :attr:`hw.systolic.SystolicArray.op_in`.  A free array goes to ``p_op`` first (the P x V
    stage drains groups, which frees buffers for the score stage), else to ``s_op``; the
    granted stage owns the array from its first offered beat until its tile's ``last`` beat
    is accepted, so an offered beat stays offered unchanged and the beats of two tiles never
    interleave (``tests/test_stages.py`` checks this under random traffic).
    The granted beat goes to the array through a two-entry register slice, so the stages
    never wait on the array's combinational ready (one cycle of latency, full rate).
    ``p_op.ready`` is itself a register, high whenever an offered P x V beat would be taken
    (so also while that stage offers nothing), never while the score stage owns the array.

    Results from the array (``res``) carry the kind in the top bit of their tag (0 score,
    1 P x V) and go out on ``res_s`` or ``res_p``.
    """

    def __init__(self, cfg: HDPConfig):
        self._dims = d = Dims.of(cfg)
        op = stream.Signature(op_layout(cfg, d.tagw))
        res = stream.Signature(res_layout(cfg, d.tagw))
        super().__init__({
            "s_op": In(op), "p_op": In(op), "op": Out(op),
            "res": In(res), "res_s": Out(res), "res_p": Out(res),
            "owner": Out(2),        # 0 free, 1 score stage, 2 P x V stage (for tests)
        })

    def elaborate(self, platform):
        m = Module()
        owner = self.owner
        grant_s, grant_p = Signal(), Signal()
        in_valid, in_ready = Signal(), Signal()
        in_data = Signal.like(self.op.payload)
        # p_op.ready: a register holding (owner != 1) & ~v1, the P x V stage's acceptance
        # whenever it offers a beat (a free array goes to it first).  Formed from owner's and
        # v1's next states, so the P x V feeder's advance (valid | ready, which enables its
        # block-RAM reads and operand registers all over the die) starts at a flip-flop:
        # owner -> grant -> ready -> advance was the whole top's critical path at nextpnr
        # seed 1 (94.8 MHz, 8.6 ns of routing).  Without a beat offered, ready may be high.
        p_ready = Signal(init=1)
        owner_n = Signal.like(owner)
        m.d.comb += [
            grant_p.eq((owner == 2) | ((owner == 0) & self.p_op.valid)),
            grant_s.eq((owner == 1) | ((owner == 0) & ~self.p_op.valid & self.s_op.valid)),
            in_valid.eq((grant_s & self.s_op.valid) | (grant_p & self.p_op.valid)),
            in_data.eq(Mux(grant_s, self.s_op.payload, self.p_op.payload)),
            self.s_op.ready.eq(grant_s & in_ready),
            self.p_op.ready.eq(p_ready),
            # an offered beat locks the grant too, so that a beat not taken yet is offered
            # again unchanged (the stream rule) even if the other stage asks meanwhile
            owner_n.eq(Mux(in_valid, Mux(in_ready & in_data.last, 0, Mux(grant_s, 1, 2)),
                           owner)),
        ]
        m.d.sync += owner.eq(owner_n)
        v1_n = self._slice(m, in_valid, in_ready, in_data)
        m.d.sync += p_ready.eq((owner_n != 1) & ~v1_n)

        self._route(m)
        return m

    def _slice(self, m, in_valid, in_ready, in_data):
        """A two-entry register slice towards the array: ``in_ready`` is a register
        (``~full``), so the stages' operand registers, whose clock enables fan out to
        thousands of flip-flops, never wait on the array's combinational ready; one beat per
        cycle at full rate, one cycle of latency.  Returns the next state of ``v1``."""
        v0, v1 = Signal(), Signal()
        v1_n = Signal()
        d0, d1 = Signal.like(in_data), Signal.like(in_data)
        push, pop = Signal(), Signal()
        m.d.comb += [in_ready.eq(~v1), self.op.valid.eq(v0), self.op.payload.eq(d0),
                     push.eq(in_valid & in_ready), pop.eq(v0 & self.op.ready)]
        m.d.comb += v1_n.eq(Mux(push & ~pop & v0, 1, Mux(~push & pop, 0, v1)))
        m.d.sync += v1.eq(v1_n)
        with m.If(push & pop):
            m.d.sync += d0.eq(in_data)
        with m.Elif(push):
            with m.If(v0):
                m.d.sync += d1.eq(in_data)
            with m.Else():
                m.d.sync += [d0.eq(in_data), v0.eq(1)]
        with m.Elif(pop):
            with m.If(v1):
                m.d.sync += d0.eq(d1)
            with m.Else():
                m.d.sync += v0.eq(0)
        return v1_n

    def _route(self, m):
        kind = self.res.payload.tag[-1]
        m.d.comb += [
            self.res_s.payload.eq(self.res.payload), self.res_p.payload.eq(self.res.payload),
            self.res_s.valid.eq(self.res.valid & ~kind),
            self.res_p.valid.eq(self.res.valid & kind),
            self.res.ready.eq(Mux(kind, self.res_p.ready, self.res_s.ready)),
        ]
