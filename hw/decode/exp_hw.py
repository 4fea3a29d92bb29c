"""Combinational exponent bounds, bit for bit :func:`golden.token_picker.exp_upper` and
:func:`golden.token_picker.exp_lower` (the score fraction ``sf`` is a run-time input: the clamp
limits are small tables indexed by it, and the shift ``SCALE_SHIFT + sf`` is a constant shift
followed by a variable one, which floors the same as one shift)."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned

from .params import SCALE_SHIFT, DecodeParams

__all__ = ["exp_upper_hw", "exp_lower_hw"]


def _lut(m: Module, table, idx, width: int, name: str) -> Signal:
    out = Signal(unsigned(width), name=name)
    if len(table) == 1:
        m.d.comb += out.eq(table[0])
    else:
        m.d.comb += out.eq(Array(Const(v, width) for v in table)[idx])
    return out


def _by_sf(values, sf, name: str, m: Module) -> Signal:
    out = Signal(range(max(values) + 1), name=name)
    m.d.comb += out.eq(Array(Const(v, len(out)) for v in values)[sf])
    return out


def exp_upper_hw(m: Module, x, sf, p: DecodeParams, name: str = "eup", *,
                 safe: bool = True) -> Signal:
    """``exp_upper(x)`` for a signed ``x`` (any width) and score fraction ``sf``.  ``safe=False``
    builds a deliberately non-conservative variant for tests (``t`` and the table rounded
    down, as for a lower bound)."""
    E, W = p.cfg.exp_frac, p.cfg.exp_bits
    c_lo, c_hi = p.scale
    lims = [p.up_limits(s) for s in range(p.sf_max + 1)]
    x_lo = _by_sf([a for a, _ in lims], sf, f"{name}_xlo", m)
    x_hi = _by_sf([b for _, b in lims], sf, f"{name}_xhi", m)
    xw = max(max(a, b) for a, b in lims).bit_length() + 2
    xc = Signal(signed(xw), name=f"{name}_x")
    m.d.comb += xc.eq(Mux(x < -x_lo, -x_lo, Mux(x > x_hi, x_hi, x)))
    prod = Signal(signed(xw + c_hi.bit_length() + 1), name=f"{name}_p")
    m.d.comb += prod.eq(xc * Mux(xc >= 0, c_hi, c_lo))
    neg = Signal(signed(len(prod) + 1), name=f"{name}_n")
    m.d.comb += neg.eq(-prod)
    t = Signal(signed(len(prod) + 1), name=f"{name}_t")          # ceil(prod / 2**(16 + sf))
    if safe:
        m.d.comb += t.eq(-((neg >> SCALE_SHIFT) >> sf))
    else:
        m.d.comb += t.eq((prod >> SCALE_SHIFT) >> sf)
    ti = Signal(signed(len(t)), name=f"{name}_ti")
    m.d.comb += ti.eq(t >> E)
    lut = _lut(m, p.tables[1 if safe else 0], t[:E], W + 1, f"{name}_lut")
    tic = Signal(range(p.cap + 1), name=f"{name}_tic")
    m.d.comb += tic.eq(Mux(ti > p.cap, p.cap, ti[:len(tic)]))
    s = Signal(range(W + 3), name=f"{name}_s")
    m.d.comb += s.eq(Mux(-ti > W + 2, W + 2, (-ti)[:len(s)]))
    out = Signal(unsigned(W + 1 + p.cap), name=name)
    ceil_sh = Signal(signed(W + 3), name=f"{name}_c")
    m.d.comb += ceil_sh.eq(-((-lut) >> s))             # ceil(lut / 2**s)
    m.d.comb += out.eq(Mux(ti >= 0, lut << tic, ceil_sh.as_unsigned()))
    return out


def exp_lower_hw(m: Module, y, sf, p: DecodeParams, name: str = "elo") -> Signal:
    """``exp_lower(y)`` for a signed ``y <= 0`` (clamped to ``[-y_lo, 0]`` first)."""
    E, W = p.cfg.exp_frac, p.cfg.exp_bits
    _, c_hi = p.scale
    lims = [p.lo_limit(s) for s in range(p.sf_max + 1)]
    y_lo = _by_sf(lims, sf, f"{name}_ylo", m)
    yw = max(lims).bit_length() + 2
    yc = Signal(signed(yw), name=f"{name}_y")
    m.d.comb += yc.eq(Mux(y < -y_lo, -y_lo, Mux(y > 0, 0, y)))
    prod = Signal(signed(yw + c_hi.bit_length() + 1), name=f"{name}_p")
    m.d.comb += prod.eq(yc * c_hi)
    t = Signal(signed(len(prod)), name=f"{name}_t")
    m.d.comb += t.eq((prod >> SCALE_SHIFT) >> sf)
    ti = Signal(signed(len(t)), name=f"{name}_ti")
    m.d.comb += ti.eq(t >> E)
    lut = _lut(m, p.tables[0], t[:E], W + 1, f"{name}_lut")
    s = Signal(range(W + 3), name=f"{name}_s")
    m.d.comb += s.eq(Mux(-ti > W + 2, W + 2, (-ti)[:len(s)]))
    out = Signal(unsigned(W + 1), name=name)
    m.d.comb += out.eq(lut >> s)
    return out
