"""How many probability fraction bits long softmax rows need: the golden softmax
(:func:`golden.softmax.softmax_rows`) against float softmax of the same quantized scores on real
MiniLM attention, for ``prob_frac`` 8 ... 14.

Every head of each capture (72 heads, exact scores, no pruning) runs through the golden model with
only ``prob_frac`` changed (and ``seq_len`` raised to the capture's length).  Per setting:

* ``zeroed``: the float probability mass of kept entries whose golden probability rounds to 0,
  per row (mean over rows, and the worst row);
* ``max|dp|``: the largest ``|p / 2**prob_frac - p_float|`` of any entry;
* ``|sum-1|``: the worst row's ``|sum p / 2**prob_frac - 1|``;
* ``out rel``: the golden output ``O`` against float ``softmax(S) V`` (same quantized V),
  ``||O - O_float|| / ||O_float||`` over all heads.

``--tile T`` repeats each capture's keys and values T times (a row of ``T * N`` entries whose
every probability is the original's divided by T): a stand-in for attention rows longer than the
captures (MiniLM truncates to 256 tokens).  Reproduce (seconds per capture; the figures of
docs/spec.md's table)::

    .venv/bin/python bench/prob_frac.py                               # tests/data/minilm_para128.npz
    .venv/bin/hdpgen capture --sentences bench/long_texts.txt --out /tmp/long.npz
    .venv/bin/python bench/prob_frac.py --npz /tmp/long_01.npz                # 256 keys
    .venv/bin/python bench/prob_frac.py --npz /tmp/long_01.npz --tile 2       # 512 keys
"""

import argparse
import sys

import numpy as np
from benchutil import ROOT, run_main

sys.path.insert(0, str(ROOT))

from golden.model import attention_head  # noqa: E402
from hdpgen.npz_io import load_qkv  # noqa: E402
from hw.presets import preset  # noqa: E402


def measure(q, k, v, nq, cfg) -> dict:
    """The figures above for one capture (all heads) at one configuration: the first ``nq``
    rows (queries) against every key."""
    zeroed, worst_dp, worst_sum, err2, ref2 = [], 0.0, 0.0, 0.0, 0.0
    scale = 2.0 ** (-2 * cfg.qk_frac) / np.sqrt(cfg.head_dim)
    for h in range(q.shape[0]):
        r = attention_head(q[h], k[h], v[h], cfg)
        keep = r.entry_keep[:nq]
        s = np.where(keep, r.scores[:nq] * scale, -np.inf)
        pf = np.exp(s - s.max(axis=1, keepdims=True))
        pf /= pf.sum(axis=1, keepdims=True)
        p = r.probs[:nq] / float(1 << cfg.prob_frac)
        zeroed.append(np.where(keep & (r.probs[:nq] == 0), pf, 0).sum(axis=1))
        worst_dp = max(worst_dp, float(np.abs(p - pf).max()))
        worst_sum = max(worst_sum, float(np.abs(p.sum(axis=1) - 1).max()))
        of = pf @ (r.v_q / float(1 << cfg.v_frac))
        o = r.out_int[:nq] / float(1 << cfg.out_frac)
        err2 += float(((o - of) ** 2).sum())
        ref2 += float((of ** 2).sum())
    z = np.concatenate(zeroed)
    return {"zeroed_mean": float(z.mean()), "zeroed_max": float(z.max()), "max_dp": worst_dp,
            "sum_err": worst_sum, "out_rel": (err2 / ref2) ** 0.5}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench/prob_frac", description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", default=str(ROOT / "tests" / "data" / "minilm_para128.npz"),
                    help="a capture (hdpgen capture; default: the bundled 128-token paragraph)")
    ap.add_argument("--tile", type=int, default=1, help="repeat the keys T times (default 1)")
    ap.add_argument("--prob-frac", type=int, nargs="+", default=list(range(8, 15)))
    args = ap.parse_args(argv)
    d = load_qkv(args.npz)
    valid_len = int(d["valid_len"])
    q, k, v = d["q"], d["k"], d["v"]
    q, k, v = q[:, :valid_len], k[:, :valid_len], v[:, :valid_len]
    if args.tile > 1:
        # queries keep their length; keys and values repeat (each probability divides by T)
        k, v = np.tile(k, (1, args.tile, 1)), np.tile(v, (1, args.tile, 1))
        q = np.concatenate([q, np.zeros((q.shape[0], k.shape[1] - valid_len, q.shape[2]),
                                        q.dtype)], axis=1)
    n = k.shape[1]
    base = preset("default").replace(seq_len=max(n, 128), prune_mode="off", approx="exact")
    print(f"{args.npz}: {q.shape[0]} heads, {valid_len} queries x {n} keys "
          f"(tile {args.tile}), exact scores, no pruning")
    print("| prob_frac | zeroed mass mean / worst row | max abs dp | worst abs(row sum - 1) "
          "| out rel err |")
    print("|---|---|---|---|---|")
    for pf in args.prob_frac:
        cfg = base.replace(prob_frac=pf)
        m = measure(q, k, v, valid_len, cfg)
        print(f"| {pf} | {m['zeroed_mean']:.2e} / {m['zeroed_max']:.3f} | {m['max_dp']:.2e} | "
              f"{m['sum_err']:.2e} | {m['out_rel']:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main("bench/prob_frac", main))
