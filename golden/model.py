"""The golden co-processor: one attention head (twin of ``hw/top.py``), and many heads.

:func:`attention_head_int` takes quantized integers (what the hardware sees);
:func:`attention_head` quantizes floats first; :func:`attention` runs every head of an
(H, N, d) input and gathers statistics.

With ``cfg.front_end == "leopard"`` the score front end is LeOPArd's bit-serial one
(:func:`golden.leopard.leopard_head_int` with :func:`golden.leopard.config_threshold`) instead
of the integer pass and the block pruner; the result is a :class:`LeopardHeadResult`, a
:class:`HeadResult` whose HDP-only fields are filled as documented there, so every caller
works unchanged.
"""

from dataclasses import dataclass, field

import numpy as np

from . import approx, mass_pruner, pruner, pv, score, softmax
from .intmath import split_int_frac
from .operands import check_shapes as _check_shapes
from .operands import quantize_qkv

__all__ = ["HeadResult", "LeopardHeadResult", "attention_head", "attention_head_int", "attention",
           "quantize_qkv"]


@dataclass
class HeadResult:
    """Every intermediate of one head, named as in ``docs/spec.md``."""
    q_q: np.ndarray
    k_q: np.ndarray
    v_q: np.ndarray
    a: np.ndarray            # integer scores A (N, N)
    x: np.ndarray            # cross terms X (N, N)
    c: np.ndarray            # fraction x fraction C (N, N)
    mask: np.ndarray         # valid entries (N, N)
    importance: np.ndarray   # I (nbr, nbc)
    block_valid: np.ndarray  # (nbr, nbc)
    diag: np.ndarray         # (nbr, nbc)
    head_importance: int     # H
    head_keep: bool
    block_keep: np.ndarray   # (nbr, nbc), all False for a pruned head
    entry_keep: np.ndarray   # (N, N) entries whose score reaches the softmax
    scores: np.ndarray       # S (N, N), 0 where not kept
    probs: np.ndarray        # P (N, N), prob_frac fraction bits
    acc: np.ndarray          # P x V accumulator (N, d)
    out_int: np.ndarray      # output (N, d), out_frac fraction bits
    stats: dict = field(default_factory=dict)


@dataclass
class LeopardHeadResult(HeadResult):
    """One head through the LeOPArd front end (``cfg.front_end == "leopard"``).

    ``entry_keep``, ``scores`` (exact ``q_q . k_q`` where kept), ``probs``, ``acc`` and
    ``out_int`` are :class:`golden.leopard.LeopardResult`'s, bit for bit.  The HDP-only fields
    describe the same head for tools that read them: ``a``, ``x``, ``c``, ``importance``,
    ``block_valid``, ``diag`` and ``head_importance`` as the HDP path computes them (nothing
    uses them to decide); ``head_keep`` is True (LeOPArd prunes no head); ``block_keep`` marks
    the valid blocks holding at least one kept entry (an occupancy map, not a decision).
    ``stats`` has every key of the HDP path (``blocks_valid``/``blocks_kept`` counting those
    blocks; ``mac_integer_pass``, ``mac_cross`` and ``mac_ff`` are 0: there is no integer pass
    and the scores come out of the front end whole) plus the front end's counts
    (``diag_entries``, ``terminated_entries``, ``early_entries``, ``bits_processed``,
    ``bits_dense``); the pruning figure of this front end is the kept ENTRY fraction."""
    th: np.ndarray | None = None          # (N,) integer thresholds used
    bits: np.ndarray | None = None        # bits processed per entry (N, N)
    terminated: np.ndarray | None = None  # (N, N)


#: integer statistics the LeOPArd path adds to the HDP ones (summed over heads)
LEOPARD_COUNTS = ("diag_entries", "terminated_entries", "early_entries", "bits_processed",
                  "bits_dense")


