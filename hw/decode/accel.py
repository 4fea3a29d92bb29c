"""The Token-Picker decode engine behind AXI4-Lite registers: :class:`DecodeAccel` wraps one
:class:`~hw.decode.engine.DecodeEngine` and replaces its setting and counter ports by the
register map of :func:`register_map`, served by :class:`hw.axil.AxiLiteRegs` on ``s_axil``.

The engine needs its settings held for a whole step, while a driver may want to program the
next step early.  So the registers are not wired to the engine directly: in every cycle in
which the engine is idle (``busy`` low, that is before and while its query beats arrive) a
copy of the setting registers is taken, and the engine works from that copy.  The step thus
runs with the values the registers held in the cycle its last query beat was accepted; a
write accepted while ``busy`` is high changes the register (it reads back at once) but only
the next step uses it.  A write whose response came back before the step's last query beat
was sent always counts for that step.  ``n`` is used clamped to ``1 ... N`` (it reads back as
written).
"""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hw.axil import AxiLiteRegs, AxiLiteSignature, Reg

from .engine import DecodeEngine
from .params import DecodeParams

__all__ = ["DecodeAccel", "register_map", "SETTINGS", "COUNTERS", "REG_ADDR_WIDTH",
           "STATUS_BUSY", "STATUS_RERR"]

#: Address bits of ``s_axil`` unless told otherwise (the map ends at 0x30).
REG_ADDR_WIDTH = 8
#: The read/write registers, each the engine port of the same name.
SETTINGS = ("eps_q", "n", "k_base", "v_base", "v_frac", "eps_v_q")
#: The read-only counters, each the engine port of the same name.
COUNTERS = ("k_words", "v_words", "cycles")
#: Bit of ``status`` that is high while a step runs.
STATUS_BUSY = 0
#: Bit of ``status`` that is high when a read of the current or last step answered SLVERR or
#: DECERR (cleared when the next step's last query beat arrives).
STATUS_RERR = 1
# Where bases are aligned: no burst of the engine may cross a 4 KB boundary.
_BASE_ALIGN = 4096


def _width(shape) -> int:
    return Shape.cast(shape).width


def _check_int(name: str, value, lo: int, hi: int, extra: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]{extra}, not {value!r}")
    return value


def register_map(p: DecodeParams, addr_width: int = 32, *, eps_q: int = 0, n: int | None = None,
                 k_base: int = 0, v_base: int = 0, v_frac: int = 0,
                 eps_v_q: int = 0) -> list[Reg]:
    """The registers of :class:`DecodeAccel` built for ``p`` with an ``addr_width``-bit
    ``m_axi``; the keywords are the reset values of the settings (``n`` defaults to
    ``p.n_cache``).  ``k_base`` and ``v_base`` take two words each (the upper one unused, and
    reading 0, while ``addr_width <= 32``).  Raises ValueError naming a bad argument."""
    if not isinstance(p, DecodeParams):
        raise ValueError(f"p must be a DecodeParams, not {p!r}")
    _check_int("addr_width", addr_width, 12, 64)
    cfg = p.cfg
    n = p.n_cache if n is None else n
    _check_int("eps_q", eps_q, 0, (1 << cfg.eps_frac) - 1)
    _check_int("eps_v_q", eps_v_q, 0, (1 << cfg.eps_frac) - 1)
    _check_int("n", n, 1, p.n_cache)
    for name, base in (("k_base", k_base), ("v_base", v_base)):
        _check_int(name, base, 0, (1 << addr_width) - _BASE_ALIGN, " and a multiple of 4096")
        if base % _BASE_ALIGN:
            raise ValueError(f"{name} must be a multiple of 4096 (no burst crosses 4 KB), "
                             f"not {base:#x}")
    _check_int("v_frac", v_frac, 0, cfg.v_bits - 1)
    return [
        Reg("eps_q", 0x00, cfg.eps_frac, True, eps_q),
        Reg("n", 0x04, _width(range(p.n_cache + 1)), True, n),
        Reg("k_base", 0x08, addr_width, True, k_base),
        Reg("v_base", 0x10, addr_width, True, v_base),
        Reg("v_frac", 0x18, _width(range(cfg.v_bits)), True, v_frac),
        Reg("status", 0x1C, 2, False),          # bit 0: busy, bit 1: read error
        Reg("k_words", 0x20, 32, False),
        Reg("v_words", 0x24, 32, False),
        Reg("cycles", 0x28, 32, False),
        Reg("eps_v_q", 0x2C, cfg.eps_frac, True, eps_v_q),
    ]


