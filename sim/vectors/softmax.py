"""Stimulus and expected output for :class:`hw.softmax_unit.SoftmaxUnit`, computed by ``golden/``.

One generator, two drivers: the Amaranth-simulator tests (``tests/test_softmax_unit.py``) and the
cocotb bench (``sim/benches/bench_softmax.py``) both call :func:`vector_set` with the
configuration, a case name and a seed, stream :meth:`SoftmaxVectors.in_beats` into ``s_in`` and
compare the whole ``p_out`` stream against :meth:`SoftmaxVectors.out_beats`.

A set is a list of rows (any length 1..``seq_len``): signed scores ``s`` (``2F`` fraction bits,
any value of ``score_width`` bits), ``keep`` bits and the expected probabilities
``golden.softmax.softmax_rows(s, keep)`` (``prob_frac`` fraction bits).

Cases (:data:`CASES`): the directed ones below, ``random`` (seeded rows of random length, keep
density and spread) and ``fixture`` (rows of real scores and keep masks from the golden model on
the all-MiniLM-L6-v2 capture; needs ``head_dim == 32``).
"""

import zlib
from dataclasses import dataclass

import numpy as np

from golden.softmax import softmax_rows
from golden.tables import softmax_constants
from hw.config import HDPConfig
from hw.softmax_unit import p_out_layout, s_in_layout

__all__ = ["SoftmaxVectors", "DIRECTED_CASES", "CASES", "vector_set", "rows_to_vectors", "directed_vectors",
           "random_vectors", "fixture_vectors", "fixture_available", "merge", "pack_in",
           "unpack_out", "first_mismatch"]


@dataclass
class SoftmaxVectors:
    """One named stimulus set: rows of scores and keep bits, and golden's probabilities."""
    name: str
    s: list[np.ndarray]      # per row, int64 scores
    keep: list[np.ndarray]   # per row, bool
    p: list[np.ndarray]      # per row, int64 expected probabilities

    @property
    def n_rows(self) -> int:
        return len(self.s)

    @property
    def n_entries(self) -> int:
        return sum(len(r) for r in self.s)

    def in_beats(self) -> list[dict]:
        """``s_in`` payloads in stream order: ``{"s", "keep", "last"}``."""
        out = []
        for s, k in zip(self.s, self.keep):
            for j in range(len(s)):
                out.append({"s": int(s[j]), "keep": int(k[j]), "last": int(j == len(s) - 1)})
        return out

    def out_beats(self) -> list[dict]:
        """Expected ``p_out`` payloads in stream order: ``{"p", "last"}``."""
        out = []
        for p in self.p:
            for j in range(len(p)):
                out.append({"p": int(p[j]), "last": int(j == len(p) - 1)})
        return out

    def locate(self, index: int) -> tuple[int, int]:
        """(row, entry within the row) of stream position ``index``."""
        for r, s in enumerate(self.s):
            if index < len(s):
                return r, index
            index -= len(s)
        raise IndexError(index)


def rows_to_vectors(cfg: HDPConfig, name: str, rows: list[tuple]) -> SoftmaxVectors:
    """A set from ``(scores, keep)`` rows, with golden's probabilities; rows must have length
    1..``seq_len`` and scores must fit ``score_width`` bits (else ``ValueError``)."""
    lo, hi = -(1 << (cfg.score_width - 1)), (1 << (cfg.score_width - 1)) - 1
    ss, ks, ps = [], [], []
    for s, k in rows:
        s = np.asarray(s, np.int64).reshape(-1)
        k = np.asarray(k, bool).reshape(-1)
        if not 1 <= len(s) <= cfg.seq_len or len(k) != len(s):
            raise ValueError(f"row length must be in [1, seq_len] = [1, {cfg.seq_len}], not {len(s)}")
        if s.min() < lo or s.max() > hi:
            raise ValueError(f"scores must fit score_width = {cfg.score_width} bits")
        ss.append(s)
        ks.append(k)
        ps.append(softmax_rows(s[None, :], k[None, :], cfg)[0])
    return SoftmaxVectors(name, ss, ks, ps)


def _rng(cfg: HDPConfig, case: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(case.encode()), cfg.seq_len, cfg.score_width])


def _lengths(cfg: HDPConfig) -> list[int]:
    """Row lengths worth sweeping: 1, 2, seq_len - 1, seq_len (deduplicated, in range)."""
    return sorted({n for n in (1, 2, 3, cfg.seq_len - 1, cfg.seq_len) if 1 <= n <= cfg.seq_len})


