"""The operands of one head: quantizing float Q, K, V, and checking quantized ones (shared by
both score front ends, :mod:`golden.model` and :mod:`golden.leopard`)."""

from .intmath import quantize

__all__ = ["quantize_qkv", "check_shapes"]


def quantize_qkv(q, k, v, cfg):
    """Float Q, K (``qk_bits``, ``qk_frac``) and V (``v_bits``, ``v_frac``) to integers."""
    return (quantize(q, cfg.qk_bits, cfg.qk_frac), quantize(k, cfg.qk_bits, cfg.qk_frac),
            quantize(v, cfg.v_bits, cfg.v_frac))


def check_shapes(q_q, k_q, v_q, cfg, valid_len):
    """``ValueError`` unless q, k, v are (N, d) integer arrays of one shape within the
    configured widths and ``1 <= valid_len <= N <= seq_len``."""
    if q_q.ndim != 2:
        raise ValueError(f"q, k, v must have shape (N, d), not {q_q.shape}")
    n, d = q_q.shape
    if k_q.shape != (n, d) or v_q.shape != (n, d):
        raise ValueError(f"q, k, v must share one shape (N, d); got {q_q.shape}, {k_q.shape}, "
                         f"{v_q.shape}")
    if d != cfg.head_dim:
        raise ValueError(f"head dimension must equal head_dim = {cfg.head_dim}, not {d}")
    if not 1 <= n <= cfg.seq_len:
        raise ValueError(f"sequence length must be in [1, seq_len] = [1, {cfg.seq_len}], not {n}")
    if not 1 <= valid_len <= n:
        raise ValueError(f"valid_len must be in [1, N] = [1, {n}], not {valid_len}")
    for name, x, bits in (("q", q_q, cfg.qk_bits), ("k", k_q, cfg.qk_bits), ("v", v_q, cfg.v_bits)):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"quantized {name} must be in [{lo}, {hi}] ({bits} bits), "
                             f"found [{x.min()}, {x.max()}]")
