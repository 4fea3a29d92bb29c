"""Golden model of a LeOPArd-style bit-serial score front end with exact early termination.

An alternative front end to the HDP block pruner (RTL twin:
:class:`hw.leopard_engine.LeopardEngine`).  Each score ``S[i, j] = q_q[i] . k_q[j]`` is
computed bit-serially over the bits of ``k_q[j]``, most significant bit first, and the entry
is dropped as soon as even the largest value the
unprocessed bits could still add cannot lift it to the threshold ``th``.  Integer semantics
(``B = cfg.qk_bits``; ``docs/leopard.md`` says the same in prose):

1. ``k`` is ``B``-bit two's complement: bit ``B-1`` weighs ``-2**(B-1)``, bit ``t < B-1``
   weighs ``+2**t``.  Step ``b = 1..B`` processes bit ``t = B - b``.
2. After step ``b`` (``s = B - b`` bits left): ``P_b = sum_d q_d * ((k_d >> s) << s)``
   (arithmetic shift: the value of ``k``'s top ``b`` bits).  ``P_B = q_q . k_q`` exactly.
3. The left bits add ``sum_d q_d * r_d`` with ``0 <= r_d <= 2**s - 1``, so
   ``L_b <= S <= U_b`` with ``U_b = P_b + (2**s - 1) * Qpos``, ``L_b = P_b + (2**s - 1) * Qneg``,
   ``Qpos = sum_{q_d > 0} q_d`` and ``Qneg = sum_{q_d < 0} q_d`` (per query row).
4. A valid, non-diagonal entry *terminates* at the first ``b`` with ``U_b < th`` (strict) and
   is pruned; ``bits = b``.  ``U_B = S``, so reaching step ``B`` means the final comparison:
   an entry that never terminates has ``S >= th`` and is kept (``bits = B``).  Hence
   ``keep = valid & (S >= th)`` exactly; termination only saves bits.
5. The diagonal entry ``(i, i)``, ``i < valid_len``, is always computed to the end and kept
   (``bits = B``, never terminated), so no valid row is empty.  Masked entries cost 0 bits.
6. Kept entries carry their exact score ``S`` into the HDP softmax
   (:func:`golden.softmax.softmax_rows`), P x V (:func:`golden.pv.pv`) and output
   requantization (:func:`golden.pv.requantize`), unchanged.

``th`` is an integer in the units of ``q_q . k_q`` (score ``* 2**(2F)``, ``F = cfg.qk_frac``),
a Python int or an (N,) integer array of per-query thresholds; :func:`threshold_int` converts
a float threshold.
"""

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from . import pv, softmax
from .operands import check_shapes as _check_shapes
from .operands import quantize_qkv
from .pruner import entry_mask

__all__ = ["TH_LIMIT", "k_prefix", "partial_sums", "row_positive_sum", "row_negative_sum",
           "upper_bounds", "lower_bounds", "termination", "FrontEnd", "front_end",
           "front_end_stats", "LeopardResult", "leopard_head_int", "leopard_head",
           "leopard_attention", "summarize", "threshold_int", "threshold_value",
           "threshold_sweep"]

#: Thresholds are clamped to ``[-TH_LIMIT, TH_LIMIT]``: every ``P_b``, ``U_b``, ``L_b`` and
#: ``S`` is at most ``d * 2**(2B-1) <= 2**41`` in magnitude (``B <= 16``, ``d <= 1024``), so
#: the clamp changes no decision and keeps the comparisons in int64.
TH_LIMIT = 1 << 60


# ------------------------------------------------------------------------------ the bounds
def k_prefix(k_q: np.ndarray, bits: int, b: int) -> np.ndarray:
    """The value of the top ``b`` bits of ``B = bits``-bit two's complement ``k_q`` (the rest
    zero): ``(k >> (B - b)) << (B - b)``; ``b = B`` gives ``k_q``, ``b = 0`` gives 0."""
    if not 0 <= b <= bits:
        raise ValueError(f"b must be in [0, {bits}], not {b}")
    k_q = np.asarray(k_q, np.int64)
    if b == 0:
        return np.zeros_like(k_q)
    s = bits - b
    return (k_q >> s) << s


