"""Bench of :class:`CombInitDut`: combinational outputs are defined from time 0 on every simulator.

Yosys's Verilog makes every ``always @*`` read a ``dump_module`` register whose time-0
initialisation is meant to run each process once.  ``hw.export`` rewrites that register's
declaration initialiser into an ``initial`` assignment, because Icarus under ``-g2012``
applies declaration initialisers without an event (see ``hw.export.fix_initializers``).

:class:`CombInitDut` is the smallest design that shows the difference: its outputs come from
``always @*`` processes whose only inputs are registers that keep their initial value (the
bench never loads them, and the reset rewrites the same value, so no event ever reaches the
processes).  Without the rewrite Icarus leaves the outputs X forever.
"""

import cocotb
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import ClockCycles, ReadOnly, Timer

from hw.config import HDPConfig
from sim.streams import reset, start_clock

__all__ = ["CombInitDut", "EXPECTED"]

# what the outputs must read while ``load`` and ``go`` stay low
EXPECTED = {"sel_out": 0x5A, "fsm_out": 0x3, "inv_out": 0x2}


class CombInitDut(wiring.Component):
    """Test design (no golden twin): ``sel_out`` is an ``m.Switch`` over a register that is
    only written when ``load`` is high, ``fsm_out`` a combinational output of an FSM that
    leaves its first state only when ``go`` is high, ``inv_out`` the register inverted (a
    continuous assignment, which Icarus evaluates at time 0 anyway).  Latency: outputs follow the registers
    combinationally.

    Parameters
    ----------
    cfg : HDPConfig
        Unused by the logic; taken first like every unit so that the export writes it
        into the JSON the bench reads.
    """

    load: In(1)
    d: In(2)
    go: In(1)
    sel_out: Out(8)
    fsm_out: Out(2)
    inv_out: Out(2)

    def __init__(self, cfg: HDPConfig):
        if not isinstance(cfg, HDPConfig):
            raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        r = Signal(2, init=1)
        with m.If(self.load):
            m.d.sync += r.eq(self.d)
        m.d.comb += self.inv_out.eq(~r)
        with m.Switch(r):
            with m.Case(0):
                m.d.comb += self.sel_out.eq(0x11)
            with m.Case(1):
                m.d.comb += self.sel_out.eq(EXPECTED["sel_out"])
            with m.Default():
                m.d.comb += self.sel_out.eq(0xC3)
        with m.FSM(name="ctl"):
            with m.State("IDLE"):
                m.d.comb += self.fsm_out.eq(EXPECTED["fsm_out"])
                with m.If(self.go):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.fsm_out.eq(1)
        return m


def _check(dut, when: str) -> None:
    for name, want in EXPECTED.items():
        value = getattr(dut, name).value
        if not value.is_resolvable:
            raise AssertionError(f"{when}: {name} is {value} (X/Z): a combinational process "
                                 f"never ran on {cocotb.SIM_NAME}")
        if value.to_unsigned() != want:
            raise AssertionError(f"{when}: {name} is {value.to_unsigned():#x}, expected {want:#x}")


@cocotb.test()
async def test_comb_outputs_defined(dut):
    """Outputs are defined before the first clock edge, after the reset and many cycles later."""
    for name in ("load", "d", "go"):
        getattr(dut, name).value = 0
    await Timer(1, "ns")
    await ReadOnly()
    _check(dut, "at 1 ns, before any clock edge")
    await Timer(1, "ns")
    clock = start_clock(dut)
    await reset(dut, clock)
    await ClockCycles(dut.clk, 5)
    await ReadOnly()
    _check(dut, "5 cycles after the reset")
