"""A tiny stream component that exists only to prove the simulation infrastructure.

It is not part of the accelerator.  ``tests/test_sim_infra.py`` exports it, runs
``sim.benches.bench_selftest`` on it in Icarus and Verilator, and runs the same check in
Amaranth's simulator.  Deliberately broken variants (``fault=...``) prove that the
stream monitor and the scoreboard catch real protocol and data bugs.
"""

from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SelftestStream", "FAULTS", "selftest_layout", "selftest_expected"]

FAULTS = (None, "drop", "change", "withdraw")


def selftest_layout(cfg) -> data.StructLayout:
    """Payload of both streams: one K-like row of ``head_dim`` signed ``qk_bits`` words
    and a ``last`` flag (the same shape the real units stream)."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(cfg.qk_bits), cfg.head_dim),
        "last": 1,
    })


def selftest_expected(cfg, payload_bits: int, mask: int) -> int:
    """Golden twin of :class:`SelftestStream`: the packed ``row`` bits XOR ``mask``,
    ``last`` passed through (all as packed payload integers)."""
    row_width = cfg.qk_bits * cfg.head_dim
    return payload_bits ^ (mask & ((1 << row_width) - 1))


class SelftestStream(wiring.Component):
    """Skid-buffered stream register with a run-time payload transform.

    Parameters
    ----------
    cfg : HDPConfig
        Only ``qk_bits`` and ``head_dim`` are used (payload shape, see :func:`selftest_layout`).
    fault : None, "drop", "change" or "withdraw"
        ``None`` is the correct design.  ``"drop"`` accepts input while the output stalls
        and loses it; ``"change"`` changes the output payload while ``o`` is valid and not
        ready; ``"withdraw"`` drops ``o.valid`` for a cycle while not ready.

    Ports
    -----
    i : In(stream), o : Out(stream)
        Payload :func:`selftest_layout`.  ``o.payload.row = i.payload.row ^ mask``.
    mask : In(qk_bits * head_dim)
        Run-time XOR mask, stable while data flows.

    Latency 1 cycle, throughput 1 beat per cycle under any backpressure pattern;
    ``i.ready`` is a register output (no combinational ready path).  Golden twin:
    :func:`selftest_expected`.
    """

    def __init__(self, cfg, *, fault: str | None = None):
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(map(str, FAULTS))}, not {fault!r}")
        self._cfg = cfg
        self._fault = fault
        layout = selftest_layout(cfg)
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(layout)),
            "mask": In(cfg.qk_bits * cfg.head_dim),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def fault(self) -> str | None:
        return self._fault

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        layout = selftest_layout(self._cfg)

        def transform(p):
            out = Signal(layout, name="xformed")
            m.d.comb += [
                out.row.eq(p.row.as_value() ^ self.mask),
                out.last.eq(p.last),
            ]
            return out

        skid = Signal(layout, name="skid")
        skid_valid = Signal(name="skid_valid")
        incoming = transform(self.i.payload)

        stalled = self.o.valid & ~self.o.ready
        if self._fault == "drop":
            m.d.comb += self.i.ready.eq(1)
        else:
            m.d.comb += self.i.ready.eq(~skid_valid)

        with m.If(~stalled):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(incoming), self.o.valid.eq(self.i.valid)]
        with m.Else():
            if self._fault != "drop":
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += [skid.eq(incoming), skid_valid.eq(1)]
            if self._fault == "change":
                m.d.sync += self.o.payload.row.eq(self.o.payload.row.as_value() ^ 1)
            if self._fault == "withdraw":
                m.d.sync += self.o.valid.eq(0)
        if self._fault == "withdraw":
            # come back with the same payload one cycle later
            withdrawn = Signal(name="withdrawn")
            m.d.sync += withdrawn.eq(stalled)
            with m.If(withdrawn & ~self.o.valid):
                m.d.sync += self.o.valid.eq(1)
        return m
