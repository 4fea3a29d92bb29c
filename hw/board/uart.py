"""8N1 UART transmitter."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartTx"]


class UartTx(wiring.Component):
    """8N1 transmitter: ``divisor`` clock cycles per bit, LSB first, idle high.

    ``valid``/``ready`` handshake on ``data``: a byte is taken in a cycle where both are high;
    ``ready`` is low while a frame (start bit, 8 data bits, stop bit) is on the line.
    """

    data: In(8)
    valid: In(1)
    ready: Out(1)
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 2:
            raise ValueError(f"divisor must be an integer >= 2 (clock cycles per bit), "
                             f"not {divisor!r}")
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)   # stop bit, 8 data bits, start bit (shifted out LSB first)
        bits = Signal(range(11))         # bits still to send
        baud = Signal(range(self._divisor))
        m.d.comb += [self.ready.eq(bits == 0), self.tx.eq(shreg[0])]
        with m.If(bits == 0):
            with m.If(self.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.data, Const(1, 1))),
                             bits.eq(10), baud.eq(self._divisor - 1)]
        with m.Elif(baud == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                         baud.eq(self._divisor - 1)]
        with m.Else():
            m.d.sync += baud.eq(baud - 1)
        return m
