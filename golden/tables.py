"""Constant tables and constants of the softmax, generated here once for golden and RTL.

The softmax works in base 2 (see :mod:`golden.softmax`):

* ``scale`` = ``round(log2(e) / sqrt(d) * 2**(SCALE_SHIFT + E - 2F))`` turns a score
  difference (``2F`` fraction bits) into a base-2 exponent with ``E = exp_frac`` fraction bits:
  ``t = (delta * scale) >> SCALE_SHIFT``.
* ``exp_lut[f] = round(2**(W - f / 2**E))`` for ``f`` in ``[0, 2**E)``, ``W = exp_bits``;
  entry 0 is ``2**W`` (1.0).
* ``delta_max``: the smallest difference whose exponent is 0 whatever the table says
  (``t >> E >= W + 1``); hardware clamps ``delta`` to it, which changes no result and keeps
  the multiplier narrow.
"""

import math
from dataclasses import dataclass

__all__ = ["SCALE_SHIFT", "SoftmaxConstants", "softmax_constants"]

SCALE_SHIFT = 16


@dataclass(frozen=True)
class SoftmaxConstants:
    scale: int
    scale_shift: int
    delta_max: int
    exp_lut: tuple[int, ...]

    @property
    def delta_width(self) -> int:
        return max(1, self.delta_max.bit_length())

    @property
    def scale_width(self) -> int:
        return max(1, self.scale.bit_length())

    @property
    def t_width(self) -> int:
        """Unsigned width of ``t`` for a clamped delta."""
        return max(1, ((self.delta_max * self.scale) >> self.scale_shift).bit_length())


def softmax_constants(cfg) -> SoftmaxConstants:
    e, w, f = cfg.exp_frac, cfg.exp_bits, cfg.qk_frac
    scale = round(math.log2(math.e) / math.sqrt(cfg.head_dim) * 2.0 ** (SCALE_SHIFT + e - 2 * f))
    if scale < 1:
        raise ValueError(f"exp_frac = {e} is too small for qk_frac = {f} and head_dim = "
                         f"{cfg.head_dim}: the softmax scale rounds to 0")
    target = (w + 1) << e  # t >= target  =>  t >> E >= W + 1  =>  exponent 0
    delta_max = -(-(target << SCALE_SHIFT) // scale)
    lut = tuple(int(round(2.0 ** (w - i / (1 << e)))) for i in range(1 << e))
    return SoftmaxConstants(scale=scale, scale_shift=SCALE_SHIFT, delta_max=delta_max, exp_lut=lut)
