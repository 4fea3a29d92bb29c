"""Stimulus and expected output for :class:`hw.score_unit.ScoreUnit` and
:class:`hw.head_detector.HeadDetector`, computed by ``golden/``.

One generator, two drivers: the Amaranth-simulator tests (``tests/test_score_unit.py``,
``tests/test_head_detector.py``) and the cocotb benches (``sim/benches/bench_score.py``,
``sim/benches/bench_head_detector.py``) call the same functions with a configuration and a
seed and compare the unit's whole output against the expected beats.

A :class:`ScoreCase` is a run of heads sharing the run-time ``valid_len`` and ``causal``.  For
each head: the quantized Q and K rows actually streamed (``valid_len`` rows each), the golden
``A`` (:func:`golden.score.integer_scores` of the integer parts), block importances
(:func:`golden.pruner.block_importance` over the ``valid_len x valid_len`` matrix, padded to
whole blocks), and ``H`` (:func:`golden.pruner.head_importance`).  Expected ``blk_out`` beats
are packed with :func:`hw.score_unit.block_layout`, so tests compare integers and unpack only to
report a mismatch.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from golden import pruner, score
from golden.intmath import split_int_frac
from golden.model import quantize_qkv
from hw.config import HDPConfig
from hw.score_unit import block_layout, qk_row_layout

__all__ = ["ScoreHead", "ScoreCase", "head_vectors", "directed_cases", "random_case",
           "fixture_case", "standard_cases", "pack_row", "pack_block", "unpack_block",
           "first_mismatch", "HeadDetCase", "head_detector_cases"]


@dataclass
class ScoreHead:
    """One head: stimulus rows and the expected outputs."""
    q_q: np.ndarray          # (L, d) quantized Q words streamed on q_in
    k_q: np.ndarray          # (L, d) quantized K words streamed on k_in
    a: np.ndarray            # (L, L) golden A
    blocks: list[dict]       # expected blk_out beats (field dicts), row-major block order
    h: int                   # expected h_out

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)


@dataclass
class ScoreCase:
    """A named run of heads with one ``valid_len`` and ``causal`` setting."""
    name: str
    valid_len: int
    causal: bool
    heads: list[ScoreHead] = field(default_factory=list)

    @property
    def n_blocks(self) -> int:
        return sum(h.n_blocks for h in self.heads)


def head_vectors(cfg: HDPConfig, q_q: np.ndarray, k_q: np.ndarray, causal: bool) -> ScoreHead:
    """Golden outputs for one head whose streamed rows are ``q_q`` and ``k_q`` (L rows each)."""
    q_q = np.asarray(q_q, np.int64)
    k_q = np.asarray(k_q, np.int64)
    n = q_q.shape[0]
    if q_q.shape != (n, cfg.head_dim) or k_q.shape != (n, cfg.head_dim):
        raise ValueError(f"q and k must have shape (L, {cfg.head_dim}), not {q_q.shape}, "
                         f"{k_q.shape}")
    if not 1 <= n <= cfg.seq_len:
        raise ValueError(f"L must be in [1, seq_len] = [1, {cfg.seq_len}], not {n}")
    qi, _ = split_int_frac(q_q, cfg.qk_frac)
    ki, _ = split_int_frac(k_q, cfg.qk_frac)
    a = score.integer_scores(qi, ki)
    mask = pruner.entry_mask(n, n, causal)
    imp, valid = pruner.block_importance(a, mask, cfg)
    h = pruner.head_importance(a, mask)
    nbr, nbc = pruner.block_grid(n, cfg)
    br, bc = cfg.block_rows, cfg.block_cols
    pad = np.zeros((nbr * br, nbc * bc), np.int64)
    pad[:n, :n] = a
    blocks = []
    for r in range(nbr):
        for c in range(nbc):
            blocks.append({
                "a": [int(x) for x in pad[r * br:(r + 1) * br, c * bc:(c + 1) * bc].reshape(-1)],
                "imp": int(imp[r, c]),
                "valid": int(valid[r, c]),
                "row": r,
                "col": c,
                "last_col": int(c == nbc - 1),
                "last": int(r == nbr - 1 and c == nbc - 1),
            })
    return ScoreHead(q_q, k_q, a, blocks, h)


def _case(cfg, name, valid_len, causal, qk_pairs) -> ScoreCase:
    case = ScoreCase(name, int(valid_len), bool(causal))
    for q_q, k_q in qk_pairs:
        case.heads.append(head_vectors(cfg, q_q, k_q, causal))
    return case


def _ragged_len(cfg: HDPConfig) -> int:
    """The largest L <= seq_len that is a multiple of neither b_r nor b_c (else seq_len - 1)."""
    for n in range(cfg.seq_len, 0, -1):
        if n % cfg.block_rows and n % cfg.block_cols:
            return n
    return max(1, cfg.seq_len - 1)


def directed_cases(cfg: HDPConfig, seed: int = 0, *, small: bool = False) -> list[ScoreCase]:
    """Named edge cases.  ``small`` caps L at 16 (for the big presets in slow simulators)."""
    rng = np.random.default_rng(seed)
    d = cfg.head_dim
    lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1
    full = cfg.seq_len if not small else min(cfg.seq_len, 16)
    ragged = _ragged_len(cfg) if not small else min(_ragged_len(cfg), 15)

    def const(n, v):
        return np.full((n, d), v, np.int64)

    def rnd(n):
        return rng.integers(lo, hi + 1, size=(n, d))

    cases = [
        # every A equal (and so every importance of a full block): ties everywhere
        _case(cfg, "all_equal", full, False, [(const(full, 1 << cfg.qk_frac),
                                               const(full, 1 << cfg.qk_frac))]),
        _case(cfg, "all_zero", ragged, False, [(const(ragged, 0), const(ragged, 0))]),
        # the largest A (and H = h_max at L = seq_len): q = k = -2^(B-1)
        _case(cfg, "extreme_min_words", full, False, [(const(full, lo), const(full, lo))]),
        _case(cfg, "extreme_max_words", full, False, [(const(full, hi), const(full, hi))]),
        # the most negative A: q = -2^(B-1), k = 2^(B-1)-1
        _case(cfg, "extreme_mixed_signs", full, False, [(const(full, lo), const(full, hi))]),
        _case(cfg, "extreme_random_signs", ragged, False,
              [(rng.choice([lo, hi], size=(ragged, d)), rng.choice([lo, hi], size=(ragged, d)))]),
        _case(cfg, "extreme_causal", full, True, [(const(full, lo), const(full, hi))]),
        _case(cfg, "valid_len_1", 1, False, [(rnd(1), rnd(1))]),
        _case(cfg, "valid_len_1_causal", 1, True, [(rnd(1), rnd(1))]),
        _case(cfg, "valid_len_full", full, False, [(rnd(full), rnd(full))]),
        _case(cfg, "valid_len_ragged", ragged, False, [(rnd(ragged), rnd(ragged))]),
        _case(cfg, "valid_len_ragged_causal", ragged, True, [(rnd(ragged), rnd(ragged))]),
        _case(cfg, "valid_len_full_causal", full, True, [(rnd(full), rnd(full))]),
    ]
    # L = 2 and L = b + 1: a single partial block, and one full block plus a sliver
    for n in sorted({2, cfg.block_rows + 1, cfg.block_cols + 1}):
        if n <= cfg.seq_len:
            cases.append(_case(cfg, f"valid_len_{n}", n, n % 2 == 1, [(rnd(n), rnd(n))]))
    return cases


def random_case(cfg: HDPConfig, seed: int, n_heads: int = 2, valid_len: int | None = None,
                causal: bool | None = None, max_len: int | None = None) -> ScoreCase:
    """``n_heads`` heads of uniform random words; ``valid_len``/``causal`` random when None."""
    rng = np.random.default_rng(seed)
    top = cfg.seq_len if max_len is None else min(cfg.seq_len, max_len)
    n = int(rng.integers(1, top + 1)) if valid_len is None else valid_len
    cz = bool(rng.integers(0, 2)) if causal is None else causal
    lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1)) - 1
    pairs = [(rng.integers(lo, hi + 1, size=(n, cfg.head_dim)),
              rng.integers(lo, hi + 1, size=(n, cfg.head_dim))) for _ in range(n_heads)]
    return _case(cfg, f"random_seed{seed}_L{n}{'_causal' if cz else ''}", n, cz, pairs)


def fixture_case(cfg: HDPConfig, name: str = "long", heads=(0, 37, 71),
                 causal: bool = False) -> ScoreCase | None:
    """Heads of a bundled all-MiniLM-L6-v2 capture quantized with
    :func:`golden.model.quantize_qkv`; the first ``valid_len`` rows are streamed.  None when the
    fixture is not in this checkout or does not fit ``cfg`` (head_dim, seq_len)."""
    from sim.fixtures import fixture_for
    fx = fixture_for(cfg, name)
    if fx is None:
        return None
    n = fx["valid_len"]
    pairs = []
    for h in heads:
        q_q, k_q, _ = quantize_qkv(fx["q"][h], fx["k"][h], fx["v"][h], cfg)
        pairs.append((q_q[:n], k_q[:n]))
    return _case(cfg, f"minilm_{name}_heads{'_'.join(map(str, heads))}", n, causal, pairs)


def standard_cases(cfg: HDPConfig, seed: int, *, small: bool = False, n_random: int = 3,
                   fixture: bool = True) -> list[ScoreCase]:
    """Directed cases, ``n_random`` random cases and (when it fits) the MiniLM fixture."""
    cases = directed_cases(cfg, seed, small=small)
    max_len = 16 if small else None
    cases += [random_case(cfg, seed * 1000 + i, n_heads=2, max_len=max_len)
              for i in range(n_random)]
    if fixture:
        fx = fixture_case(cfg)
        if fx is not None:
            cases.append(fx)
    return cases


# ---------------------------------------------------------------------------- packing
def pack_row(cfg: HDPConfig, row) -> int:
    """One Q or K row as the ``k_in`` / ``q_in`` payload bits."""
    return qk_row_layout(cfg).const([int(x) for x in row]).as_bits()


def pack_block(cfg: HDPConfig, blk: dict) -> int:
    return block_layout(cfg).const(blk).as_bits()


def unpack_block(cfg: HDPConfig, bits: int) -> dict:
    c = data.Const(block_layout(cfg), bits)
    return {"a": [int(x) for x in c.a], "imp": int(c.imp), "valid": int(c.valid),
            "row": int(c.row), "col": int(c.col), "last_col": int(c.last_col),
            "last": int(c.last)}


def first_mismatch(cfg: HDPConfig, seed: int, case: ScoreCase, blk_bits: list[int],
                   h_vals: list[int]) -> str | None:
    """None when the unit's whole output matches; else a message naming config, seed, case,
    the first differing beat index, expected and actual."""
    exp_blk = [pack_block(cfg, b) for head in case.heads for b in head.blocks]
    exp_h = [head.h for head in case.heads]
    where = f"config={cfg.to_dict()} seed={seed} case={case.name}"
    for i, (e, a) in enumerate(zip(exp_blk, blk_bits)):
        if e != a:
            return (f"{where}: blk_out beat {i} differs: expected {unpack_block(cfg, e)}, "
                    f"got {unpack_block(cfg, a)}")
    if len(blk_bits) != len(exp_blk):
        return f"{where}: {len(blk_bits)} blk_out beats, expected {len(exp_blk)}"
    for i, (e, a) in enumerate(zip(exp_h, h_vals)):
        if e != a:
            return f"{where}: h_out beat {i} (head {i}) differs: expected H={e}, got H={a}"
    if len(h_vals) != len(exp_h):
        return f"{where}: {len(h_vals)} h_out beats, expected {len(exp_h)}"
    return None


# ---------------------------------------------------------------------------- head detector
@dataclass
class HeadDetCase:
    """Head importances with one ``head_prune`` / ``tau_head`` setting and the expected keeps."""
    name: str
    head_prune: int
    tau_head: int
    h: list[int]
    keep: list[int]


def _keep(cfg: HDPConfig, h: int, head_prune: int, tau: int) -> int:
    return int(pruner.head_keep(h, cfg.replace(head_prune=bool(head_prune), tau_head=tau)))


def head_detector_cases(cfg: HDPConfig, seed: int, n_random: int = 40) -> list[HeadDetCase]:
    """Directed (tau at 0, 1, h_max; H equal to tau, one below, one above; prune off) and
    seeded random cases, expected keeps from :func:`golden.pruner.head_keep`."""
    rng = np.random.default_rng(seed)
    hmax = cfg.h_max
    cases = []
    for prune in (0, 1):
        for tau in sorted({0, 1, hmax // 2, hmax - 1, hmax}):
            hs = sorted({0, 1, max(0, tau - 1), tau, min(hmax, tau + 1), hmax})
            cases.append(HeadDetCase(f"tau_{tau}_prune{prune}", prune, tau, hs,
                                     [_keep(cfg, h, prune, tau) for h in hs]))
    for i in range(3):
        tau = int(rng.integers(0, hmax + 1))
        prune = int(i != 2)
        hs = [int(x) for x in rng.integers(0, hmax + 1, size=n_random)]
        hs += [tau, max(0, tau - 1), min(hmax, tau + 1)]
        cases.append(HeadDetCase(f"random_seed{seed}_{i}", prune, tau, hs,
                                 [_keep(cfg, h, prune, tau) for h in hs]))
    return cases