def partial_sums(q_q: np.ndarray, k_q: np.ndarray, bits: int) -> np.ndarray:
    """``P`` (int64, (Nq, Nk, B)): ``P[i, j, b-1] = q_q[i] . k_prefix(k_q[j], B, b)``."""
    q_q = np.asarray(q_q, np.int64)
    kp = np.stack([k_prefix(k_q, bits, b) for b in range(1, bits + 1)])  # (B, Nk, d)
    return np.einsum("id,bjd->ijb", q_q, kp, optimize=False)


def row_positive_sum(q_q: np.ndarray) -> np.ndarray:
    """``Qpos[i] = sum of the positive q_q[i, d]`` (int64, (Nq,))."""
    q_q = np.asarray(q_q, np.int64)
    return np.where(q_q > 0, q_q, 0).sum(axis=-1)


def row_negative_sum(q_q: np.ndarray) -> np.ndarray:
    """``Qneg[i] = sum of the negative q_q[i, d]`` (int64, (Nq,), <= 0)."""
    q_q = np.asarray(q_q, np.int64)
    return np.where(q_q < 0, q_q, 0).sum(axis=-1)


def _tail(bits: int) -> np.ndarray:
    """``2**(B - b) - 1`` for ``b = 1..B``: the largest value of the unprocessed bits."""
    return (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64)) - 1


def upper_bounds(q_q, k_q, bits: int, p: np.ndarray | None = None) -> np.ndarray:
    """``U`` (int64, (Nq, Nk, B)): ``U[i, j, b-1] = P_b + (2**(B-b) - 1) * Qpos[i]``
    (``p`` = :func:`partial_sums` when already computed)."""
    p = partial_sums(q_q, k_q, bits) if p is None else p
    return p + _tail(bits)[None, None, :] * row_positive_sum(q_q)[:, None, None]


def lower_bounds(q_q, k_q, bits: int, p: np.ndarray | None = None) -> np.ndarray:
    """``L`` (int64, (Nq, Nk, B)): ``L[i, j, b-1] = P_b + (2**(B-b) - 1) * Qneg[i]``."""
    p = partial_sums(q_q, k_q, bits) if p is None else p
    return p + _tail(bits)[None, None, :] * row_negative_sum(q_q)[:, None, None]


def _th_rows(th, n: int) -> np.ndarray:
    """``th`` as an int64 (n,) array, clamped to ``[-TH_LIMIT, TH_LIMIT]``."""
    if isinstance(th, (bool, np.bool_)):
        raise ValueError("th must be an integer (see threshold_int), not a bool")
    if isinstance(th, (int, np.integer)):
        return np.full(n, max(-TH_LIMIT, min(TH_LIMIT, int(th))), np.int64)
    a = np.asarray(th)
    if not np.issubdtype(a.dtype, np.integer) or a.shape != (n,):
        raise ValueError(f"th must be an integer or an ({n},) integer array of per-query "
                         f"thresholds (see threshold_int), not {a.dtype} {a.shape}")
    return np.clip(a.astype(np.int64), -TH_LIMIT, TH_LIMIT)


def termination(u: np.ndarray, th) -> tuple[np.ndarray, np.ndarray]:
    """From upper bounds ``u`` (Nq, Nk, B): ``(terminated, bits)``, where ``terminated`` is
    ``U_b < th`` for some ``b`` and ``bits`` the first such ``b`` (else ``B``).  No masking and
    no diagonal rule here (see :func:`front_end`)."""
    nb = u.shape[-1]
    below = u < _th_rows(th, u.shape[0])[:, None, None]
    term = below.any(axis=-1)
    bits = np.where(term, below.argmax(axis=-1) + 1, nb).astype(np.int64)
    return term, bits


# ------------------------------------------------------------------------------ front end
@dataclass
class FrontEnd:
    """The bit-serial front end's decisions for one head, all (N, N) (``th``: (N,))."""
    bits_width: int          # B
    th: np.ndarray           # per-query thresholds actually used (int64, (N,), clamped)
    mask: np.ndarray         # valid entries
    diag: np.ndarray         # the always-kept diagonal (i, i), i < valid_len
    exact: np.ndarray        # q_q . k_q of every entry (reference; the engine never has it all)
    bits: np.ndarray         # bits processed: 0 masked, B diagonal, else termination step or B
    terminated: np.ndarray   # stopped by U_b < th at some b <= B (valid, non-diagonal only)
    entry_keep: np.ndarray   # valid & (diagonal | not terminated) == valid & (diag | S >= th)
    scores: np.ndarray       # exact score where kept, 0 elsewhere


