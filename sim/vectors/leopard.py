"""Stimulus and expected output of :class:`hw.leopard_engine.LeopardEngine`, shared by the
Amaranth-simulator tests and the cocotb bench.

A :class:`LeopardCase` is one head: quantized ``q_q``, ``k_q`` (N, d), per-query thresholds
``th`` (N,) in the units of ``q_q . k_q`` (any int64; the beats carry them clamped to
:func:`hw.leopard_engine.th_range`, the expected output uses them as given), ``valid_len``,
``causal`` and ``no_et``.  Expected records come from :func:`golden.leopard.front_end`
(``no_et``: the same decisions with ``B`` bits for every valid entry).  Records are compared
as a set keyed by ``(i, j)``: every valid entry exactly once, nothing else, rows in order.
"""

from dataclasses import dataclass

import numpy as np

from golden import leopard as lp
from golden.model import quantize_qkv
from hw.config import HDPConfig
from hw.leopard_engine import q_beat_layout, result_layout, score_range, th_range
from hw.score_unit import qk_row_layout
from sim.fixtures import fixture_for

__all__ = ["LeopardCase", "k_beats", "q_beats", "expected", "decode", "first_mismatch",
           "directed_cases", "random_case", "fixture_case", "n_records"]


@dataclass
class LeopardCase:
    name: str
    q_q: np.ndarray
    k_q: np.ndarray
    th: np.ndarray
    valid_len: int
    causal: bool = False
    no_et: bool = False

    @property
    def n(self) -> int:
        return self.q_q.shape[0]


def n_records(case: LeopardCase) -> int:
    L = case.valid_len
    return L * (L + 1) // 2 if case.causal else L * L


def k_beats(cfg: HDPConfig, case: LeopardCase) -> list[int]:
    lay = qk_row_layout(cfg)
    return [lay.const([int(x) for x in case.k_q[j]]).as_bits() for j in range(case.valid_len)]


def q_beats(cfg: HDPConfig, case: LeopardCase) -> list[int]:
    lay = q_beat_layout(cfg)
    lo, hi = th_range(cfg)
    return [lay.const({"q": [int(x) for x in case.q_q[i]],
                       "th": int(min(hi, max(lo, int(case.th[i]))))}).as_bits()
            for i in range(case.valid_len)]


def expected(cfg: HDPConfig, case: LeopardCase) -> dict:
    """``{(i, j): (keep, score, bits)}`` for every valid entry, from the golden model."""
    fe = lp.front_end(case.q_q, case.k_q, case.th, cfg.qk_bits, case.valid_len, case.causal)
    bits = np.where(fe.mask, cfg.qk_bits, 0) if case.no_et else fe.bits
    return {(int(i), int(j)): (int(fe.entry_keep[i, j]), int(fe.scores[i, j]), int(bits[i, j]))
            for i, j in zip(*np.nonzero(fe.mask))}


def decode(cfg: HDPConfig, beat: int) -> tuple:
    """``(i, j, keep, score, bits)`` of one packed ``res_out`` beat."""
    r = result_layout(cfg).from_bits(int(beat))
    return (int(r.i), int(r.j), int(r.keep), int(r.score), int(r.bits))


def first_mismatch(cfg: HDPConfig, seed, case: LeopardCase, beats: list[int]) -> str | None:
    """``None`` when the records are exactly the golden set (rows in order), else a message
    naming configuration, seed, case, entry, expected and actual."""
    exp = expected(cfg, case)
    where = (f"config(B={cfg.qk_bits}, d={cfg.head_dim}, N={cfg.seq_len}) seed={seed} "
             f"case={case.name} (valid_len={case.valid_len}, causal={case.causal}, "
             f"no_et={case.no_et})")
    seen: dict = {}
    last_i = 0
    for n, beat in enumerate(beats):
        i, j, keep, score, bits = decode(cfg, beat)
        if (i, j) in seen:
            return f"{where}: record {n}: entry ({i}, {j}) reported twice"
        if (i, j) not in exp:
            return f"{where}: record {n}: entry ({i}, {j}) is not a valid entry"
        if i < last_i:
            return f"{where}: record {n}: row {i} after row {last_i}"
        last_i = i
        seen[(i, j)] = (keep, score, bits)
        if seen[(i, j)] != exp[(i, j)]:
            return (f"{where}: record {n}: entry ({i}, {j}) (keep, score, bits) expected "
                    f"{exp[(i, j)]}, got {seen[(i, j)]}")
    missing = sorted(set(exp) - set(seen))
    if missing:
        return f"{where}: {len(missing)} entries missing, first {missing[0]}"
    return None