class DecodeAccel(wiring.Component):
    """:class:`~hw.decode.engine.DecodeEngine` with its settings and counters in AXI4-Lite
    registers (the module docstring says when a write takes effect; docs/token_picker.md
    lists the map).

    Parameters
    ----------
    p : DecodeParams
    addr_width : int
        Address bits of ``m_axi`` (12 ... 64), hence the width of ``k_base`` and ``v_base``.
    reg_addr_width : int
        Address bits of ``s_axil`` (6 ... 32).
    eps_q, n, k_base, v_base, v_frac, eps_v_q : int
        Reset values of the settings (see :func:`register_map`).

    Ports
    -----
    s_axil : In(AxiLiteSignature(reg_addr_width))
        The registers.
    s_axis, m_axis, m_axi :
        The engine's, passed through (:class:`~hw.decode.group.DecodeGroup` describes them).
    """

    def __init__(self, p: DecodeParams, addr_width: int = 32, *,
                 reg_addr_width: int = REG_ADDR_WIDTH, **init):
        try:
            _check_int("reg_addr_width", reg_addr_width, 6, 32)
            unknown = sorted(set(init) - set(SETTINGS))
            if unknown:
                raise ValueError(f"unknown reset value {unknown[0]!r}: the settings are "
                                 f"{', '.join(SETTINGS)}")
            self._regs = register_map(p, addr_width, **init)
            self._engine = DecodeEngine(p, addr_width)
        except ValueError:
            self._MustUse__silence = True  # a rejected build is not an unused elaboratable
            raise
        self.p = p
        self._reg_addr_width = reg_addr_width
        # A rule a test may switch off to build a broken variant (always on in a real build):
        # the engine's settings are copied from the registers only while it is idle (off:
        # in every cycle, so a write while busy changes the running step).
        self._hold_settings = True
        members = self._engine.signature.members
        super().__init__({
            "s_axil": In(AxiLiteSignature(reg_addr_width)),
            "s_axis": members["s_axis"],
            "m_axis": members["m_axis"],
            "m_axi": members["m_axi"],
        })

    @property
    def regs(self) -> list[Reg]:
        return list(self._regs)

    @property
    def engine(self) -> DecodeEngine:
        """The wrapped engine (a test may switch off one of its rules before elaboration)."""
        return self._engine

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = AxiLiteRegs(self._regs, addr_width=self._reg_addr_width)
        m.submodules.engine = eng = self._engine
        wiring.connect(m, wiring.flipped(self.s_axil), regs.s_axil)
        for name in ("s_axis", "m_axis", "m_axi"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(eng, name))
        init = {r.name: r.init for r in self._regs}
        for name in SETTINGS:
            port = getattr(eng, name)
            held = Signal(port.shape(), init=init[name], name=f"{name}_held")
            value = getattr(regs, name)
            if name == "n":     # outside 1 ... N the engine would scan past its memories
                value = Mux(value == 0, 1, Mux(value > self.p.n_cache, self.p.n_cache, value))
            with m.If(~eng.busy if self._hold_settings else 1):
                m.d.sync += held.eq(value)
            m.d.comb += port.eq(held)
        m.d.comb += regs.status.eq((eng.busy << STATUS_BUSY) | (eng.rerr << STATUS_RERR))
        m.d.comb += [getattr(regs, name).eq(getattr(eng, name)) for name in COUNTERS]
        return m
