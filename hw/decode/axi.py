"""A small AXI4 read master (AR and R channels only).

Amaranth has no AXI4 library; this is the subset the decode engine needs.  The signature's
members carry the AXI4 names, so a port called ``m_axi`` flattens to ``m_axi__araddr``,
``m_axi__arvalid``, ... and cocotbext-axi serves it with
``AxiRam(AxiReadBus.from_prefix(dut, "m_axi_"), ...)`` (its joiner adds the second ``_``).

Protocol as implemented:

* every request is one INCR burst (``arburst = 1``) of ``arlen + 1`` full-width beats
  (``arsize = log2(data_width / 8)``), ``arid = 0``; addresses must be aligned to the data width
  and a burst must not cross a 4 KB boundary (the caller's layout guarantees it);
* ``arvalid`` is held, with stable fields, until ``arready`` (AXI4 A3.2.1);
* up to ``depth`` bursts are outstanding; the slave returns them in order (one ID);
* each R beat is passed on with the tag its request carried; ``rresp != OKAY`` (SLVERR or
  DECERR) sets the sticky ``rerr`` output (the data is passed on regardless) until ``clear``.
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["AxiReadSignature", "AxiReadMaster"]


class AxiReadSignature(wiring.Signature):
    """AXI4 read address and read data channels, from the master's side."""

    def __init__(self, addr_width: int, data_width: int):
        if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
            raise ValueError(f"addr_width must be an integer in [12, 64], not {addr_width!r}")
        if not isinstance(data_width, int) or data_width not in (8, 16, 32, 64, 128, 256, 512, 1024):
            raise ValueError(f"data_width must be a power of two in [8, 1024] (AXI4 data bus), "
                             f"not {data_width!r}")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "arid": Out(1), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(1), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AxiReadSignature) and other.addr_width == self.addr_width
                and other.data_width == self.data_width)

    def __repr__(self):
        return f"AxiReadSignature({self.addr_width}, {self.data_width})"


class AxiReadMaster(wiring.Component):
    """Turns burst requests into AXI4 AR transfers and R beats into a tagged data stream.

    Ports
    -----
    cmd : In(stream {addr, len, tag})
        One burst: byte address, ``len`` = beats - 1 (0..255), a tag returned with its data.
    rd : Out(stream {data, last, tag})
        Every R beat in order; ``last`` on the burst's final beat.
    bus : Out(AxiReadSignature)
    idle : Out(1)
        No burst outstanding.
    rerr : Out(1)
        Sticky: some beat came back with ``rresp != OKAY`` since the last ``clear``.
    clear : In(1)
        Clears ``rerr`` (an error beat in the same cycle still sets it).
    """

    def __init__(self, addr_width: int, data_width: int, tag_width: int, depth: int = 4):
        if not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 64:
            raise ValueError(f"depth must be an integer in [1, 64], not {depth!r}")
        self._depth = depth
        self._tag_width = tag_width
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({
                "addr": unsigned(addr_width), "len": unsigned(8), "tag": unsigned(tag_width)}))),
            "rd": Out(stream.Signature(data.StructLayout({
                "data": unsigned(data_width), "last": 1, "tag": unsigned(tag_width)}))),
            "bus": Out(AxiReadSignature(addr_width, data_width)),
            "idle": Out(1),
            "rerr": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus, cmd, rd = self.bus, self.cmd, self.rd
        m.submodules.tags = tags = SyncFIFO(width=self._tag_width, depth=self._depth)
        size = (bus.signature.data_width // 8).bit_length() - 1
        m.d.comb += [
            bus.arid.eq(0), bus.araddr.eq(cmd.payload.addr), bus.arlen.eq(cmd.payload.len),
            bus.arsize.eq(size), bus.arburst.eq(1),
            bus.arvalid.eq(cmd.valid & tags.w_rdy),
            cmd.ready.eq(bus.arready & tags.w_rdy),
            tags.w_data.eq(cmd.payload.tag), tags.w_en.eq(cmd.valid & bus.arready & tags.w_rdy),
            rd.valid.eq(bus.rvalid), bus.rready.eq(rd.ready),
            rd.payload.data.eq(bus.rdata), rd.payload.last.eq(bus.rlast),
            rd.payload.tag.eq(tags.r_data),
            tags.r_en.eq(bus.rvalid & rd.ready & bus.rlast),
            self.idle.eq(tags.level == 0),
        ]
        with m.If(bus.rvalid & rd.ready & (bus.rresp != 0)):
            m.d.sync += self.rerr.eq(1)
        with m.Elif(self.clear):
            m.d.sync += self.rerr.eq(0)
        return m
