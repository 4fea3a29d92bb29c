"""``hdpgen eval-decoder``: perplexity of SmolLM2-135M-Instruct, dense against Token-Picker pruned
(extra ``decoder``: ``make setup-decoder``; see :mod:`hdpgen.smollm`).

Texts: ``--texts FILE`` (default the bundled ``hdpgen/data/decoder_texts.txt``), separated by
blank lines, ``#`` comment lines skipped (:func:`hdpgen.smollm.read_texts`).  Each text runs
once through the model without any change (dense) and once per ``--eps`` value with every
layer's attention pruned: for every query position ``p`` and layer, the post-RoPE query of the
9 query heads and the K and V cache of positions ``0..p`` are quantized
(:func:`golden.token_picker.quantize_step`, scales chosen from that cache) and run
through :func:`golden.token_picker.decode_step` (K ``k_bits`` bits read in ``chunk_bits``-bit
chunks, cache length N = p + 1); the keys it drops for a query head are masked out of that
head's float attention at ``p``.  Everything else (the scores and softmax of the kept keys, the
rest of the model) stays float, so the change in perplexity is the effect of the pruning
decision alone.

Perplexity is ``exp`` of the mean next-token negative log-likelihood over all predicted tokens
of all texts.  K and V words are the golden model's counts (``k_words_read``,
``v_words_read``), summed over layers, positions and KV heads; tokens kept are the fraction of
(query head, position, cached token) triples kept, and the same per KV head (a token is read
when any query head of the group keeps it).  The words are also given for the query positions
at or past ``--late-from`` alone (long caches).
"""

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from golden import token_picker as tp

from .cmd_decode import check_eps_v, config_from_settings
from .common import CliError, check_output_file, write_json

__all__ = ["configure", "main", "DEFAULT_TEXTS", "PruneCounter"]

DEFAULT_TEXTS = Path(__file__).parent / "data" / "decoder_texts.txt"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, metavar="FILE",
                   help="texts separated by blank lines (default: the bundled "
                        "hdpgen/data/decoder_texts.txt)")
    p.add_argument("--eps", type=float, nargs="+", default=[1e-3], metavar="E",
                   help="pruning threshold(s) (default 1e-3)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a TokenPickerConfig field, e.g. k_bits=12, chunk_bits=4 (repeatable)")
    p.add_argument("--eps-v", type=float, default=0.0, metavar="E",
                   help="with --set v_lo_bits=L: a KV head reads V's low L bits only for the "
                        "tokens a query head may give a probability >= E (default 0: always)")
    p.add_argument("--max-texts", type=int, metavar="N", help="use only the first N texts")
    p.add_argument("--late-from", type=int, default=200, metavar="P",
                   help="also give the words read at query positions >= P alone (default 200: "
                        "long caches, where a decoder spends its memory traffic)")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="write the figures as JSON")