# ------------------------------------------------------------------------------ cases
def _lim(cfg):
    m = 1 << (cfg.qk_bits - 1)
    return -m, m - 1


def _rand(cfg, rng, n):
    lo, hi = _lim(cfg)
    return rng.integers(lo, hi + 1, size=(n, cfg.head_dim), dtype=np.int64)


def _th(value, n):
    return np.full(n, value, np.int64)


def directed_cases(cfg: HDPConfig, seed: int, max_len: int | None = None) -> list[LeopardCase]:
    """Extremes of both operands at both threshold ends and the middle, keep-all and
    diagonal-only thresholds, ties at ``th`` (per-query ``th`` equal to a real score of the
    row), zeros, ``valid_len = 1``, causal and ``no_et``."""
    rng = np.random.default_rng(seed)
    n = cfg.seq_len if max_len is None else min(cfg.seq_len, max_len)
    d = cfg.head_dim
    lo, hi = _lim(cfg)
    s_lo, s_hi = score_range(cfg)
    cases = []
    full = lambda v: np.full((n, d), v, np.int64)  # noqa: E731
    signs = rng.choice([lo, hi], size=(n, d)).astype(np.int64)
    extremes = {"min_min": (full(lo), full(lo)), "min_max": (full(lo), full(hi)),
                "max_min": (full(hi), full(lo)), "max_max": (full(hi), full(hi)),
                "signs": (signs, rng.choice([lo, hi], size=(n, d)).astype(np.int64))}
    for name, (q, k) in extremes.items():
        for tname, th in (("lo", s_lo), ("hi", s_hi), ("hi1", s_hi + 1), ("zero", 0),
                          ("neg_inf", -lp.TH_LIMIT), ("inf", lp.TH_LIMIT)):
            cases.append(LeopardCase(f"extreme_{name}_th_{tname}", q, k, _th(th, n), n))
    q, k = _rand(cfg, rng, n), _rand(cfg, rng, n)
    s = q @ k.T
    tie = np.array([s[i, rng.integers(0, n)] for i in range(n)], np.int64)
    cases += [
        LeopardCase("ties", q, k, tie, n),
        LeopardCase("ties_causal", q, k, tie, n, causal=True),
        LeopardCase("zeros", full(0), full(0), _th(0, n), n),
        LeopardCase("zeros_th1", full(0), full(0), _th(1, n), n),
        LeopardCase("valid_len_1", q, k, _th(0, n), 1),
        LeopardCase("valid_len_1_causal", q, k, _th(s_hi, n), 1, causal=True),
        LeopardCase("causal_median", q, k, np.median(s, axis=1).astype(np.int64), n, causal=True),
        LeopardCase("no_et_median", q, k, np.median(s, axis=1).astype(np.int64), n, no_et=True),
        LeopardCase("ragged", q, k, _th(0, n), max(1, (2 * n) // 3)),
    ]
    return cases


def random_case(cfg: HDPConfig, seed: int, max_len: int | None = None) -> LeopardCase:
    """Random operands (sometimes small magnitudes), random per-row thresholds around the
    row's scores, random ``valid_len``, ``causal`` and ``no_et``."""
    rng = np.random.default_rng(seed)
    n = cfg.seq_len if max_len is None else min(cfg.seq_len, max_len)
    q, k = _rand(cfg, rng, n), _rand(cfg, rng, n)
    if rng.random() < 0.3:
        q >>= rng.integers(1, cfg.qk_bits)
    s = q @ k.T
    pick = np.quantile(s, rng.random(n), axis=1, method="nearest").diagonal().astype(np.int64)
    th = pick + rng.integers(-2, 3, size=n)
    return LeopardCase(f"random_{seed}", q, k, th, int(rng.integers(1, n + 1)),
                       causal=bool(rng.random() < 0.4), no_et=bool(rng.random() < 0.2))


def fixture_case(cfg: HDPConfig, name: str, head: int, logit: float = 0.0,
                 no_et: bool = False) -> LeopardCase | None:
    """One real MiniLM head (quantized with ``cfg``), threshold ``logit`` (logit units, one
    for every row); ``None`` when the fixture does not fit ``cfg``."""
    fx = fixture_for(cfg, name)
    if fx is None:
        return None
    q_q, k_q, _ = quantize_qkv(fx["q"][head], fx["k"][head], fx["v"][head], cfg)
    n = q_q.shape[0]
    th = _th(lp.threshold_int(logit, cfg), n)
    return LeopardCase(f"{name}_head{head}_logit{logit:g}{'_no_et' if no_et else ''}",
                       np.asarray(q_q, np.int64), np.asarray(k_q, np.int64), th,
                       fx["valid_len"], causal=False, no_et=no_et)