def _directed_rows(cfg: HDPConfig, case: str, rng: np.random.Generator) -> list[tuple]:
    n = cfg.seq_len
    smin, smax = -(1 << (cfg.score_width - 1)), (1 << (cfg.score_width - 1)) - 1
    k = softmax_constants(cfg)
    dmax = k.delta_max
    ones = np.ones(n, bool)
    rows: list[tuple] = []
    if case == "all_equal":
        for v in (0, smax, smin, -1, 12345 % (smax + 1)):
            for ln in _lengths(cfg):
                rows.append((np.full(ln, v), np.ones(ln, bool)))
    elif case == "single_kept":
        # one kept entry per row; the pruned entries hold larger scores (they must not count)
        for j in sorted({0, 1, 2, n // 2, n - 2, n - 1} & set(range(n))):
            s = np.full(n, smax)
            s[j] = smin if j % 2 else 0
            keep = np.zeros(n, bool)
            keep[j] = True
            rows.append((s, keep))
    elif case == "none_kept":
        for ln in _lengths(cfg):
            rows.append((rng.integers(smin, smax + 1, ln), np.zeros(ln, bool)))
            rows.append((np.full(ln, smax), np.zeros(ln, bool)))
    elif case == "length_one":
        for v in (smin, -1, 0, 1, smax):
            rows.append(([v], [True]))
            rows.append(([v], [False]))
    elif case == "full_length":
        for _ in range(3):
            centre = int(rng.integers(smin + 2 * dmax, smax + 1)) if smin + 2 * dmax <= smax else 0
            s = np.clip(centre - rng.integers(0, 2 * dmax, n), smin, smax)
            rows.append((s, ones.copy()))
        rows.append((rng.integers(smin, smax + 1, n), rng.random(n) < 0.5))
    elif case == "extreme":
        # scores at both ends of score_width: deltas up to 2**score_width - 1, far beyond delta_max
        for ln in _lengths(cfg):
            s = np.where(np.arange(ln) % 2 == 0, smax, smin)
            rows.append((s, np.ones(ln, bool)))
            rows.append((np.where(np.arange(ln) % 2 == 0, smin, smin + 1), np.ones(ln, bool)))
            rows.append((np.where(np.arange(ln) % 3 == 0, -1, smin), np.ones(ln, bool)))
            rows.append((np.where(np.arange(ln) % 2 == 0, 0, smax), np.ones(ln, bool)))
    elif case == "ties_max":
        for ties in sorted({2, 3, n // 2, n} - {0, 1}):
            if ties > n:
                continue
            s = np.clip(rng.integers(-dmax, 0, n) + 7, smin, smax)
            pos = rng.choice(n, ties, replace=False)
            s[pos] = 7 + (1 if n > ties else 0)
            rows.append((s, ones.copy()))
        rows.append(([5, 5], [True, True]))
    elif case == "all_pruned_but_one":
        for j in (0, n // 2, n - 1):
            s = rng.integers(smin, smax + 1, n)
            keep = np.zeros(n, bool)
            keep[j] = True
            rows.append((s, keep))
    elif case == "delta_boundary":
        # deltas around delta_max and around every integer exponent (t = multiples of 2**E)
        deltas = {0, 1, dmax - 1, dmax, dmax + 1}
        for i in range(cfg.exp_bits + 2):
            d0 = -(-((i << cfg.exp_frac) << k.scale_shift) // k.scale)
            deltas |= {d0 - 1, d0, d0 + 1}
        deltas = sorted(d for d in deltas if 0 <= d <= smax)
        for start in range(0, len(deltas), max(1, n - 1)):
            chunk = deltas[start:start + max(1, n - 1)]
            s = np.array([0] + [-d for d in chunk])[:n]
            rows.append((s, np.ones(len(s), bool)))
    else:
        raise ValueError(f"case must be one of {', '.join(CASES)}, not {case!r}")
    return rows


DIRECTED_CASES = ("all_equal", "single_kept", "none_kept", "length_one", "full_length", "extreme",
                  "ties_max", "all_pruned_but_one", "delta_boundary")
CASES = DIRECTED_CASES + ("random", "fixture")


def directed_vectors(cfg: HDPConfig, case: str, seed: int = 0) -> SoftmaxVectors:
    """A directed case by name (see :data:`DIRECTED_CASES`)."""
    return rows_to_vectors(cfg, case, _directed_rows(cfg, case, _rng(cfg, case, seed)))


def random_vectors(cfg: HDPConfig, seed: int, n_rows: int = 16) -> SoftmaxVectors:
    """``n_rows`` seeded rows: random length (a third full length), keep density, score centre
    and spread (from a tenth of ``delta_max`` to twice it, sometimes the whole width)."""
    rng = _rng(cfg, "random", seed)
    smin, smax = -(1 << (cfg.score_width - 1)), (1 << (cfg.score_width - 1)) - 1
    dmax = softmax_constants(cfg).delta_max
    lo, hi = cfg.score_range
    rows = []
    for _ in range(n_rows):
        ln = cfg.seq_len if rng.random() < 0.33 else int(rng.integers(1, cfg.seq_len + 1))
        keep = rng.random(ln) < rng.choice([0.2, 0.6, 1.0, 1.0])
        if rng.random() < 0.15:
            s = rng.integers(smin, smax + 1, ln)
        else:
            centre = int(rng.integers(lo, hi + 1))
            spread = max(1, int(dmax * rng.uniform(0.1, 2.0)))
            s = np.clip(centre + rng.integers(-spread, spread + 1, ln), smin, smax)
        rows.append((s, keep))
    return rows_to_vectors(cfg, f"random(seed={seed})", rows)


def fixture_available(cfg: HDPConfig, name: str | None = None) -> str | None:
    """``None`` when :func:`fixture_vectors` can run for ``cfg``, else the reason why not."""
    from sim import fixtures
    if not fixtures.fixture_names():
        return "no MiniLM fixture in tests/data"
    fx = fixtures.fixture_path(name)
    if not fx.is_file():
        return f"fixture file {fx.name} is missing"
    if cfg.head_dim != 32:
        return f"the MiniLM fixture has head_dim 32, the configuration {cfg.head_dim}"
    return None


def fixture_vectors(cfg: HDPConfig, name: str | None = None, heads: tuple[int, ...] = (0,),
                    max_rows: int | None = None) -> SoftmaxVectors:
    """Rows of real scores: the golden model (:func:`golden.model.attention_head`) on heads
    ``heads`` of the MiniLM fixture ``name``, with this configuration's pruning; each row is
    the query's scores ``S`` over keys ``0..valid_len-1`` and the entries it keeps."""
    from golden.model import attention_head
    from sim.fixtures import load_fixture
    why = fixture_available(cfg, name)
    if why:
        raise ValueError(why)
    fx = load_fixture(name)
    n = fx["q"].shape[1]
    if n > cfg.seq_len:
        raise ValueError(f"fixture length {n} exceeds seq_len = {cfg.seq_len}")
    rows = []
    for h in heads:
        res = attention_head(fx["q"][h], fx["k"][h], fx["v"][h], cfg, fx["valid_len"])
        vl = fx["valid_len"]
        for i in range(vl):
            rows.append((res.scores[i, :vl], res.entry_keep[i, :vl]))
    if max_rows is not None:
        rows = rows[:max_rows]
    return rows_to_vectors(cfg, f"fixture({fx['name']}, heads={list(heads)})", rows)


def vector_set(cfg: HDPConfig, case: str, seed: int = 0) -> SoftmaxVectors:
    """Any case by name: a directed one, ``random`` (with ``seed``) or ``fixture``."""
    if case == "random":
        return random_vectors(cfg, seed)
    if case == "fixture":
        return fixture_vectors(cfg, heads=(seed % 72,))
    return directed_vectors(cfg, case, seed)


def merge(name: str, sets: list[SoftmaxVectors]) -> SoftmaxVectors:
    """Several sets streamed back to back as one."""
    return SoftmaxVectors(name, [r for v in sets for r in v.s], [r for v in sets for r in v.keep],
                          [r for v in sets for r in v.p])


def pack_in(cfg: HDPConfig, beat: dict) -> int:
    """An ``s_in`` payload as an integer, packed with the unit's own layout."""
    return s_in_layout(cfg).const(beat).as_bits()


def unpack_out(cfg: HDPConfig, bits: int) -> dict:
    """A ``p_out`` payload integer as ``{"p", "last"}``, unpacked with the unit's own layout."""
    v = p_out_layout(cfg).from_bits(bits)
    return {"p": int(v.p), "last": int(v.last)}


def first_mismatch(cfg_name: str, seed: int, vec: SoftmaxVectors, actual: list[dict]) -> str | None:
    """``None`` when ``actual`` equals :meth:`SoftmaxVectors.out_beats` whole, else a message
    naming the configuration, seed, set, row, index, expected and actual."""
    expected = vec.out_beats()
    for i, (e, a) in enumerate(zip(expected, actual)):
        if e != a:
            row, j = vec.locate(i)
            return (f"softmax mismatch: config={cfg_name} seed={seed} set={vec.name} beat={i} "
                    f"row={row} index={j}: expected {e}, actual {a} "
                    f"(s={int(vec.s[row][j])}, keep={int(vec.keep[row][j])})")
    if len(actual) != len(expected):
        return (f"softmax length mismatch: config={cfg_name} seed={seed} set={vec.name}: "
                f"expected {len(expected)} beats, got {len(actual)}")
    return None