@dataclasses.dataclass
class PruneCounter:
    """The hook of one pruned run: masks and counts (summed over layers, positions, heads)."""
    eps: float
    cfg: tp.TokenPickerConfig
    eps_v: float = 0.0
    k_read: int = 0
    k_dense: int = 0
    v_read: int = 0
    v_dense: int = 0
    kept_q: int = 0
    valid_q: int = 0
    kept_kv: int = 0
    valid_kv: int = 0
    layer_kept: dict = dataclasses.field(default_factory=dict)   # layer -> [kept_q, valid_q]
    late_from: int = 200
    #: K read, K dense, V read, V dense at query positions >= late_from
    late: list = dataclasses.field(default_factory=lambda: [0, 0, 0, 0])

    def __call__(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        nq, t, _ = q.shape
        nkv = k.shape[0]
        allow = np.zeros((nq, t, t), bool)
        delta = np.zeros(q.shape, np.float64) if self.cfg.v_lo_bits else None
        lk = self.layer_kept.setdefault(layer, [0, 0])
        for p in range(t):
            n = p + 1
            qq, kq, vq = tp.quantize_step(q[:, p], k[:, :n], v[:, :n], self.cfg)
            r = tp.decode_step(qq, kq, vq, n, self.eps, self.cfg, self.eps_v)
            allow[:, p, :n] = r.keep
            if delta is not None:
                delta[:, p] = _coarse_v_delta(q[:, p], k[:, :n], v[:, :n], vq, r, self.cfg)
            st = r.stats
            words = (int(st.k_words_read.sum()), st.k_words_dense * nkv,
                     int(st.v_words_read.sum()), st.v_words_dense * nkv)
            self.k_read += words[0]
            self.k_dense += words[1]
            self.v_read += words[2]
            self.v_dense += words[3]
            if p >= self.late_from:
                self.late = [a + b for a, b in zip(self.late, words)]
            kq_ = int(st.kept_q.sum())
            self.kept_q += kq_
            self.valid_q += n * nq
            self.kept_kv += int(st.kept_kv.sum())
            self.valid_kv += n * nkv
            lk[0] += kq_
            lk[1] += n * nq
        return allow if delta is None else (allow, delta)

    def figures(self) -> dict:
        kv_r, kv_d = self.k_read + self.v_read, self.k_dense + self.v_dense
        lk, lkd, lv, lvd = self.late
        late = {"from_position": self.late_from, "k_words_read": lk, "k_words_dense": lkd,
                "v_words_read": lv, "v_words_dense": lvd}
        if lkd:
            late |= {"k_ratio": lk / lkd, "v_ratio": lv / lvd, "kv_ratio": (lk + lv) / (lkd + lvd),
                     "fewer_kv_words": (lkd + lvd) / (lk + lv)}
        return {"k_words_read": self.k_read, "k_words_dense": self.k_dense,
                "k_ratio": self.k_read / self.k_dense, "v_words_read": self.v_read,
                "v_words_dense": self.v_dense, "v_ratio": self.v_read / self.v_dense,
                "kv_words_read": kv_r, "kv_words_dense": kv_d, "kv_ratio": kv_r / kv_d,
                "fewer_kv_words": kv_d / kv_r, "late": late,
                "kept_per_query_head": self.kept_q / self.valid_q,
                "kept_per_kv_head": self.kept_kv / self.valid_kv,
                "kept_per_query_head_by_layer": {str(li): a / b for li, (a, b) in
                                                 sorted(self.layer_kept.items())}}


def _coarse_v_delta(q, k, v, vq: tp.Quantized, r: tp.StepResult, cfg: tp.TokenPickerConfig):
    """What the V rows a step reads coarse change in each query head's float attention output:
    ``sum_j P_j * (coarse_j - v_j)`` over the kept tokens whose low V plane the KV head did not
    read, with ``P`` the float softmax over the head's kept tokens and ``coarse_j`` the value
    the step multiplies (:func:`golden.token_picker.coarse_v`, dequantized)."""
    nq, d = q.shape
    n_kv, n = v.shape[:2]
    kv_of = np.arange(nq) // (nq // n_kv)
    keep = r.keep[:, :n]
    coarse = keep & ~r.read_v_lo[kv_of, :n]
    if not coarse.any():
        return np.zeros((nq, d))
    s = np.einsum("hd,hnd->hn", np.asarray(q, np.float64), np.asarray(k, np.float64)[kv_of])
    s = np.where(keep, s / math.sqrt(d), -np.inf)
    prob = np.exp(s - s.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    scale = np.exp2(-np.asarray(vq.frac, np.float64))[:, None, None]
    diff = tp.coarse_v(vq.x[:, :n], cfg) * scale - np.asarray(v, np.float64)   # (n_kv, n, d)
    return np.einsum("hn,hnd->hd", np.where(coarse, prob, 0.0), diff[kv_of])


def _nll_sum(model, ids, hook=None) -> float:
    out = model.run(ids, hook, labels=True)
    return float(out.loss) * (int(ids.shape[1]) - 1)


def main(args: argparse.Namespace) -> int:
    from . import smollm

    cfg = config_from_settings(args.settings)
    for e in args.eps:
        if e == 0:
            raise CliError("--eps 0 prunes nothing (it is the dense run); give values in (0, 1)")
        tp.eps_q_of(e, cfg)
    check_eps_v(args.eps_v, cfg)
    if args.late_from < 0:
        raise CliError(f"--late-from must be >= 0, not {args.late_from}")
    if args.max_texts is not None and args.max_texts < 1:
        raise CliError(f"--max-texts must be >= 1, not {args.max_texts}")
    try:
        texts = smollm.read_texts(args.texts)
    except OSError as exc:
        raise CliError(f"cannot read --texts {args.texts}: {exc.strerror or exc}") from None
    texts = texts[:args.max_texts] if args.max_texts else texts
    if args.json is not None:
        check_output_file(args.json, "--json")
    smollm.require_extra()
    t0 = time.time()
    model = smollm.load()
    ids = [model.tokenize(t) for t in texts]
    lengths = [int(x.shape[1]) for x in ids]
    short = [i for i, n in enumerate(lengths) if n < 2]
    if short:
        raise CliError(f"text {short[0]} of {args.texts} has fewer than 2 tokens")
    predicted = sum(n - 1 for n in lengths)
    print(f"hdpgen eval-decoder: {len(texts)} texts, {sum(lengths)} tokens "
          f"({', '.join(map(str, lengths))}); model loaded in {time.time() - t0:.0f} s",
          file=sys.stderr)
    dense_nll = sum(_nll_sum(model, x) for x in ids)
    ppl_dense = math.exp(dense_nll / predicted)
    results = []
    for e in args.eps:
        t1 = time.time()
        counter = PruneCounter(e, cfg, args.eps_v, late_from=args.late_from)
        nll = 0.0
        for i, x in enumerate(ids):
            nll += _nll_sum(model, x, counter)
            print(f"  eps {e:g}: text {i + 1}/{len(ids)} done ({time.time() - t1:.0f} s)",
                  file=sys.stderr)
        ppl = math.exp(nll / predicted)
        results.append({"eps": e, "ppl_dense": ppl_dense, "ppl_pruned": ppl,
                        "ppl_rel_change": ppl / ppl_dense - 1, **counter.figures(),
                        "seconds": time.time() - t1})
    report = {"model": smollm.MODEL_ID, "texts": str(args.texts), "n_texts": len(texts),
              "tokens": lengths, "predicted_tokens": predicted, "config": dataclasses.asdict(cfg),
              "eps_v": args.eps_v,
              "results": results}
    print(f"hdpgen eval-decoder: {smollm.MODEL_ID}, {len(texts)} texts, {predicted} predicted "
          f"tokens, K {cfg.k_bits} bits in {cfg.chunk_bits}-bit chunks"
          + (f", V's low {cfg.v_lo_bits} bits read at eps_v {args.eps_v:g}" if cfg.v_lo_bits
             else ""))
    print(f"  perplexity dense {ppl_dense:.4f}")
    for r in results:
        print(f"  eps {r['eps']:g}: perplexity {r['ppl_pruned']:.4f} ({r['ppl_rel_change']:+.2%}); "
              f"K words {r['k_words_read']} of {r['k_words_dense']} ({r['k_ratio']:.3f}), "
              f"V words {r['v_words_read']} of {r['v_words_dense']} ({r['v_ratio']:.3f}), "
              f"K+V {r['kv_ratio']:.3f} ({r['fewer_kv_words']:.2f}x fewer); tokens kept "
              f"{r['kept_per_query_head']:.1%} per query head, {r['kept_per_kv_head']:.1%} per "
              f"KV head")
        late = r["late"]
        if late["k_words_dense"]:
            print(f"    at positions >= {late['from_position']}: K {late['k_ratio']:.3f}, "
                  f"V {late['v_ratio']:.3f}, K+V {late['kv_ratio']:.3f} "
                  f"({late['fewer_kv_words']:.2f}x fewer)")
    if args.json is not None:
        try:
            write_json(args.json, report)
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"  -> {args.json}")
    return 0
