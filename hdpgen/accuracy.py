"""Accuracy of fixed-point attention against float attention (tolerances live only here)."""

import numpy as np

from golden import attention
from golden.reference import float_attention

__all__ = ["compare_outputs", "golden_accuracy"]


def compare_outputs(out: np.ndarray, ref: np.ndarray, valid_len: int | None = None) -> dict:
    """Max abs error, relative RMS error (||out-ref|| / ||ref||) and mean row cosine over the
    valid rows of (H, N, d) outputs."""
    n = out.shape[1] if valid_len is None else valid_len
    o = np.asarray(out, np.float64)[:, :n].reshape(-1, out.shape[-1])
    r = np.asarray(ref, np.float64)[:, :n].reshape(-1, out.shape[-1])
    err = o - r
    num = np.sqrt((err ** 2).sum())
    den = np.sqrt((r ** 2).sum())
    on, rn = np.linalg.norm(o, axis=1), np.linalg.norm(r, axis=1)
    ok = (on > 0) & (rn > 0)
    cos = (o[ok] * r[ok]).sum(axis=1) / (on[ok] * rn[ok])
    return {"max_abs": float(np.abs(err).max()), "rel_rms": float(num / den) if den else 0.0,
            "mean_cosine": float(cos.mean()) if cos.size else 1.0,
            "zero_rows": int((~ok).sum())}


def golden_accuracy(q, k, v, cfg, valid_len: int | None = None) -> dict:
    """Golden model (as configured, and unpruned with exact scores) against float attention."""
    ref = float_attention(q, k, v, valid_len, cfg.causal)
    pruned = attention(q, k, v, cfg, valid_len)
    dense = attention(q, k, v, cfg.replace(prune_mode="off", approx="exact", head_prune=False),
                      valid_len)
    return {
        "result": pruned,
        "dense_result": dense,
        "pruned_vs_float": compare_outputs(pruned["out"], ref, valid_len),
        "unpruned_vs_float": compare_outputs(dense["out"], ref, valid_len),
        "float": ref,
    }
