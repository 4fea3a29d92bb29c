"""The self-test harness on a ULX3S (ECP5 85F): 25 MHz clock, UART TX on the FTDI port
(115200 baud: divisor 217), LEDs 0 ... 3 = pass, fail, busy, heartbeat, button ``fire 0``
(labelled F1) starts a new run."""

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from hw.board.selftest import SelfTest

__all__ = ["BoardTop", "BOARDS", "CLOCK_HZ", "board_platform"]

#: board name -> (amaranth-boards module, platform class)
BOARDS = {"ulx3s-85f": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform")}
CLOCK_HZ = 25_000_000


def board_platform(board: str):
    """The amaranth-boards platform class of ``board``; ``ImportError`` names the extra."""
    if board not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
    import importlib
    modname, cls = BOARDS[board]
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ImportError("amaranth-boards is not installed: install the 'board' extra "
                          "(pip install 'hdpgen[board]', or amaranth-boards==0.0.21)") from exc
    return getattr(mod, cls)


class BoardTop(Elaboratable):
    """Pins of the board around a :class:`~hw.board.selftest.SelfTest`."""

    def __init__(self, harness: SelfTest):
        self.harness = harness

    def elaborate(self, platform):
        m = Module()
        m.submodules.selftest = h = self.harness
        m.submodules.tx = tx = io.Buffer("o", platform.request("uart", 0, dir="-").tx)
        m.submodules.button = button = io.Buffer("i", platform.request("button_fire", 0,
                                                                         dir="-"))
        m.d.comb += [tx.o.eq(h.uart_tx), h.button.eq(button.i)]
        for i, sig in enumerate((h.led_pass, h.led_fail, h.led_busy, h.led_heartbeat)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(sig)
        return m
