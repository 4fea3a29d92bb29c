"""Stimulus and expected output for :class:`hw.approx_unit.ApproxUnit`, computed by ``golden/``.

One generator, two drivers: the Amaranth-simulator tests (``tests/test_approx_unit.py``) and
the cocotb bench (``sim/benches/bench_approx.py``) both call :func:`vector_sets` with the
configuration and a seed and compare the unit's whole output against ``s``.

Every set is a list of kept entries: rows ``q``, ``k`` (quantized words, shape (n, d)), the
reused integer score ``a = golden.score.integer_scores`` of the pair, a ``tag``, the run-time
``exact`` bit and the expected ``s = golden.approx.approx_scores(a, X, C)`` with ``X``, ``C`` from
``golden.score.cross_terms`` / ``ff_terms``.
"""

from dataclasses import dataclass

import numpy as np

from golden import approx, model, score
from golden.intmath import quantize, split_int_frac
from hw.approx_unit import approx_in_layout, approx_out_layout, default_tag_width
from hw.config import APPROX_MODES, HDPConfig

__all__ = ["ApproxVectors", "entry_vectors", "directed_vectors", "random_vectors", "head_vectors",
           "fixture_vectors", "vector_sets", "pack_in", "unpack_out"]


@dataclass
class ApproxVectors:
    """One named stimulus set and its golden output."""
    name: str
    exact: int
    q: np.ndarray    # (n, d) int64 q_q rows
    k: np.ndarray    # (n, d) int64 k_q rows
    a: np.ndarray    # (n,) integer scores A
    tag: np.ndarray  # (n,) pass-through tags
    s: np.ndarray    # (n,) expected scores

    def __len__(self) -> int:
        return len(self.s)


def entry_vectors(cfg: HDPConfig, name: str, q: np.ndarray, k: np.ndarray, exact: int,
                  tag_width: int | None = None) -> ApproxVectors:
    """Golden output for entries ``(q[n], k[n])``: X, C, A via golden.score, S via golden.approx."""
    q = np.asarray(q, np.int64).reshape(-1, cfg.head_dim)
    k = np.asarray(k, np.int64).reshape(-1, cfg.head_dim)
    qi, qf = split_int_frac(q, cfg.qk_frac)
    ki, kf = split_int_frac(k, cfg.qk_frac)
    # the golden functions return all (query, key) pairs; entry n pairs row n with row n
    a = np.array([score.integer_scores(qi[n:n + 1], ki[n:n + 1])[0, 0] for n in range(len(q))],
                 np.int64)
    x = np.array([score.cross_terms(qi[n:n + 1], qf[n:n + 1], ki[n:n + 1], kf[n:n + 1])[0, 0]
                  for n in range(len(q))], np.int64)
    c = np.array([score.ff_terms(qf[n:n + 1], kf[n:n + 1])[0, 0] for n in range(len(q))], np.int64)
    s = approx.approx_scores(a, x, c, cfg.replace(approx=APPROX_MODES[exact]))
    tw = default_tag_width(cfg) if tag_width is None else tag_width
    tag = np.arange(len(q), dtype=np.int64) % (1 << tw)
    return ApproxVectors(name, int(exact), q, k, a, tag, s)


def _extremes(cfg: HDPConfig) -> list[int]:
    b, f = cfg.qk_bits, cfg.qk_frac
    lo, hi = -(1 << (b - 1)), (1 << (b - 1)) - 1
    ilo, ihi = cfg.qk_int_range
    fm = cfg.qk_frac_max
    vals = {lo, hi, 0, -1, 1, (ilo << f) + fm, ihi << f, fm, -(1 << f) if f < b - 1 else lo}
    return sorted(v for v in vals if lo <= v <= hi)


def directed_vectors(cfg: HDPConfig, exact: int) -> ApproxVectors:
    """Extreme values at this configuration's widths: every pair of uniform rows drawn from
    {min, max, 0, -1, 1, min integer part with max fraction, max integer part with zero
    fraction, max fraction, -2**F}, then alternating min/max rows (largest |X| and |A| of
    both signs, C = 0 and C = d (2**F - 1)**2)."""
    d = cfg.head_dim
    ext = _extremes(cfg)
    qs, ks = [], []
    for vq in ext:
        for vk in ext:
            qs.append([vq] * d)
            ks.append([vk] * d)
    lo, hi = ext[0], ext[-1]
    alt = [lo if i % 2 == 0 else hi for i in range(d)]
    alt2 = [hi if i % 2 == 0 else lo for i in range(d)]
    for rq, rk in ((alt, alt), (alt, alt2), (alt2, alt), (alt, [lo] * d), ([hi] * d, alt)):
        qs.append(rq)
        ks.append(rk)
    return entry_vectors(cfg, f"extremes_{APPROX_MODES[exact]}", np.array(qs), np.array(ks), exact)


