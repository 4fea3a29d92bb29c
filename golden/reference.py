"""Float reference attention (float64, no quantization) for accuracy checks only."""

import numpy as np

from .pruner import entry_mask

__all__ = ["float_attention", "float_attention_head"]


def float_attention_head(q, k, v, valid_len: int | None = None, causal: bool = False,
                         keep: np.ndarray | None = None) -> np.ndarray:
    """``softmax(Q K^T / sqrt(d)) V`` over the valid entries (and ``keep`` if given);
    rows with no entry are zero."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    n, d = q.shape
    m = entry_mask(n, n if valid_len is None else valid_len, causal)
    if keep is not None:
        m = m & keep
    s = np.where(m, q @ k.T / np.sqrt(d), -np.inf)
    mx = s.max(axis=1, keepdims=True)
    e = np.where(m, np.exp(s - np.where(np.isfinite(mx), mx, 0)), 0.0)
    tot = e.sum(axis=1, keepdims=True)
    p = np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)
    return p @ v


def float_attention(q, k, v, valid_len: int | None = None, causal: bool = False) -> np.ndarray:
    """Every head of (H, N, d) float inputs."""
    return np.stack([float_attention_head(q[h], k[h], v[h], valid_len, causal)
                     for h in range(np.asarray(q).shape[0])])