def attention_head_int(q_q, k_q, v_q, cfg, valid_len: int | None = None) -> HeadResult:
    """One head on quantized Q, K (``qk_frac``) and V (``v_frac``), shape (N, d) each.

    Non-integer arrays and values outside the configured bit widths are a ``ValueError``."""
    for name, x in (("q", q_q), ("k", k_q), ("v", v_q)):
        if not np.issubdtype(np.asarray(x).dtype, np.integer):
            raise ValueError(f"quantized {name} must be an integer array, not "
                             f"{np.asarray(x).dtype}")
    q_q, k_q, v_q = (np.asarray(a, np.int64) for a in (q_q, k_q, v_q))
    if q_q.ndim != 2:
        raise ValueError(f"q, k, v must have shape (N, d), not {q_q.shape}")
    n, d = q_q.shape
    valid_len = n if valid_len is None else int(valid_len)
    _check_shapes(q_q, k_q, v_q, cfg, valid_len)
    if getattr(cfg, "front_end", "hdp") == "leopard":
        return _leopard_head_int(q_q, k_q, v_q, cfg, valid_len)
    qi, qf = split_int_frac(q_q, cfg.qk_frac)
    ki, kf = split_int_frac(k_q, cfg.qk_frac)
    a = score.integer_scores(qi, ki)
    x = score.cross_terms(qi, qf, ki, kf)
    c = score.ff_terms(qf, kf)
    mask = pruner.entry_mask(n, valid_len, cfg.causal)
    imp, bvalid = pruner.block_importance(a, mask, cfg)
    diag = pruner.diagonal_blocks(n, valid_len, cfg)
    h = pruner.head_importance(a, mask)
    hk = pruner.head_keep(h, cfg)
    if hk and cfg.prune_mode == "mass":
        m = mass_pruner.block_mass(mass_pruner.estimated_scores(a, k_q, cfg), mask, cfg)
        bkeep = mass_pruner.mass_keep(m, bvalid, diag, cfg.eps_q)
    elif hk:
        bkeep = pruner.block_keep(imp, bvalid, diag, cfg)
    else:
        bkeep = np.zeros_like(bvalid)
    ekeep = pruner.expand_blocks(bkeep, n, cfg) & mask
    s = np.where(ekeep, approx.approx_scores(a, x, c, cfg, approx.key_compensation(kf, cfg)),
                 0)
    p = softmax.softmax_rows(s, ekeep, cfg)
    acc = pv.pv(p, v_q)
    out = pv.requantize(acc, cfg)
    kept = int(ekeep.sum())
    valid_pairs = int(mask.sum())
    stats = {
        "valid_pairs": valid_pairs,
        "kept_entries": kept,
        "blocks_valid": int(bvalid.sum()),
        "blocks_kept": int(bkeep.sum()),
        "head_kept": int(hk),
        "mac_integer_pass": valid_pairs * d,
        "mac_cross": (2 * d * kept) if hk else 0,
        "mac_ff": (d * kept) if cfg.approx == "exact" else 0,
        "mac_pv": d * kept,
        "mac_dense_qk": valid_pairs * d,
        "mac_dense_pv": valid_pairs * d,
    }
    return HeadResult(q_q, k_q, v_q, a, x, c, mask, imp, bvalid, diag, h, hk, bkeep, ekeep, s, p,
                      acc, out, stats)