def _diagonal(n: int, valid_len: int) -> np.ndarray:
    i = np.arange(n)
    diag = np.zeros((n, n), bool)
    diag[i, i] = i < valid_len
    return diag


def _decide(p, u, th, bits: int, mask, diag) -> FrontEnd:
    """The decisions from partial sums ``p`` and upper bounds ``u`` (Nq, Nk, B)."""
    th_rows = _th_rows(th, p.shape[0])
    term, nbits = termination(u, th_rows)
    term = term & mask & ~diag
    nbits = np.where(mask, np.where(diag, bits, nbits), 0)
    keep = mask & ~term
    exact = p[:, :, -1]
    return FrontEnd(bits, th_rows, mask, diag, exact, nbits, term, keep,
                    np.where(keep, exact, 0))


def _check_operands(q_q, k_q, bits: int, valid_len: int) -> None:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16], not {bits}")
    if q_q.ndim != 2 or k_q.shape != q_q.shape or q_q.shape[0] < 1:
        raise ValueError(f"q and k must share one shape (N, d), N >= 1; got {q_q.shape}, "
                         f"{k_q.shape}")
    if not 1 <= valid_len <= q_q.shape[0]:
        raise ValueError(f"valid_len must be in [1, N] = [1, {q_q.shape[0]}], not {valid_len}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    for name, x in (("q", q_q), ("k", k_q)):
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"quantized {name} must be in [{lo}, {hi}] ({bits} bits), "
                             f"found [{x.min()}, {x.max()}]")


def front_end(q_q, k_q, th, bits: int, valid_len: int | None = None,
              causal: bool = False) -> FrontEnd:
    """Run the bit-serial front end on quantized ``q_q``, ``k_q`` (N, d), ``B = bits`` in
    ``[2, 16]``, with threshold ``th`` (int or (N,) ints), ``valid_len`` (default N) and causal
    masking.  Operands outside ``B`` signed bits are a ``ValueError``."""
    q_q, k_q = np.asarray(q_q, np.int64), np.asarray(k_q, np.int64)
    n = q_q.shape[0] if q_q.ndim else 0
    valid_len = n if valid_len is None else int(valid_len)
    _check_operands(q_q, k_q, bits, valid_len)
    p = partial_sums(q_q, k_q, bits)
    return _decide(p, upper_bounds(q_q, k_q, bits, p), th, bits,
                   entry_mask(n, valid_len, causal), _diagonal(n, valid_len))


def front_end_stats(fe: FrontEnd) -> dict:
    """Counts of one head (ints, summable over heads) and the fractions they give.

    ``survival[b-1]`` = valid entries still alive before bit ``b`` (``bits >= b``), so
    ``survival[0]`` = ``valid_pairs`` and ``sum(survival)`` = ``bits_processed``."""
    nb = fe.bits_width
    valid = int(fe.mask.sum())
    vb = fe.bits[fe.mask]
    st = {
        "valid_pairs": valid,
        "kept_entries": int(fe.entry_keep.sum()),
        "diag_entries": int(fe.diag.sum()),
        "terminated_entries": int(fe.terminated.sum()),
        "early_entries": int((fe.terminated & (fe.bits < nb)).sum()),
        "bits_processed": int(vb.sum()),
        "bits_dense": valid * nb,
        "survival": [int((vb >= b).sum()) for b in range(1, nb + 1)],
    }
    return _fractions(st)


def _fractions(st: dict) -> dict:
    v = max(1, st["valid_pairs"])
    st["kept_fraction"] = st["kept_entries"] / v
    st["terminated_fraction"] = st["terminated_entries"] / v
    st["early_fraction"] = st["early_entries"] / v
    st["bits_ratio"] = st["bits_processed"] / max(1, st["bits_dense"])
    st["bits_saved_fraction"] = 1.0 - st["bits_ratio"]
    st["bits_per_valid_entry"] = st["bits_processed"] / v
    return st


_COUNTS = ("valid_pairs", "kept_entries", "diag_entries", "terminated_entries", "early_entries",
           "bits_processed", "bits_dense")


