"""A small AXI4-Lite register slave, and the AXI4-Stream signature of the top.

Both signatures are plain :class:`wiring.Signature` objects whose members carry the AXI
names (``tdata``, ``tvalid``, ...), so a port called ``s_axis`` flattens to
``s_axis__tdata``, ``s_axis__tvalid`` ... in the exported Verilog.  cocotbext-axi finds
them with ``AxiStreamBus.from_prefix(dut, "s_axis_")`` and
``AxiLiteBus.from_prefix(dut, "s_axil_")`` (its prefix joiner adds the second ``_``).
"""

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiStreamSignature", "AxiLiteSignature", "Reg", "AxiLiteRegs"]


class AxiStreamSignature(wiring.Signature):
    """AXI4-Stream, as seen from the transmitter: ``tdata``, ``tvalid``, ``tlast`` out,
    ``tready`` in.  ``data_width`` must be a multiple of 8 (AXI4-Stream byte lanes)."""

    def __init__(self, data_width: int):
        if not isinstance(data_width, int) or data_width < 8 or data_width % 8:
            raise ValueError(f"data_width must be a positive multiple of 8, not {data_width!r}")
        self._data_width = data_width
        super().__init__({
            "tdata": Out(data_width),
            "tvalid": Out(1),
            "tlast": Out(1),
            "tready": In(1),
        })

    @property
    def data_width(self) -> int:
        return self._data_width

    def __eq__(self, other):
        return isinstance(other, AxiStreamSignature) and other.data_width == self.data_width

    def __repr__(self):
        return f"AxiStreamSignature({self._data_width})"


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, as seen from the master (32-bit data, ``addr_width`` address bits)."""

    def __init__(self, addr_width: int):
        if not isinstance(addr_width, int) or not 3 <= addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in [3, 32], not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, AxiLiteSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"AxiLiteSignature({self._addr_width})"


@dataclass(frozen=True)
class Reg:
    """One register: ``name``, byte address ``addr`` (word aligned), ``width`` bits
    (wider than 32 spans consecutive words, low word first), ``rw`` (writable by the bus;
    read-only registers are driven by the hardware) and the reset value ``init``."""
    name: str
    addr: int
    width: int
    rw: bool
    init: int = 0


class AxiLiteRegs(wiring.Component):
    """AXI4-Lite slave over a register map.

    Writable registers appear as ``Out`` ports named after them (their value), read-only
    registers as ``In`` ports.  Writes honour ``wstrb``; an address outside the map reads
    0 and ignores writes (response OKAY: the map is tiny and a SLVERR would only make SoC
    bring-up harder).

    Timing: a write is accepted when both ``awvalid`` and ``wvalid`` are high (``awready``
    and ``wready`` rise together) and the register changes on that clock edge; ``bvalid``
    follows one cycle later and holds until ``bready``.  A read is accepted when no read is
    under way; its address is registered, then ``rdata`` (a register) with ``rvalid`` two
    cycles after ``arvalid & arready``: the word is the register's value the cycle after
    the accept, so a read-only input may itself be registered (one cycle behind its source)
    and still read as its source did at the accept.  One outstanding transaction per
    direction: a write every other cycle, a read every third.
    """

    def __init__(self, regs: list[Reg], *, addr_width: int = 8):
        try:
            self._check(regs, addr_width)
        except ValueError:
            self._MustUse__silence = True  # a rejected map is not an unused elaboratable
            raise
        self._regs = list(regs)
        self._addr_width = addr_width
        members = {"s_axil": In(AxiLiteSignature(addr_width))}
        for r in regs:
            members[r.name] = Out(r.width, init=r.init) if r.rw else In(r.width)
        super().__init__(members)

    @staticmethod
    def _check(regs: list[Reg], addr_width: int) -> None:
        seen = {}
        for r in regs:
            if r.addr % 4:
                raise ValueError(f"register {r.name} address must be word aligned, not {r.addr:#x}")
            for w in range(-(-r.width // 32)):
                a = r.addr + 4 * w
                if a in seen:
                    raise ValueError(f"registers {seen[a]} and {r.name} overlap at {a:#x}")
                if a >= 1 << addr_width:
                    raise ValueError(f"register {r.name} at {a:#x} does not fit {addr_width} "
                                     f"address bits")
                seen[a] = r.name

    @property
    def regs(self) -> list[Reg]:
        return list(self._regs)

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axil

        # ---- write channel
        bvalid = Signal()
        m.d.comb += bus.bvalid.eq(bvalid)
        do_write = Signal()
        m.d.comb += [
            do_write.eq(bus.awvalid & bus.wvalid & ~bvalid),
            bus.awready.eq(do_write),
            bus.wready.eq(do_write),
            bus.bresp.eq(0),
        ]
        with m.If(do_write):
            m.d.sync += bvalid.eq(1)
        with m.Elif(bus.bready):
            m.d.sync += bvalid.eq(0)

        waddr = bus.awaddr[2:]
        for r in self._regs:
            if not r.rw:
                continue
            port = getattr(self, r.name)
            for w in range(-(-r.width // 32)):
                word = (r.addr >> 2) + w
                with m.If(do_write & (waddr == word)):
                    for byte in range(4):
                        lo = 32 * w + 8 * byte
                        if lo >= r.width:
                            break
                        hi = min(lo + 8, r.width)
                        with m.If(bus.wstrb[byte]):
                            m.d.sync += port[lo:hi].eq(bus.wdata[8 * byte:8 * byte + hi - lo])

        # ---- read channel: the address registered, then the register's word
        rvalid, rpend = Signal(), Signal()
        rdata = Signal(32)
        raddr = Signal(len(bus.araddr) - 2)
        m.d.comb += [bus.rvalid.eq(rvalid), bus.rdata.eq(rdata), bus.rresp.eq(0),
                     bus.arready.eq(~rvalid & ~rpend)]
        with m.If(bus.arvalid & ~rvalid & ~rpend):
            m.d.sync += [rpend.eq(1), raddr.eq(bus.araddr[2:])]
        with m.If(rpend):
            m.d.sync += [rpend.eq(0), rvalid.eq(1)]
            with m.Switch(raddr):
                for r in self._regs:
                    port = getattr(self, r.name)
                    for w in range(-(-r.width // 32)):
                        with m.Case((r.addr >> 2) + w):
                            m.d.sync += rdata.eq(port[32 * w:min(32 * w + 32, r.width)])
                with m.Default():
                    m.d.sync += rdata.eq(Const(0, unsigned(32)))
        with m.Elif(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        return m