def random_vectors(cfg: HDPConfig, seed: int, n: int, exact: int) -> ApproxVectors:
    """``n`` entries with uniformly random words over the full ``qk_bits`` range."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1))
    q = rng.integers(lo, hi, size=(n, cfg.head_dim))
    k = rng.integers(lo, hi, size=(n, cfg.head_dim))
    return entry_vectors(cfg, f"random_{APPROX_MODES[exact]}_seed{seed}", q, k, exact)


def head_vectors(cfg: HDPConfig, name: str, q_q: np.ndarray, k_q: np.ndarray, exact: int,
                 valid_len: int | None = None, max_entries: int | None = None) -> ApproxVectors:
    """The kept entries of one head, in row-major order, as ``golden.model.attention_head_int``
    prunes them under ``cfg`` (expected ``s`` = that model's ``scores``, ``a`` its ``A``)."""
    cfg = cfg.replace(approx=APPROX_MODES[exact])
    q_q, k_q = np.asarray(q_q, np.int64), np.asarray(k_q, np.int64)
    res = model.attention_head_int(q_q, k_q, np.zeros_like(q_q), cfg, valid_len)
    ii, jj = np.nonzero(res.entry_keep)
    if max_entries is not None:
        ii, jj = ii[:max_entries], jj[:max_entries]
    v = entry_vectors(cfg, name, q_q[ii], k_q[jj], exact)
    # the per-entry recomputation must agree with the whole-head golden model
    assert np.array_equal(v.s, res.scores[ii, jj]) and np.array_equal(v.a, res.a[ii, jj])
    return v


def fixture_vectors(cfg: HDPConfig, exact: int, name: str = "long", heads: tuple[int, ...] = (0,),
                    max_entries: int | None = None) -> ApproxVectors | None:
    """Kept entries (under ``cfg``'s pruning) of some heads of a bundled MiniLM fixture
    (``sim.fixtures.load_fixture(name)``, with its ``valid_len``), quantized with ``cfg``,
    concatenated head after head; ``None`` when the fixture is not in this checkout or does not
    fit the configuration (head_dim, seq_len)."""
    from sim.fixtures import fixture_for
    fx = fixture_for(cfg, name)
    if fx is None:
        return None
    q, k = fx["q"], fx["k"]
    parts = []
    for h in heads:
        q_q = quantize(q[h], cfg.qk_bits, cfg.qk_frac)
        k_q = quantize(k[h], cfg.qk_bits, cfg.qk_frac)
        parts.append(head_vectors(cfg, f"minilm_{name}_head{h}", q_q, k_q, exact,
                                  valid_len=fx["valid_len"]))
    qs = np.concatenate([p.q for p in parts])[:max_entries]
    ks = np.concatenate([p.k for p in parts])[:max_entries]
    heads_s = "-".join(str(h) for h in heads)
    v = entry_vectors(cfg, f"minilm_{name}_heads{heads_s}_{APPROX_MODES[exact]}", qs, ks, exact)
    assert np.array_equal(v.s, np.concatenate([p.s for p in parts])[:max_entries])
    return v


def vector_sets(cfg: HDPConfig, seed: int, n_random: int = 200) -> list[ApproxVectors]:
    """The standard stimulus: directed extremes, seeded random entries and the kept entries of
    a random pruned head, each in both approximation modes."""
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (cfg.qk_bits - 1)), (1 << (cfg.qk_bits - 1))
    n = cfg.seq_len
    hq = rng.integers(lo, hi, size=(n, cfg.head_dim))
    hk = rng.integers(lo, hi, size=(n, cfg.head_dim))
    sets = []
    for exact in (0, 1):
        sets.append(directed_vectors(cfg, exact))
        sets.append(random_vectors(cfg, seed + exact, n_random, exact))
        sets.append(head_vectors(cfg, f"head_{APPROX_MODES[exact]}_seed{seed}", hq, hk, exact,
                                 max_entries=4 * n))
    return sets


def pack_in(cfg: HDPConfig, v: ApproxVectors, tag_width: int | None = None) -> list[int]:
    """Input beats as integers, packed with the unit's own layout."""
    lay = approx_in_layout(cfg, tag_width)
    return [lay.const({"q": [int(x) for x in v.q[n]], "k": [int(x) for x in v.k[n]],
                       "a": int(v.a[n]), "tag": int(v.tag[n])}).as_bits()
            for n in range(len(v))]


def unpack_out(cfg: HDPConfig, beats: list[int], tag_width: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Output beats -> (s, tag) arrays, unpacked with the unit's own layout."""
    lay = approx_out_layout(cfg, tag_width)
    vals = [lay.from_bits(b) for b in beats]
    return (np.array([int(c.s) for c in vals], np.int64),
            np.array([int(c.tag) for c in vals], np.int64))