def summarize(stats: list[dict]) -> dict:
    """Totals over heads (counts and ``survival`` summed; fractions recomputed)."""
    if not stats:
        return {}
    tot = {key: int(sum(s[key] for s in stats)) for key in _COUNTS}
    tot["survival"] = [int(x) for x in np.sum([s["survival"] for s in stats], axis=0)]
    tot["heads"] = len(stats)
    return _fractions(tot)


# ------------------------------------------------------------------------------ one head
@dataclass
class LeopardResult:
    """One head through the LeOPArd front end and the HDP softmax / P x V (the fields shared
    with :class:`golden.model.HeadResult` have the same names and meaning)."""
    q_q: np.ndarray
    k_q: np.ndarray
    v_q: np.ndarray
    th: np.ndarray           # (N,) per-query thresholds used
    mask: np.ndarray         # valid entries (N, N)
    diag: np.ndarray         # always-kept diagonal (N, N)
    bits: np.ndarray         # bits processed per entry (N, N)
    terminated: np.ndarray   # (N, N)
    entry_keep: np.ndarray   # entries whose score reaches the softmax
    scores: np.ndarray       # S (N, N), exact q_q . k_q where kept, 0 elsewhere
    probs: np.ndarray        # P (N, N), prob_frac fraction bits
    acc: np.ndarray          # P x V accumulator (N, d)
    out_int: np.ndarray      # output (N, d), out_frac fraction bits
    stats: dict = field(default_factory=dict)


def leopard_head_int(q_q, k_q, v_q, cfg, th, valid_len: int | None = None) -> LeopardResult:
    """One head on quantized Q, K (``qk_frac``) and V (``v_frac``), shape (N, d) each, with
    threshold ``th`` (int or (N,) ints, units of ``q_q . k_q``) and ``cfg.causal`` masking.

    Inputs are checked as in :func:`golden.model.attention_head_int`."""
    for name, x in (("q", q_q), ("k", k_q), ("v", v_q)):
        if not np.issubdtype(np.asarray(x).dtype, np.integer):
            raise ValueError(f"quantized {name} must be an integer array, not "
                             f"{np.asarray(x).dtype}")
    q_q, k_q, v_q = (np.asarray(a, np.int64) for a in (q_q, k_q, v_q))
    if q_q.ndim != 2:
        raise ValueError(f"q, k, v must have shape (N, d), not {q_q.shape}")
    n = q_q.shape[0]
    valid_len = n if valid_len is None else int(valid_len)
    _check_shapes(q_q, k_q, v_q, cfg, valid_len)
    fe = front_end(q_q, k_q, th, cfg.qk_bits, valid_len, cfg.causal)
    p = softmax.softmax_rows(fe.scores, fe.entry_keep, cfg)
    acc = pv.pv(p, v_q)
    out = pv.requantize(acc, cfg)
    st = front_end_stats(fe)
    st["mac_pv"] = q_q.shape[1] * st["kept_entries"]
    return LeopardResult(q_q, k_q, v_q, fe.th, fe.mask, fe.diag, fe.bits, fe.terminated,
                         fe.entry_keep, fe.scores, p, acc, out, st)


def leopard_head(q, k, v, cfg, th, valid_len: int | None = None) -> LeopardResult:
    """One head on float Q, K, V (quantized with :func:`golden.model.quantize_qkv`)."""
    return leopard_head_int(*quantize_qkv(q, k, v, cfg), cfg, th, valid_len)