def _leopard_head_int(q_q, k_q, v_q, cfg, valid_len: int) -> LeopardHeadResult:
    """The LeOPArd path of :func:`attention_head_int` (see :class:`LeopardHeadResult`)."""
    from . import leopard
    n, d = q_q.shape
    r = leopard.leopard_head_int(q_q, k_q, v_q, cfg, leopard.config_threshold(cfg), valid_len)
    qi, qf = split_int_frac(q_q, cfg.qk_frac)
    ki, kf = split_int_frac(k_q, cfg.qk_frac)
    a = score.integer_scores(qi, ki)
    x = score.cross_terms(qi, qf, ki, kf)
    c = score.ff_terms(qf, kf)
    imp, bvalid = pruner.block_importance(a, r.mask, cfg)
    _, occupied = pruner.block_importance(r.entry_keep.astype(np.int64), r.entry_keep, cfg)
    bkeep = occupied & bvalid
    st = r.stats
    valid_pairs, kept = int(st["valid_pairs"]), int(st["kept_entries"])
    stats = {
        "valid_pairs": valid_pairs,
        "kept_entries": kept,
        "blocks_valid": int(bvalid.sum()),
        "blocks_kept": int(bkeep.sum()),
        "head_kept": 1,
        "mac_integer_pass": 0,
        "mac_cross": 0,
        "mac_ff": 0,
        "mac_pv": d * kept,
        "mac_dense_qk": valid_pairs * d,
        "mac_dense_pv": valid_pairs * d,
        **{key: int(st[key]) for key in LEOPARD_COUNTS},
    }
    return LeopardHeadResult(q_q, k_q, v_q, a, x, c, r.mask, imp, bvalid,
                             pruner.diagonal_blocks(n, valid_len, cfg),
                             pruner.head_importance(a, r.mask), True, bkeep, r.entry_keep,
                             r.scores, r.probs, r.acc, r.out_int, stats, th=r.th, bits=r.bits,
                             terminated=r.terminated)


def attention_head(q, k, v, cfg, valid_len: int | None = None) -> HeadResult:
    """One head on float Q, K, V (quantized with :func:`golden.intmath.quantize`)."""
    return attention_head_int(*quantize_qkv(q, k, v, cfg), cfg, valid_len)


def summarize(stats: list[dict]) -> dict:
    """Totals over heads plus the fractions people read."""
    keys = [key for s in stats for key in s if not isinstance(s[key], list)]
    tot = {key: int(sum(s.get(key, 0) for s in stats)) for key in dict.fromkeys(keys)}
    heads = len(stats)
    tot["heads"] = heads
    tot["kept_block_fraction"] = tot["blocks_kept"] / max(1, tot["blocks_valid"])
    tot["kept_entry_fraction"] = tot["kept_entries"] / max(1, tot["valid_pairs"])
    tot["kept_head_fraction"] = tot["head_kept"] / max(1, heads)
    dense = tot["mac_dense_qk"] + tot["mac_dense_pv"]
    # Fine-pass work in array MAC steps: one step per kept score element (the PE forms the
    # cross terms, and C in exact mode, in the same step) plus one per kept P x V element,
    # against the same two for every valid pair in dense mode.  The narrow products by kind
    # stay in mac_cross / mac_ff / mac_integer_pass.
    fine = tot["mac_pv"] * 2
    tot["mac_fine_vs_dense"] = fine / max(1, dense)
    tot["mac_total"] = tot["mac_integer_pass"] + tot["mac_cross"] + tot["mac_ff"] + tot["mac_pv"]
    if "bits_dense" in tot:
        # LeOPArd front end: bit-serial bits read against every valid entry's full B bits
        # (heads on the HDP path, if mixed in, count 0 of both)
        tot["bits_ratio"] = tot["bits_processed"] / max(1, tot["bits_dense"])
        tot["early_fraction"] = tot["early_entries"] / max(1, tot["valid_pairs"])
    return tot


def attention(q, k, v, cfg, valid_len: int | None = None) -> dict:
    """Every head of float (H, N, d) Q, K, V.

    Returns ``out`` (float32, dequantized), ``out_int``, ``block_keep``, ``head_keep``,
    ``heads`` (the :class:`HeadResult` list) and ``stats`` (totals, see :func:`summarize`)."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if q.ndim != 3:
        raise ValueError(f"q, k, v must have shape (H, N, d), not {q.shape}")
    res = [attention_head(q[h], k[h], v[h], cfg, valid_len) for h in range(q.shape[0])]
    out_int = np.stack([r.out_int for r in res])
    return {
        "out_int": out_int,
        "out": (out_int / float(1 << cfg.out_frac)).astype(np.float32),
        "block_keep": np.stack([r.block_keep for r in res]),
        "head_keep": np.array([r.head_keep for r in res], dtype=bool),
        "heads": res,
        "stats": summarize([r.stats for r in res]),
    }
