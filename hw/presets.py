"""Named configurations.

``tiny``
    The smallest useful accelerator, for fast tests: N = 8, d = 4, 2 x 2 blocks, 2 x 2 array,
    8 probability bits (below the default's 12: rows of 8 need no more, and the formal proofs
    stay fast).
``odd``
    Non-power-of-two everything: N = 13, d = 5, 3 x 2 blocks (N is a multiple of neither),
    top-k budget k_frac = 1/4, a 3 x 5 array (R != C), threshold pruning and causal masking;
    7 probability bits.
``default``
    N = 128, d = 32.  d is the head size of all-MiniLM-L6-v2 (384 hidden / 12 heads), the real
    model whose attention is bundled in ``tests/data``; a default that matches it lets the
    bundled data run through the hardware without reshaping.  2 x 2 blocks as in HDP.  Exact
    scores and the probability-mass pruner with eps = 28/256 = 0.109375: each block-row keeps
    the fewest blocks holding 1 - eps of its estimated softmax mass.  Of the settings the
    hardware runs, the one that prunes the most while the bundled evaluation texts
    (``hdpgen/data/eval_texts.txt``, 4 to 128 tokens) keep mean and minimum sentence-embedding
    cosine >= 0.99 (``hdpgen eval --setting mass=0.109375 --set approx=exact``: keeps 0.47 of
    the valid blocks, cosine mean 0.994, min 0.991; eps = 29/256 keeps 0.466 at min 0.9906,
    32/256 falls to min 0.986).  Top-k, the best fixed budget, needs k_frac = 172/256 (keeps
    0.68) for the same floor; its register default stays there for a driver that switches
    the mode.  Exact scores cost no cycle here: the array forms the whole score in either mode.
    A 2 x 8 array: a tile's rows must share one block-row's kept key columns, so the array is
    as tall as a block (``array_rows == block_rows``, the co-design rule) and narrow, so that a
    tile of 8 gathered keys is fine enough to skip pruned blocks of short sentences.
``leopard``
    The default's sizes with the LeOPArd front end instead of HDP's: every score is computed
    bit-serially on ``leopard_lanes = 8`` lanes, most significant bit of k first, and stops as
    soon as it provably cannot reach the logit threshold ``leopard_th``; the kept entries'
    exact scores go to the same softmax and P x V stages.  ``leopard_th = -1.0625`` is the
    largest uniform threshold (multiples of 1/16) at which the bundled evaluation texts
    (``hdpgen/data/eval_texts.txt``, 32 texts) keep cosine >= 0.99, mean 0.9973 and minimum
    0.9914, with 53.8 % of the valid score entries kept and 84.8 % of the dense bits read
    (-1.0 falls to a minimum of 0.98996).  ``hdpgen calibrate --mode leopard`` on
    ``calib_texts.txt`` finds -2.5625 uniform (held back by a 4-token text at 0.9904 before
    any pruning) and -2.3125 to -0.1875 per layer (``docs/leopard.md``, "Calibration");
    per-layer values come from a calibration file.
``large``
    The scale point: N = 512, d = 64 (the head size of BERT-base and most 12-head encoders),
    otherwise the default's choices, top-k keeping 3/4 of each block-row's valid blocks.  On-chip
    memory grows with ``N * d``, not ``N^2`` (the top stores no score matrix).  Its 12
    probability bits hold a 512-key row's mass lost to zeros to 0.5 % (19 % with 8 bits).
    It fits the LFE5U-85F by cell count (65 % of its logic sites) but does not route there;
    the largest tops that do are N = 256 at d = 32 and N = 128 at d = 64
    (``docs/toolchain.md``, "How far the top scales on the LFE5U-85F").
"""

from .config import HDPConfig

__all__ = ["PRESETS", "preset", "preset_names"]

PRESETS: dict[str, HDPConfig] = {
    "tiny": HDPConfig(seq_len=8, head_dim=4, n_heads=2, block_rows=2, block_cols=2,
                      k_frac=0.5, array_rows=2, array_cols=2, exp_bits=12, prob_frac=8,
                      out_bits=12, out_frac=6),
    "odd": HDPConfig(seq_len=13, head_dim=5, n_heads=3, qk_bits=7, qk_frac=3, v_bits=6, v_frac=3,
                     prob_frac=7, out_bits=11, out_frac=5, exp_frac=3, exp_bits=11,
                     block_rows=3, block_cols=2, k_frac=0.25, prune_mode="threshold", rho=0.375,
                     criterion="abs_sum", causal=True, array_rows=3, array_cols=5),
    "default": HDPConfig(approx="exact", prune_mode="mass", eps=0.109375, k_frac=0.671875),
    # the scale point: N = 512, d = 64 (BERT-base-like heads), top-k keeping 3/4 of the blocks
    "large": HDPConfig(seq_len=512, head_dim=64, k_frac=0.75),
    "leopard": HDPConfig(front_end="leopard", prune_mode="off", approx="exact", leopard_th=-1.0625,
                         leopard_lanes=8, k_frac=0.671875),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str) -> HDPConfig:
    """The named preset; an unknown name is a ``ValueError`` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}") from None
