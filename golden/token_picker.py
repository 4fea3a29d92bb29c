"""Golden model of a Token-Picker decode step, specified to the bit (RTL twin: ``hw/decode``).

One call is one generated token: the queries of every query head for one position attend to
the ``n`` valid positions of a KV cache.  K is read from memory in chunks of ``chunk_bits`` bits,
most significant chunk first.  After each chunk every query head holds integer lower and upper
bounds ``L <= S <= U`` of each token's score; a token whose probability upper bound falls below
``eps`` is dropped for that head, and a token that no head of its KV group keeps is never read
again (neither its remaining K chunks nor its V row).  ``docs/token_picker.md`` states every rule
and the safety argument; the summary:

* Formats: ``q`` signed ``q_bits``, ``k`` signed ``k_bits``, ``v`` signed ``v_bits``, each with a
  power-of-two scale per head (``x_real = x_int * 2**-frac``; ``frac`` per query head for q, per
  KV head for k and v); K's channels carry one more power of two each, which the query absorbs
  (:func:`quantize_step`).  The score ``S = sum_d q_d k_d`` has ``sf = q_frac + k_frac``
  fraction bits.
* Chunk ``c`` (1-based) of ``k`` has ``w_c`` bits (``chunk_bits``, the last one shorter when
  ``chunk_bits`` does not divide ``k_bits``); ``r_c`` bits stay unknown after it and
  ``khigh_c = k >> r_c`` (arithmetic).  ``L_c = 2**r_c * (q . khigh_c) + (2**r_c - 1) * sum(q<0)``,
  ``U_c`` the same with ``sum(q>0)``; ``L = U = S`` after the last chunk.
* Pruning test of head ``h`` after chunk ``c``: ``m`` = the largest ``L`` of its alive tokens
  (those whose chunk ``c`` it examined), ``sigma = sum_j exp_lower(L_j - m)`` over every valid
  token with the latest ``L_j`` the head holds (a dropped token keeps the bound it was dropped
  with); drop alive ``i`` when ``L_i < m`` and
  ``exp_upper(U_i - m) * 2**eps_frac < eps_q * sigma`` with
  ``eps_q = floor(eps * 2**eps_frac)``.  ``exp_upper`` / ``exp_lower`` bound
  ``2**W * 2**(x * log2(e) / (sqrt(d) * 2**sf))`` from above / below with base-2 fixed-point
  tables, every rounding taken in the safe direction.
* After the last chunk: the integer base-2 softmax of :mod:`golden.softmax` over each head's
  survivors (scores rounded to ``sm_frac`` fraction bits first), P x V over the V rows its group
  reads, and the requantization of :mod:`golden.pv`.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from functools import cache
from types import SimpleNamespace

import numpy as np

from .intmath import best_frac_bits, quantize, shift_round_half_up
from .pv import requantize
from .softmax import softmax_rows
from .tables import SCALE_SHIFT

__all__ = ["TokenPickerConfig", "Quantized", "StepStats", "StepResult", "DecodeSummary",
           "quantize_heads", "channel_exponents", "quantize_step", "eps_q_of", "chunk_digits",
           "chunk_bounds", "exp_tables", "exp_scale", "exp_upper", "exp_lower", "denominator", "prune_test",
           "softmax_config", "to_softmax_frac", "decode_step", "dense_decode_step",
           "float_decode_step", "decode_steps", "MAX_D", "MAX_CACHE"]

#: Largest head dimension and cache length the integer widths are checked for (all products
#: stay below 2**62).
MAX_D = 4096
MAX_CACHE = 1 << 20


def _clog2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


# ---------------------------------------------------------------------------------- config
_RANGES = {
    "q_bits": (2, 16), "k_bits": (2, 16), "v_bits": (2, 16), "word_bits": (8, 4096),
    "eps_frac": (1, 24), "exp_frac": (0, 10), "exp_bits": (4, 24), "prob_frac": (1, 16),
    "sm_frac": (0, 16), "out_bits": (2, 32), "k_chan_shift": (0, 15), "k_center": (0, 1),
    "v_lo_bits": (0, 15),
}


@dataclass(frozen=True)
class TokenPickerConfig:
    """Number formats and table sizes of the decode step (all integers)."""
    q_bits: int = 8        #: signed query width
    k_bits: int = 12       #: signed key width
    chunk_bits: int = 4    #: bits of K read per chunk (the last chunk may be shorter)
    v_bits: int = 8        #: signed value width
    word_bits: int = 32    #: memory word; a token's chunk or V row is ceil(bits / word_bits) words
    eps_frac: int = 16     #: fraction bits of the eps register (eps_q = floor(eps * 2**eps_frac))
    exp_frac: int = 5      #: E: fraction bits of the base-2 exponents (tables of 2**E entries)
    exp_bits: int = 16     #: W: exponent values carry W fraction bits (2**W = 1.0)
    prob_frac: int = 8     #: P: fraction bits of the final probabilities
    sm_frac: int = 8       #: fraction bits of the scores handed to the final softmax (even)
    out_bits: int = 16     #: signed output width (saturating)
    out_frac: int = 8      #: output fraction bits
    #: largest per-channel exponent of K (0: one scale per KV head only).  Channel ``d`` of KV
    #: head ``g`` is stored as ``k * 2**(k_frac[g] + e[g, d])`` with ``e`` in
    #: ``[0, k_chan_shift]``, and the query is quantized as ``q * 2**-e`` so that the integer
    #: score is unchanged (:func:`quantize_step`)
    k_chan_shift: int = 7
    #: 1: before quantizing, each channel of each KV head is moved by a constant (the midpoint
    #: of its range over the cache) so that it is centred on 0.  The constant adds ``q . c`` to
    #: every token's score of a query head alike, which the softmax cancels: the step's
    #: decisions and outputs see the same attention, and the narrower range leaves room for a
    #: larger channel exponent (:func:`quantize_step`).  0: K as it comes.
    k_center: int = 1
    #: low bits of each V value that a KV head reads only for the tokens one of its query heads
    #: may give a probability of ``eps_v`` or more (0: V rows are read whole).  V is then stored
    #: as two planes, the high ``v_bits - v_lo_bits`` bits and the low ``v_lo_bits`` bits; a
    #: kept token whose low plane is not read is multiplied with its high bits and the low
    #: bits' midpoint (``(v >> v_lo_bits << v_lo_bits) + 2**(v_lo_bits - 1)``)
    v_lo_bits: int = 0

    def __post_init__(self):
        for name, (lo, hi) in _RANGES.items():
            _check_int(name, getattr(self, name), lo, hi)
        _check_int("chunk_bits", self.chunk_bits, 1, self.k_bits, "must be in [1, k_bits]")
        _check_int("out_frac", self.out_frac, 0, self.out_bits - 1, "must be in [0, out_bits - 1]")
        _check_int("k_chan_shift", self.k_chan_shift, 0, self.k_bits - 1,
                   "must be in [0, k_bits - 1]")
        _check_int("v_lo_bits", self.v_lo_bits, 0, self.v_bits - 1, "must be in [0, v_bits - 1]")
        if self.sm_frac % 2:
            raise ValueError(f"sm_frac must be even (the softmax tables take 2F fraction bits), "
                             f"not {self.sm_frac}")

    @property
    def n_chunks(self) -> int:
        return -(-self.k_bits // self.chunk_bits)

    @property
    def chunk_widths(self) -> tuple[int, ...]:
        """``w_c``: ``chunk_bits`` each, the last (least significant) one takes the rest."""
        n = self.n_chunks
        return (self.chunk_bits,) * (n - 1) + (self.k_bits - (n - 1) * self.chunk_bits,)

    @property
    def rest_bits(self) -> tuple[int, ...]:
        """``r_c``: key bits still unknown after chunk ``c`` (0 after the last)."""
        out, r = [], self.k_bits
        for w in self.chunk_widths:
            r -= w
            out.append(r)
        return tuple(out)

    def k_chunk_words(self, d: int) -> tuple[int, ...]:
        """Words of one token's chunk ``c``: ``ceil(d * w_c / word_bits)``."""
        return tuple(-(-d * w // self.word_bits) for w in self.chunk_widths)

    def v_part_words(self, d: int) -> tuple[int, int]:
        """Words of one token's V high plane (``v_bits - v_lo_bits`` bits per value) and low
        plane (``v_lo_bits``; 0 words when ``v_lo_bits = 0``)."""
        return (-(-d * (self.v_bits - self.v_lo_bits) // self.word_bits),
                -(-d * self.v_lo_bits // self.word_bits))

    def v_row_words(self, d: int) -> int:
        """Words of one token's whole V row (both planes)."""
        return sum(self.v_part_words(d))


def _check_int(name, value, lo, hi, rule=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} {rule or f'must be an integer in [{lo}, {hi}]'}, not {value!r}")


# ---------------------------------------------------------------------------------- quantization
@dataclass(frozen=True)
class Quantized:
    """Integers ``x`` (int64, heads first) with one power-of-two scale per head and optionally
    one more per channel (last axis), plus an optional offset per head and channel:
    ``x_real = x * 2**-(frac[head] + chan[head, channel]) + offset[head, channel]``.
    The arithmetic of a decode step reads only ``x`` and ``frac``; ``chan`` and ``offset`` say
    what the integers mean (K's per-channel exponents, their negation folded into the query,
    and K's centring, which the softmax cancels)."""
    x: np.ndarray
    frac: np.ndarray
    chan: np.ndarray | None = None
    offset: np.ndarray | None = None

    def _per_channel(self, a) -> np.ndarray:
        a = np.asarray(a, np.float64)
        return a.reshape((a.shape[0],) + (1,) * (np.ndim(self.x) - 2) + (a.shape[1],))

    def dequantize(self) -> np.ndarray:
        f = np.asarray(self.frac, np.float64).reshape((-1,) + (1,) * (np.ndim(self.x) - 1))
        if self.chan is not None:
            f = f + self._per_channel(self.chan)
        x = np.asarray(self.x, np.float64) * np.exp2(-f)
        return x if self.offset is None else x + self._per_channel(self.offset)


def quantize_heads(x, bits: int, frac=None) -> Quantized:
    """Quantize a float array (heads first) to signed ``bits`` bits per head: with ``frac`` given
    (an int or one per head) ``x_int = clamp(round_half_even(x * 2**frac))``, else each head gets
    the largest ``frac`` in ``[0, bits - 1]`` at which nothing clips (``best_frac_bits``)."""
    x = np.asarray(x, np.float64)
    h = x.shape[0]
    if frac is None:
        fr = np.array([best_frac_bits(x[i], bits) for i in range(h)], np.int64)
    else:
        fr = np.broadcast_to(np.asarray(frac, np.int64), (h,)).copy()
    xi = np.stack([quantize(x[i], bits, int(fr[i])) for i in range(h)])
    return Quantized(xi, fr)


def channel_exponents(k, cfg: TokenPickerConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(k_frac, e)`` of float K (n_kv, N, d): ``k_frac[g]`` the per-head ``frac`` of
    :func:`quantize_heads`, ``e[g, d]`` the largest exponent in ``[0, k_chan_shift]`` at which
    ``k * 2**(k_frac[g] + e)`` still clips nothing in channel ``d`` (``k_chan_shift`` for an
    all-zero channel)."""
    k = np.asarray(k, np.float64)
    n_kv, _, d = k.shape
    frac = np.array([best_frac_bits(k[g], cfg.k_bits) for g in range(n_kv)], np.int64)
    lo, hi = -(1 << (cfg.k_bits - 1)), (1 << (cfg.k_bits - 1)) - 1
    e = np.zeros((n_kv, d), np.int64)
    for x in range(cfg.k_chan_shift, 0, -1):
        r = np.rint(k * np.exp2(frac + x)[:, None, None])
        fits = (r.min(axis=1, initial=0) >= lo) & (r.max(axis=1, initial=0) <= hi)
        e = np.where((e == 0) & fits, x, e)
    return frac, e


def quantize_step(q, k, v, cfg: TokenPickerConfig):
    """Float q (n_q, d), K and V (n_kv, N, d) to the formats of ``cfg``: V with one scale per KV
    head; K with one per KV head times a power of two per channel (``k_chan_shift``; see
    :func:`channel_exponents`), which the query absorbs: channel ``d`` of query head ``h`` is
    quantized as ``q * 2**-e[g, d]`` (one scale per query head), so that ``q . k`` needs no
    per-channel shift and keeps ``sf = q_frac + k_frac`` fraction bits.  With ``k_center`` K is
    first centred per KV head and channel on the midpoint of its range over the ``N`` tokens
    given (K's ``offset``); the midpoint of a channel is ``(max + min) / 2``, the offset that
    minimises its largest magnitude."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    if q.ndim != 2 or k.ndim != 3 or k.shape[0] < 1 or q.shape[0] % k.shape[0] \
            or q.shape[1] != k.shape[2]:
        raise ValueError(f"q must have shape (n_q_heads, d) and k (n_kv_heads, N, d) with "
                         f"n_q_heads a multiple of n_kv_heads, not {q.shape} and {k.shape}")
    offset = None
    if cfg.k_center and k.shape[1]:
        offset = (k.max(axis=1) + k.min(axis=1)) / 2
        k = k - offset[:, None, :]
    kfrac, e = channel_exponents(k, cfg)
    kq = quantize_heads(k * np.exp2(e)[:, None, :], cfg.k_bits, kfrac)
    e_q = e[np.arange(q.shape[0]) // (q.shape[0] // k.shape[0])]
    qq = quantize_heads(q * np.exp2(-e_q), cfg.q_bits)
    return (Quantized(qq.x, qq.frac, -e_q), Quantized(kq.x, kq.frac, e, offset),
            quantize_heads(v, cfg.v_bits))


def eps_q_of(eps: float, cfg: TokenPickerConfig, name: str = "eps") -> int:
    """``floor(eps * 2**eps_frac)``: rounded down, so the register never exceeds ``eps``."""
    if not isinstance(eps, (int, float, np.floating, np.integer)) or not 0 <= float(eps) < 1:
        raise ValueError(f"{name} must be a number in [0, 1), not {eps!r}")
    q = math.floor(float(eps) * (1 << cfg.eps_frac))
    if eps > 0 and q == 0:
        raise ValueError(f"{name} = {eps!r} is below 2**-eps_frac = 2**-{cfg.eps_frac} and "
                         f"would prune nothing; raise eps_frac")
    return q


def coarse_v(v: np.ndarray, cfg: TokenPickerConfig) -> np.ndarray:
    """V as a token whose low plane is not read uses it: the high ``v_bits - v_lo_bits`` bits
    and the midpoint of the low ones (``v`` itself when ``v_lo_bits = 0``)."""
    lo = cfg.v_lo_bits
    v = np.asarray(v, np.int64)
    return v if lo == 0 else ((v >> lo) << lo) + (1 << (lo - 1))


# ---------------------------------------------------------------------------------- bounds
def chunk_digits(k: np.ndarray, cfg: TokenPickerConfig) -> np.ndarray:
    """Chunk ``c`` of every key value, shape ``(n_chunks,) + k.shape``: the first signed
    (``k >> r_1``), the others unsigned (``(k >> r_c) & (2**w_c - 1)``), so that
    ``khigh_c = (khigh_{c-1} << w_c) + digit_c`` and ``khigh_c = k >> r_c``."""
    k = np.asarray(k, np.int64)
    out = []
    for c, (w, r) in enumerate(zip(cfg.chunk_widths, cfg.rest_bits)):
        hi = k >> r
        out.append(hi if c == 0 else hi & ((1 << w) - 1))
    return np.stack(out)


def _bounds(a: np.ndarray, qneg: int, qpos: int, r: int):
    """``L, U`` from ``a = q . khigh`` with ``r`` unknown low bits."""
    base = np.asarray(a, np.int64) << r
    low = (1 << r) - 1
    return base + low * qneg, base + low * qpos


def chunk_bounds(q: np.ndarray, k: np.ndarray, cfg: TokenPickerConfig):
    """``L, U`` (int64, ``(n_chunks, N)``) of one query row ``q`` (d,) against keys ``k`` (N, d)
    after each chunk, from the chunks alone (no pruning)."""
    q = np.asarray(q, np.int64)
    qneg, qpos = int(q[q < 0].sum()), int(q[q > 0].sum())
    digits = chunk_digits(k, cfg)
    high = np.zeros_like(np.asarray(k, np.int64))
    lo, up = [], []
    for c, (w, r) in enumerate(zip(cfg.chunk_widths, cfg.rest_bits)):
        high = (high << w) + digits[c]
        low_c, up_c = _bounds(high @ q, qneg, qpos, r)
        lo.append(low_c)
        up.append(up_c)
    return np.stack(lo), np.stack(up)


# ---------------------------------------------------------------------------------- exponents
def _iroot_pow2(a: int, k: int) -> tuple[int, bool]:
    """``floor(2**(a / k))`` and whether it is exact, in integers."""
    g = int(2.0 ** (a / k))
    t = 1 << a
    while g ** k > t:
        g -= 1
    while (g + 1) ** k <= t:
        g += 1
    return g, g ** k == t


@cache
def exp_tables(exp_frac: int, exp_bits: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lut_dn, lut_up)``: ``floor`` and ``ceil`` of ``2**(W + f / 2**E)`` for ``f`` in
    ``[0, 2**E)``, computed with integer roots (no float rounding).  Entry 0 is ``2**W`` in both;
    every entry is below ``2**(W + 1)``."""
    k = 1 << exp_frac
    dn, up = [], []
    for f in range(k):
        g, exact = _iroot_pow2(exp_bits * k + f, k)
        dn.append(g)
        up.append(g if exact else g + 1)
    return tuple(dn), tuple(up)


@cache
def exp_scale(d: int, exp_frac: int) -> tuple[int, int]:
    """``(c_lo, c_hi)`` = floor and ceil of ``log2(e) / sqrt(d) * 2**(SCALE_SHIFT + E)``
    (60 significant digits; the value is never an integer since ``ln 2`` is transcendental,
    so ``c_hi = c_lo + 1``)."""
    with localcontext() as ctx:
        ctx.prec = 60
        val = Decimal(1 << (SCALE_SHIFT + exp_frac)) / (Decimal(2).ln() * Decimal(d).sqrt())
    c_lo = int(val)  # positive: int() floors
    return c_lo, c_lo + 1


def _ti_cap(n_cache: int) -> int:
    return _clog2(n_cache)


def exp_upper(x: np.ndarray, sf: int, d: int, n_cache: int, cfg: TokenPickerConfig) -> np.ndarray:
    """An upper bound of ``2**W * 2**(x * log2(e) / (sqrt(d) * 2**sf))`` for any integer ``x``
    (int64), except that the octave is capped at ``clog2(n_cache)``, where no token can be
    dropped whatever follows:

    ``t = ceil(x * C / 2**(SCALE_SHIFT + sf))`` with ``C = c_hi`` for ``x >= 0`` and ``c_lo``
    for ``x < 0``; ``ti = min(t >> E, clog2(n_cache))``, ``tf = t mod 2**E``;
    ``e = lut_up[tf] << ti`` for ``ti >= 0``, ``ceil(lut_up[tf] / 2**min(-ti, W + 2))`` else
    (so ``e >= 1``).  ``x`` is first clamped to ``[-X_lo, X_hi]`` where nothing changes beyond."""
    E, W = cfg.exp_frac, cfg.exp_bits
    c_lo, c_hi = exp_scale(d, E)
    sh = SCALE_SHIFT + sf
    cap = _ti_cap(n_cache)
    x_hi = -(-((cap + 1) << (E + sh)) // c_hi)
    x_lo = -(-((W + 2) << (E + sh)) // c_lo)
    x = np.clip(np.asarray(x, np.int64), -x_lo, x_hi)
    p = x * np.where(x >= 0, c_hi, c_lo)
    t = -((-p) >> sh)
    ti = np.minimum(t >> E, cap)
    tf = t & ((1 << E) - 1)
    lut = np.asarray(exp_tables(E, W)[1], np.int64)[tf]
    s = np.minimum(np.maximum(-ti, 0), W + 2)
    return np.where(ti >= 0, lut << np.maximum(ti, 0), (lut + (1 << s) - 1) >> s)


def exp_lower(y: np.ndarray, sf: int, d: int, cfg: TokenPickerConfig) -> np.ndarray:
    """A lower bound of ``2**W * 2**(y * log2(e) / (sqrt(d) * 2**sf))`` for integers ``y <= 0``:
    ``t = floor(y * c_hi / 2**(SCALE_SHIFT + sf))``, ``e = lut_dn[t mod 2**E] >> min(-(t >> E),
    W + 2)``; ``0 <= e <= 2**W`` and ``e = 2**W`` at ``y = 0``.  ``y`` is first clamped to
    ``>= -Y`` where the result is 0 anyway."""
    E, W = cfg.exp_frac, cfg.exp_bits
    _, c_hi = exp_scale(d, E)
    sh = SCALE_SHIFT + sf
    y_lo = -(-((W + 2) << (E + sh)) // c_hi)
    y = np.clip(np.asarray(y, np.int64), -y_lo, 0)
    t = (y * c_hi) >> sh
    s = np.minimum(-(t >> E), W + 2)
    tf = t & ((1 << E) - 1)
    return np.asarray(exp_tables(E, W)[0], np.int64)[tf] >> s


def denominator(lower: np.ndarray, upper: np.ndarray, counted: np.ndarray, m, sf, d: int,
                cfg: TokenPickerConfig) -> np.ndarray:
    """``sigma = sum over counted j of exp_lower(L_j - m)`` with ``L_j`` the latest lower bound
    the head holds for token ``j``: a certain lower bound of the softmax denominator
    ``sum_valid e(S_j - m)`` (every counted token is a valid token and ``L_j <= S_j``).
    One head per row: ``lower``, ``upper``, ``counted`` (..., N), ``m`` and ``sf`` scalars or
    (..., 1); returns int64 (...).  ``upper`` is unused (it is here so that a broken variant
    can be tested)."""
    counted = np.asarray(counted, bool)
    e = exp_lower(np.where(counted, lower - m, 0), sf, d, cfg)
    return np.where(counted, e, 0).sum(axis=-1)


def prune_test(lower, upper, alive, counted, sf, d: int, n_cache: int, eps_q: int,
               cfg: TokenPickerConfig) -> np.ndarray:
    """The tokens (bool mask) that a head drops after a chunk: alive, ``L_i < m`` and
    ``exp_upper(U_i - m) * 2**eps_frac < eps_q * sigma``, where ``m`` is the largest lower bound
    of the alive tokens and ``sigma`` sums over the ``counted`` tokens (every valid token: the
    alive ones with the bound of this chunk, the dropped ones with the bound they were dropped
    with).  One head per row: the arrays are (N,) with a scalar ``sf``, or (heads, N) with
    ``sf`` a scalar or one per head; the heads are independent."""
    alive = np.asarray(alive, bool)
    if eps_q == 0 or not alive.any():
        return np.zeros_like(alive)
    lower, upper = np.asarray(lower, np.int64), np.asarray(upper, np.int64)
    some = alive.any(axis=-1, keepdims=True)
    m = np.where(some, np.where(alive, lower, np.iinfo(np.int64).min).max(axis=-1, keepdims=True),
                 0)
    sf = np.asarray(sf, np.int64)
    sf = sf.reshape(sf.shape + (1,)) if sf.ndim else sf
    sigma = np.asarray(denominator(lower, upper, counted, m, sf, d, cfg))[..., None]
    e_up = exp_upper(np.where(alive, upper - m, 0), sf, d, n_cache, cfg)
    return alive & (lower < m) & ((e_up << cfg.eps_frac) < eps_q * sigma)


# ---------------------------------------------------------------------------------- softmax
def softmax_config(d: int, n_cache: int, cfg: TokenPickerConfig) -> SimpleNamespace:
    """The fields :func:`golden.softmax.softmax_rows` reads, for scores with ``sm_frac`` fraction
    bits (its ``qk_frac`` is ``sm_frac / 2``) and a row of ``n_cache`` entries."""
    guard = _clog2(n_cache) + 2
    return SimpleNamespace(exp_frac=cfg.exp_frac, exp_bits=cfg.exp_bits, prob_frac=cfg.prob_frac,
                           head_dim=d, qk_frac=cfg.sm_frac // 2, recip_guard=guard,
                           recip_shift=cfg.exp_bits + cfg.prob_frac + guard)


def to_softmax_frac(s: np.ndarray, sf: int, cfg: TokenPickerConfig) -> np.ndarray:
    """Scores with ``sf`` fraction bits to ``sm_frac``: round half up when ``sf > sm_frac``,
    an exact left shift otherwise."""
    return shift_round_half_up(s, sf - cfg.sm_frac)


def _pv_out(p_rows: np.ndarray, v_rows: np.ndarray, v_frac: int, cfg: TokenPickerConfig):
    acc = np.asarray(p_rows, np.int64) @ np.asarray(v_rows, np.int64)
    out_cfg = SimpleNamespace(out_shift=cfg.prob_frac + v_frac - cfg.out_frac, out_bits=cfg.out_bits)
    return acc, requantize(acc, out_cfg)


# ---------------------------------------------------------------------------------- checks
def _check_inputs(q: Quantized, k: Quantized, v: Quantized, n: int, cfg: TokenPickerConfig):
    qx, kx, vx = (np.asarray(a.x) for a in (q, k, v))
    if qx.ndim != 2:
        raise ValueError(f"q must have shape (n_q_heads, d), not {qx.shape}")
    if kx.ndim != 3:
        raise ValueError(f"k must have shape (n_kv_heads, N, d), not {kx.shape}")
    if vx.shape != kx.shape:
        raise ValueError(f"v must have the shape of k {kx.shape}, not {vx.shape}")
    n_q, d = qx.shape
    n_kv, n_cache, dk = kx.shape
    if dk != d:
        raise ValueError(f"k's head dimension must equal q's d = {d}, not {dk}")
    if not 1 <= d <= MAX_D:
        raise ValueError(f"d (head dimension) must be in [1, {MAX_D}], not {d}")
    if not 1 <= n_cache <= MAX_CACHE:
        raise ValueError(f"N (cache length) must be in [1, {MAX_CACHE}], not {n_cache}")
    if n_kv < 1 or n_q % n_kv:
        raise ValueError(f"n_q_heads = {n_q} must be a multiple of n_kv_heads = {n_kv} "
                         f"(grouped-query attention: query head h uses kv head h // "
                         f"(n_q_heads // n_kv_heads))")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_cache:
        raise ValueError(f"n (valid positions) must be an integer in [1, N] = [1, {n_cache}], "
                         f"not {n!r}")
    for name, a, heads, bits in (("q", q, n_q, cfg.q_bits), ("k", k, n_kv, cfg.k_bits),
                                 ("v", v, n_kv, cfg.v_bits)):
        x = np.asarray(a.x)
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, not {x.dtype}")
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"{name} values must lie in [{lo}, {hi}] ({name}_bits = {bits}), "
                             f"found [{x.min()}, {x.max()}]")
        fr = np.asarray(a.frac)
        if fr.shape != (heads,) or not np.issubdtype(fr.dtype, np.integer) or \
                fr.min() < 0 or fr.max() > bits - 1:
            raise ValueError(f"{name}.frac must hold one integer in [0, {name}_bits - 1] = "
                             f"[0, {bits - 1}] per head ({heads}), not {fr.tolist()!r}")
    _check_channels(q, k, n_kv, d)
    width = cfg.exp_bits + 1 + _clog2(n_cache) + cfg.eps_frac
    if width > 62:
        raise ValueError(f"exp_bits + 1 + clog2(N) + eps_frac must be <= 62 (the pruning "
                         f"comparison in int64), not {width}")


def _check_channels(q: Quantized, k: Quantized, n_kv: int, d: int):
    """K's per-channel exponents and the query's must cancel in ``q . k``: ``q.chan[h] =
    -k.chan[h // group]`` (or neither has any)."""
    if q.chan is None and k.chan is None:
        return
    if q.chan is None or k.chan is None:
        raise ValueError("q.chan and k.chan must both be given or both be None (the query "
                         "absorbs K's per-channel exponents)")
    kc, qc = np.asarray(k.chan), np.asarray(q.chan)
    if kc.shape != (n_kv, d) or not np.issubdtype(kc.dtype, np.integer):
        raise ValueError(f"k.chan must hold integers of shape (n_kv_heads, d) = {(n_kv, d)}, "
                         f"not {kc.dtype} {kc.shape}")
    n_q = np.asarray(q.x).shape[0]
    kv_of = np.arange(n_q) // (n_q // n_kv)
    if qc.shape != (n_q, d) or not np.array_equal(qc, -kc[kv_of]):
        raise ValueError("q.chan must be -k.chan of each query head's KV head: the query "
                         "absorbs K's per-channel exponents so that q . k needs no shift")


# ---------------------------------------------------------------------------------- results
@dataclass
class StepStats:
    """Counts of one decode step.  ``alive_q[h, c]`` (c < n_chunks) is how many tokens head
    ``h`` examines at chunk ``c + 1``; ``alive_q[h, n_chunks]`` how many it keeps.
    ``alive_kv[g, c]`` is how many tokens' chunk ``c + 1`` KV head ``g`` reads (the union over
    its query heads), ``alive_kv[g, n_chunks]`` how many V rows it reads."""
    n_valid: int
    n_chunks: int
    alive_q: np.ndarray
    alive_kv: np.ndarray
    k_chunks_read: np.ndarray    # (n_kv,)
    k_chunks_dense: int          # per KV head: n * n_chunks
    k_words_read: np.ndarray     # (n_kv,)
    k_words_dense: int           # per KV head
    v_rows_read: np.ndarray      # (n_kv,) V rows read (their high plane when v_lo_bits > 0)
    v_rows_dense: int            # per KV head: n
    v_lo_rows_read: np.ndarray   # (n_kv,) V low planes read (0 when v_lo_bits = 0)
    v_words_read: np.ndarray     # (n_kv,)
    v_words_dense: int           # per KV head
    mass_lost: np.ndarray        # (n_q,) float: exact-softmax mass of the dropped tokens
    max_dropped_prob: np.ndarray  # (n_q,) float: largest exact probability of a dropped token
    needed_q: np.ndarray         # (n_q,) tokens whose exact probability is >= eps: what an
    #                              oracle keeps, a lower bound of kept_q for any safe test

    @property
    def kept_q(self) -> np.ndarray:
        return self.alive_q[:, -1]

    @property
    def kept_kv(self) -> np.ndarray:
        return self.alive_kv[:, -1]


@dataclass
class StepResult:
    out: np.ndarray          # (n_q, d) int64, out_frac fraction bits
    acc: np.ndarray          # (n_q, d) P x V accumulators
    prob: np.ndarray         # (n_q, N) int64, prob_frac fraction bits, 0 where not kept
    keep: np.ndarray         # (n_q, N) tokens each head keeps to the end
    drop_chunk: np.ndarray   # (n_q, N) chunk after which the head dropped it; 0 kept, -1 invalid
    scores: np.ndarray       # (n_q, N) exact integer scores of the valid tokens (stats only)
    lower: np.ndarray        # (n_chunks, n_q, N) L where the head examined the token, else 0
    upper: np.ndarray        # (n_chunks, n_q, N)
    read: np.ndarray         # (n_chunks + 1, n_kv, N) K chunks read; last: V rows read
    read_v_lo: np.ndarray    # (n_kv, N) V low planes read (none when v_lo_bits = 0)
    stats: StepStats


def _float_probs(scores: np.ndarray, sf: np.ndarray, n: int, d: int) -> np.ndarray:
    """Exact (float64) softmax of the integer scores over the ``n`` valid tokens."""
    z = np.asarray(scores[:, :n], np.float64) * np.exp2(-np.asarray(sf, np.float64))[:, None]
    z = z / math.sqrt(d)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------- decode step
def decode_step(q: Quantized, k: Quantized, v: Quantized, n: int, eps: float,
                cfg: TokenPickerConfig = TokenPickerConfig(), eps_v: float = 0.0) -> StepResult:
    """One Token-Picker decode step (see the module docstring and ``docs/token_picker.md``).
    ``eps_v`` matters only with ``cfg.v_lo_bits > 0``: after the last chunk, the test of the
    pruning rule at ``eps_v`` instead of ``eps`` marks the kept tokens whose V low plane a head
    can do without; a KV head reads it for the others (``eps_v = 0`` or ``eps = 0``: for every
    kept token)."""
    _check_inputs(q, k, v, n, cfg)
    eps_q = eps_q_of(eps, cfg)
    eps_v_q = eps_q_of(eps_v, cfg, "eps_v")
    qx, kx, vx = (np.asarray(a.x, np.int64) for a in (q, k, v))
    n_q, d = qx.shape
    n_kv, n_cache, _ = kx.shape
    group = n_q // n_kv
    kv_of = np.arange(n_q) // group
    sf = np.asarray(q.frac, np.int64) + np.asarray(k.frac, np.int64)[kv_of]
    nc = cfg.n_chunks
    digits = chunk_digits(kx, cfg)
    qneg = np.where(qx < 0, qx, 0).sum(axis=1)
    qpos = np.where(qx > 0, qx, 0).sum(axis=1)

    alive = np.zeros((n_q, n_cache), bool)
    alive[:, :n] = True
    drop_chunk = np.full((n_q, n_cache), -1, np.int64)
    drop_chunk[:, :n] = 0
    high = np.zeros_like(kx)          # khigh of the tokens read so far (stale for the others)
    lower = np.zeros((nc, n_q, n_cache), np.int64)
    upper = np.zeros((nc, n_q, n_cache), np.int64)
    read = np.zeros((nc + 1, n_kv, n_cache), bool)
    valid = np.arange(n_cache) < n
    last_lo = np.zeros((n_q, n_cache), np.int64)   # latest bounds each head holds per token
    last_up = np.zeros((n_q, n_cache), np.int64)
    alive_q = np.zeros((n_q, nc + 1), np.int64)

    for c, (w, r) in enumerate(zip(cfg.chunk_widths, cfg.rest_bits)):
        # the heads of one chunk are independent: all of them at once, one row per head
        rd = alive.reshape(n_kv, group, n_cache).any(axis=1)
        read[c] = rd
        high = np.where(rd[..., None], (high << w) + digits[c], high)   # only read chunks enter
        alive_q[:, c] = alive.sum(axis=1)
        lo, up = _bounds(np.einsum("hnd,hd->hn", high[kv_of], qx), qneg[:, None], qpos[:, None], r)
        lower[c] = np.where(alive, lo, 0)
        upper[c] = np.where(alive, up, 0)
        last_lo = np.where(alive, lo, last_lo)
        last_up = np.where(alive, up, last_up)
        counted = np.broadcast_to(valid, alive.shape)
        drop = prune_test(last_lo, last_up, alive, counted, sf, d, n_cache, eps_q, cfg)
        if c == nc - 1:         # the same test at eps_v, on the same bounds, m and sigma
            need_lo = alive & ~drop       # (eps = 0 is the dense step: everything read whole)
            if eps_q:
                need_lo &= ~prune_test(last_lo, last_up, alive, counted, sf, d, n_cache,
                                       eps_v_q, cfg)
        alive &= ~drop
        drop_chunk[drop] = c + 1

    read[nc] = alive.reshape(n_kv, group, n_cache).any(axis=1)
    read_v_lo = need_lo.reshape(n_kv, group, n_cache).any(axis=1) & (cfg.v_lo_bits > 0)
    alive_q[:, nc] = alive.sum(axis=1)

    prob = np.zeros((n_q, n_cache), np.int64)
    acc = np.zeros((n_q, d), np.int64)
    out = np.zeros((n_q, d), np.int64)
    smc = softmax_config(d, n_cache, cfg)
    for h in range(n_q):
        g, a = kv_of[h], alive[h]
        s_sm = to_softmax_frac(lower[nc - 1, h], int(sf[h]), cfg)
        prob[h] = softmax_rows(s_sm[None], a[None], smc)[0]
        rows = read[nc, g]                               # the V rows KV head g reads
        v_used = np.where(read_v_lo[g][:, None], vx[g], coarse_v(vx[g], cfg))
        acc[h], out[h] = _pv_out(prob[h, rows], v_used[rows], int(v.frac[g]), cfg)

    scores = np.zeros((n_q, n_cache), np.int64)
    scores[:, :n] = np.einsum("hd,hnd->hn", qx, kx[kv_of, :n])
    pf = _float_probs(scores, sf, n, d)
    dropped = ~alive[:, :n]
    mass = np.where(dropped, pf, 0.0)
    kw, (vw_hi, vw_lo) = cfg.k_chunk_words(d), cfg.v_part_words(d)
    k_chunks = read[:nc].sum(axis=2).T                   # (n_kv, nc)
    stats = StepStats(
        n_valid=n, n_chunks=nc, alive_q=alive_q,
        alive_kv=read.sum(axis=2).T.astype(np.int64),
        k_chunks_read=k_chunks.sum(axis=1), k_chunks_dense=n * nc,
        k_words_read=(k_chunks * np.asarray(kw)).sum(axis=1), k_words_dense=n * sum(kw),
        v_rows_read=read[nc].sum(axis=1), v_rows_dense=n,
        v_lo_rows_read=read_v_lo.sum(axis=1),
        v_words_read=read[nc].sum(axis=1) * vw_hi + read_v_lo.sum(axis=1) * vw_lo,
        v_words_dense=n * (vw_hi + vw_lo),
        mass_lost=mass.sum(axis=1), max_dropped_prob=mass.max(axis=1, initial=0.0),
        needed_q=(pf >= eps).sum(axis=1))
    return StepResult(out=out, acc=acc, prob=prob, keep=alive, drop_chunk=drop_chunk,
                      scores=scores, lower=lower, upper=upper, read=read, read_v_lo=read_v_lo,
                      stats=stats)


def dense_decode_step(q: Quantized, k: Quantized, v: Quantized, n: int,
                      cfg: TokenPickerConfig = TokenPickerConfig()):
    """The same integer semantics without pruning or chunks: scores ``q . k`` of all valid
    tokens, the final softmax and P x V.  Returns ``(out, acc, prob)``."""
    _check_inputs(q, k, v, n, cfg)
    qx, kx, vx = (np.asarray(a.x, np.int64) for a in (q, k, v))
    n_q, d = qx.shape
    n_kv, n_cache, _ = kx.shape
    kv_of = np.arange(n_q) // (n_q // n_kv)
    valid = np.arange(n_cache) < n
    smc = softmax_config(d, n_cache, cfg)
    prob = np.zeros((n_q, n_cache), np.int64)
    acc = np.zeros((n_q, d), np.int64)
    out = np.zeros((n_q, d), np.int64)
    for h in range(n_q):
        g = kv_of[h]
        sf = int(q.frac[h]) + int(k.frac[g])
        s = to_softmax_frac(kx[g] @ qx[h], sf, cfg)
        prob[h] = softmax_rows(s[None], valid[None], smc)[0]
        acc[h], out[h] = _pv_out(prob[h, :n], vx[g, :n], int(v.frac[g]), cfg)
    return out, acc, prob


def float_decode_step(q, k, v, n: int) -> np.ndarray:
    """Float64 reference: ``softmax(q k^T / sqrt(d)) v`` over the ``n`` valid positions of each
    query head's KV head (no quantization, no pruning)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    n_q, d = q.shape
    n_kv = k.shape[0]
    if n_kv < 1 or n_q % n_kv:
        raise ValueError(f"n_q_heads = {n_q} must be a multiple of n_kv_heads = {n_kv}")
    kv_of = np.arange(n_q) // (n_q // n_kv)
    s = np.einsum("hd,hnd->hn", q, k[kv_of, :n]) / math.sqrt(d)
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("hn,hnd->hd", p, v[kv_of, :n])


# ---------------------------------------------------------------------------------- many steps
@dataclass
class DecodeSummary:
    """Statistics of several decode steps, summed over steps and KV heads."""
    steps: list = field(default_factory=list)   # the StepResult of each step
    k_words_read: int = 0
    k_words_dense: int = 0
    k_chunks_read: int = 0
    k_chunks_dense: int = 0
    v_words_read: int = 0
    v_words_dense: int = 0
    v_rows_read: int = 0
    v_rows_dense: int = 0
    kept_q: int = 0          # sum over steps and query heads of the tokens kept
    needed_q: int = 0        # the same for the oracle (exact probability >= eps)
    valid_q: int = 0         # sum over steps and query heads of the valid tokens
    kept_kv: int = 0         # sum over steps and KV heads of the union kept
    valid_kv: int = 0
    max_mass_lost: float = 0.0
    max_dropped_prob: float = 0.0

    @property
    def k_fraction(self) -> float:
        return self.k_words_read / self.k_words_dense

    @property
    def v_fraction(self) -> float:
        return self.v_words_read / self.v_words_dense


def decode_steps(queries: Sequence[Quantized], k: Quantized, v: Quantized,
                 lengths: Sequence[int], eps: float,
                 cfg: TokenPickerConfig = TokenPickerConfig(),
                 eps_v: float = 0.0) -> DecodeSummary:
    """Run :func:`decode_step` once per position (query ``queries[t]`` over the first
    ``lengths[t]`` cache positions) and add up the statistics."""
    if len(queries) != len(lengths):
        raise ValueError(f"lengths must give one length per query step ({len(queries)}), "
                         f"not {len(lengths)}")
    s = DecodeSummary()
    for qt, n in zip(queries, lengths):
        r = decode_step(qt, k, v, n, eps, cfg, eps_v)
        st = r.stats
        n_kv = st.k_words_read.shape[0]
        s.steps.append(r)
        s.k_words_read += int(st.k_words_read.sum())
        s.k_words_dense += st.k_words_dense * n_kv
        s.k_chunks_read += int(st.k_chunks_read.sum())
        s.k_chunks_dense += st.k_chunks_dense * n_kv
        s.v_words_read += int(st.v_words_read.sum())
        s.v_words_dense += st.v_words_dense * n_kv
        s.v_rows_read += int(st.v_rows_read.sum())
        s.v_rows_dense += st.v_rows_dense * n_kv
        s.kept_q += int(st.kept_q.sum())
        s.needed_q += int(st.needed_q.sum())
        s.valid_q += n * st.kept_q.shape[0]
        s.kept_kv += int(st.kept_kv.sum())
        s.valid_kv += n * n_kv
        s.max_mass_lost = max(s.max_mass_lost, float(st.mass_lost.max()))
        s.max_dropped_prob = max(s.max_dropped_prob, float(st.max_dropped_prob.max()))
    return s
