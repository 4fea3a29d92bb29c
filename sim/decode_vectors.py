"""Test vectors of the Token-Picker decode units (``hw/decode``): float data shaped like decode
attention, and the per-head expectations derived from :func:`golden.token_picker.decode_step`."""

import numpy as np

from golden import token_picker as tp

__all__ = ["synthetic_step", "random_step", "extreme_step", "head_expectations"]


def synthetic_step(seed: int, n_q: int, n_kv: int, n_cache: int, d: int, n: int):
    """Attention-like floats: keys N(0, 1) with a sink at position 0; per group a peaked head
    (two recent tokens), a medium head (six tokens and the sink) and a diffuse head (sink and
    noise), cycling over the group's heads.  Returns ``(q, k, v)``."""
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(n_kv, n_cache, d))
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    k[:, 0] += 4.0 * u
    v = rng.normal(size=(n_kv, n_cache, d))
    group = n_q // n_kv
    q = np.empty((n_q, d))
    for h in range(n_q):
        g, kind = h // group, h % 3
        if kind == 0:
            tgt = rng.choice(np.arange(max(0, n - 8), n), 2, replace=False)
            q[h] = 10.0 * k[g, tgt].sum(0) / np.linalg.norm(k[g, tgt].sum(0))
        elif kind == 1:
            tgt = rng.choice(n, 6, replace=False)
            q[h] = 3.0 * k[g, tgt].sum(0) / np.linalg.norm(k[g, tgt].sum(0)) + 6.0 * u
        else:
            q[h] = rng.normal(scale=0.15, size=d) + 8.0 * u
        q[h] += rng.normal(scale=0.1, size=d)
    return q, k, v


def random_step(seed: int, n_q: int, n_kv: int, n_cache: int, d: int, cfg: tp.TokenPickerConfig):
    """Uniform random integers over the full signed ranges, random ``frac`` per head."""
    rng = np.random.default_rng(seed)

    def ints(shape, bits, heads):
        x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape)
        return tp.Quantized(x.astype(np.int64), rng.integers(0, bits, size=heads))
    return (ints((n_q, d), cfg.q_bits, n_q), ints((n_kv, n_cache, d), cfg.k_bits, n_kv),
            ints((n_kv, n_cache, d), cfg.v_bits, n_kv))


def extreme_step(seed: int, n_q: int, n_kv: int, n_cache: int, d: int,
                 cfg: tp.TokenPickerConfig):
    """Values only at the ends of their ranges (and 0, -1): the widest bounds and products,
    the largest ``sf``."""
    rng = np.random.default_rng(seed)

    def ints(shape, bits, heads):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        x = rng.choice(np.array([lo, hi, 0, -1, lo + 1]), size=shape, p=[.4, .4, .1, .05, .05])
        return tp.Quantized(x.astype(np.int64), np.full(heads, bits - 1, np.int64))
    return (ints((n_q, d), cfg.q_bits, n_q), ints((n_kv, n_cache, d), cfg.k_bits, n_kv),
            ints((n_kv, n_cache, d), cfg.v_bits, n_kv))


def head_expectations(r: tp.StepResult, h: int, group: int, n: int, sf: int, d: int,
                      eps_q: int, cfg: tp.TokenPickerConfig) -> list[dict]:
    """Per chunk, what query head ``h``'s pruning unit must output: the alive mask after the
    chunk (int, bit j = token j), ``m`` and ``sigma`` (0 when ``eps_q = 0``)."""
    n_cache = r.keep.shape[1]
    valid = np.arange(n_cache) < n
    last_lo = np.zeros(n_cache, np.int64)
    out = []
    for c in range(cfg.n_chunks):
        dc = r.drop_chunk[h]
        before = valid & ((dc == 0) | (dc > c))
        after = valid & ((dc == 0) | (dc > c + 1))
        last_lo[before] = r.lower[c, h, before]
        mx = int(r.lower[c, h, before].max())
        sigma = 0
        if eps_q:
            sigma = tp.denominator(last_lo, last_lo, valid, mx, sf, d, cfg)
        out.append({"chunk": c, "alive": int(sum(1 << int(j) for j in np.flatnonzero(after))),
                    "m": mx, "sigma": sigma})
    return out
