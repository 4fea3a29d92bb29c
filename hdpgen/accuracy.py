"""Accuracy of fixed-point attention against float attention (tolerances live only here)."""

import numpy as np

from golden import attention
from golden.reference import float_attention

__all__ = ["compare_outputs", "per_head_rel_rms", "golden_accuracy", "accuracy_steps"]


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


def per_head_rel_rms(out: np.ndarray, ref: np.ndarray, valid_len: int | None = None) -> list[float]:
    """Relative RMS error of every head of (H, N, d) outputs over its valid rows."""
    n = out.shape[1] if valid_len is None else valid_len
    o = np.asarray(out, np.float64)[:, :n]
    r = np.asarray(ref, np.float64)[:, :n]
    num = np.sqrt(((o - r) ** 2).sum(axis=(1, 2)))
    den = np.sqrt((r ** 2).sum(axis=(1, 2)))
    return [float(a / b) if b else 0.0 for a, b in zip(num, den)]


def _dense(cfg):
    return cfg.replace(prune_mode="off", approx="exact", head_prune=False)


def golden_accuracy(q, k, v, cfg, valid_len: int | None = None, rules=None) -> dict:
    """Golden model (as configured, or with ``rules``, one :class:`hdpgen.calibration.HeadRule`
    per head; and unpruned with exact scores) against float attention."""
    ref = float_attention(q, k, v, valid_len, cfg.causal)
    if rules is not None:
        from .calibration import attention as rule_attention
        pruned = rule_attention(q, k, v, cfg, valid_len, rules)
    else:
        pruned = attention(q, k, v, cfg, valid_len)
    dense = attention(q, k, v, _dense(cfg), valid_len)
    return {
        "result": pruned,
        "dense_result": dense,
        "pruned_vs_float": compare_outputs(pruned["out"], ref, valid_len),
        "unpruned_vs_float": compare_outputs(dense["out"], ref, valid_len),
        "float": ref,
    }


def accuracy_steps(q, k, v, cfg, valid_len: int | None = None, ga: dict | None = None) -> list[dict]:
    """Accuracy against float attention from the unpruned, exact-score model to ``cfg``, one
    setting at a time: each step changes exactly one thing against the step before it.

    Returns ``[{"name", "change", "setting", "metrics", "per_head_rel_rms"}]``: first the
    fixed-point model with pruning off and exact scores, then ``approx`` as configured, then
    ``prune_mode`` (block pruning) as configured, then ``head_prune`` as configured; a step
    that changes nothing (say, ``approx = exact``) is left out.  ``ga`` (from
    :func:`golden_accuracy` on the same data) saves computing the first and last steps again."""
    ga = ga or golden_accuracy(q, k, v, cfg, valid_len)
    ref = ga["float"]
    base = _dense(cfg)
    chain = [("fixed point, no pruning, exact scores", "quantized Q, K, V and integer softmax",
              {"prune_mode": "off", "approx": "exact", "head_prune": False}, base)]
    cur = base
    for field, label in (("approx", "scores"), ("prune_mode", "block pruning"),
                         ("head_prune", "head pruning")):
        want = getattr(cfg, field)
        if getattr(cur, field) == want:
            continue
        cur = cur.replace(**{field: want})
        if field == "prune_mode":
            what = (f"block pruning `{want}` (k_frac = {cfg.k_frac:g})" if want == "topk"
                    else f"block pruning `{want}` (rho = {cfg.rho})")
        elif field == "approx":
            what = f"scores `{want}`"
        else:
            what = f"head pruning on (tau_head = {cfg.tau_head})"
        chain.append((f"+ {label}", what, {field: want}, cur))
    steps = []
    for i, (name, change, setting, c) in enumerate(chain):
        if i == 0:
            out = ga["dense_result"]["out"]
        elif c == cfg:
            out = ga["result"]["out"]
        else:
            out = attention(q, k, v, c, valid_len)["out"]
        steps.append({"name": name, "change": change, "setting": setting,
                      "metrics": compare_outputs(out, ref, valid_len),
                      "per_head_rel_rms": per_head_rel_rms(out, ref, valid_len)})
    return steps