def leopard_attention(q, k, v, cfg, th, valid_len: int | None = None) -> dict:
    """Every head of float (H, N, d) Q, K, V; ``th`` one int for all heads or a length-H
    sequence (each an int or (N,) ints).  Returns ``out_int``, ``out`` (float32), ``heads``
    (the :class:`LeopardResult` list) and ``stats`` (:func:`summarize`)."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if q.ndim != 3:
        raise ValueError(f"q, k, v must have shape (H, N, d), not {q.shape}")
    nh = q.shape[0]
    ths = [th] * nh if isinstance(th, (int, np.integer)) else list(th)
    if len(ths) != nh:
        raise ValueError(f"th must be one integer or one per head ({nh}), not {len(ths)}")
    res = [leopard_head(q[h], k[h], v[h], cfg, ths[h], valid_len) for h in range(nh)]
    out_int = np.stack([r.out_int for r in res])
    return {"out_int": out_int, "out": (out_int / float(1 << cfg.out_frac)).astype(np.float32),
            "heads": res, "stats": summarize([r.stats for r in res])}


# ------------------------------------------------------------------------------ thresholds
UNITS = ("logit", "score")


def _check_units(units: str) -> None:
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, not {units!r}")


def _reaches(s: int, t: Fraction, cfg, units: str) -> bool:
    """Exactly: does the integer score ``s`` reach the float threshold ``t``?

    ``score``: ``s / 2**(2F) >= t``; ``logit``: ``s / (2**(2F) sqrt(d)) >= t``, decided with
    integers only (``a >= c sqrt(d)`` by comparing squares with the signs)."""
    if units == "score":
        return Fraction(s) >= t * (1 << (2 * cfg.qk_frac))
    a = s * t.denominator                        # s >= t sqrt(d) 2^2F  <=>  a >= c sqrt(d)
    c = t.numerator * (1 << (2 * cfg.qk_frac))
    d = cfg.head_dim
    if c >= 0:
        return a >= 0 and a * a >= c * c * d
    return a >= 0 or a * a <= c * c * d


def threshold_int(value: float, cfg, units: str = "logit") -> int:
    """The integer ``th`` equivalent to a float threshold: the smallest integer ``s`` with
    ``s / 2**(2F) >= value`` (``units="score"``, raw ``q . k``) or
    ``s / (2**(2F) sqrt(d)) >= value`` (``units="logit"``, the scaled score ``q . k / sqrt(d)``
    the softmax sees).  So ``S >= th`` exactly when the quantized score reaches ``value``.
    ``-inf`` / ``inf`` give ``-TH_LIMIT`` / ``TH_LIMIT`` (keep every entry / only the diagonal)."""
    _check_units(units)
    value = float(value)
    if math.isnan(value):
        raise ValueError("threshold must not be NaN")
    if math.isinf(value):
        return TH_LIMIT if value > 0 else -TH_LIMIT
    t = Fraction(value)
    x = value * (1 << (2 * cfg.qk_frac)) * (math.sqrt(cfg.head_dim) if units == "logit" else 1)
    if abs(x) >= TH_LIMIT:
        return TH_LIMIT if x > 0 else -TH_LIMIT
    s = math.ceil(x)
    while not _reaches(s, t, cfg, units):      # float estimate, then exact correction
        s += 1
    while _reaches(s - 1, t, cfg, units):
        s -= 1
    return s


def config_threshold(cfg) -> int:
    """The integer threshold of a configuration: :func:`threshold_int` of ``cfg.leopard_th``
    (a logit), what the hardware's ``leopard_th`` register holds."""
    return threshold_int(cfg.leopard_th, cfg)


def threshold_value(th: int, cfg, units: str = "logit") -> float:
    """The float value of the integer threshold ``th`` in ``units`` (inverse of
    :func:`threshold_int` up to rounding)."""
    _check_units(units)
    x = th / float(1 << (2 * cfg.qk_frac))
    return x / math.sqrt(cfg.head_dim) if units == "logit" else x


def threshold_sweep(q_q, k_q, cfg, ths, valid_len: int | None = None) -> list[dict]:
    """For calibration: the front-end statistics (:func:`summarize` over heads) at each
    threshold of ``ths`` (ints), on quantized ``q_q``, ``k_q`` of shape (N, d) or (H, N, d),
    with ``cfg.qk_bits`` and ``cfg.causal``.  The bounds are computed once per head."""
    q_q, k_q = np.asarray(q_q, np.int64), np.asarray(k_q, np.int64)
    if q_q.ndim == 2:
        q_q, k_q = q_q[None], k_q[None]
    nb, n = cfg.qk_bits, q_q.shape[1]
    vl = n if valid_len is None else int(valid_len)
    mask, diag = entry_mask(n, vl, cfg.causal), _diagonal(n, vl)
    per_th = [[] for _ in ths]
    for h in range(q_q.shape[0]):
        _check_operands(q_q[h], k_q[h], nb, vl)
        p = partial_sums(q_q[h], k_q[h], nb)
        u = upper_bounds(q_q[h], k_q[h], nb, p)
        for t, th in enumerate(ths):
            per_th[t].append(front_end_stats(_decide(p, u, th, nb, mask, diag)))
    out = []
    for th, sts in zip(ths, per_th):
        s = summarize(sts)
        s["th"] = th
        out.append(s)
    return out
