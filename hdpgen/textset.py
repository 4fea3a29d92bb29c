"""Embedding accuracy of a per-layer pruning setting on a set of texts (extra ``eval``).

:class:`TextEvaluator` holds all-MiniLM-L6-v2, the texts and their reference embeddings (the
unmodified model).  :meth:`TextEvaluator.evaluate` runs every text with every attention head
replaced by the bit-exact golden model (:func:`golden.model.attention_head`), head ``h`` of
layer ``l`` under ``apply_setting(cfg, mode, values[l], N)`` (:mod:`hdpgen.calibration`), and
returns the figures ``hdpgen eval --json`` and ``hdpgen calibrate`` report: the kept fraction of
the valid score blocks (overall, per layer, per text), the cosine of each text's sentence
embedding with its reference, and both per length bucket.

The kept fraction of the valid score ENTRIES (``kept_entry_fraction``) is reported too; it is
the pruning figure of the LeOPArd front end (mode ``leopard``), which keeps single entries
(``kept_block_fraction`` is then the share of valid blocks holding at least one kept entry,
see :class:`golden.model.LeopardHeadResult`).  For it the figures also have ``bits_ratio``:
the bit-serial bits the front end reads over ``B`` bits for every valid entry.

Layer ``l``'s attention output depends only on the text and on the head rules of layers
``0..l`` (what :func:`hdpgen.calibration.apply_setting` makes of ``values[0..l]`` for the text's
length), so it is memoized under that key (up to ``cache_mb`` MB): a calibration search that
changes one layer at a time recomputes only that layer and the ones after it, and two top-k
fractions that give a text the same budget share the work.  (This relies on the model's float
layers being deterministic on the CPU, which they are for a fixed input.)
"""

import time
from collections import OrderedDict

import numpy as np

from golden import model

from .calibration import HeadRule, apply_setting, check_value
from .common import CliError

__all__ = ["BUCKETS", "TextEvaluator", "bucket_of", "check_lengths", "summarize"]

#: the head statistics (:func:`golden.model.attention_head`) summed per text and layer
COUNTS = ("blocks_kept", "blocks_valid", "kept_entries", "valid_pairs", "bits_processed",
          "bits_dense")
#: (name, lowest, highest) token counts, [CLS] and [SEP] included
BUCKETS = (("<=16", 1, 16), ("17-32", 17, 32), ("33-64", 33, 64), ("65-128", 65, 128))


def bucket_of(n: int) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= n <= hi:
            return name
    return f">{BUCKETS[-1][2]}"


def token_counts(lm, texts: list[tuple[int, str]]) -> list[int]:
    """Word pieces of each text with [CLS] and [SEP], not truncated."""
    return [len(lm.tokenizer(t, truncation=False)["input_ids"]) for _, t in texts]


def check_lengths(counts: list[int], texts: list[tuple[int, str]], seq_len: int, path) -> None:
    """Refuse (CliError naming the line, its token count and the limit) any text longer than
    the configuration's ``seq_len``: the hardware takes at most that many tokens."""
    for n, (line, text) in zip(counts, texts):
        if n > seq_len:
            head = text if len(text) <= 40 else text[:37] + "..."
            raise CliError(f"{path}: line {line} has {n} tokens ([CLS] and [SEP] included), more "
                           f"than the configuration's seq_len = {seq_len} ({head!r}); shorten "
                           f"or split it")


class TextEvaluator:
    def __init__(self, lm, texts: list[tuple[int, str]], cfg, counts: list[int],
                 cache_mb: int = 1024, say=None):
        self.lm, self.texts, self.cfg, self.counts = lm, texts, cfg, list(counts)
        self.say = say or (lambda msg: None)
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes, self._cache_max = 0, cache_mb << 20
        self.evaluations = 0
        import torch
        # one thread: the golden model runs between the float layers, and on a shared 2-core
        # machine torch's thread pool spins against it (measured 10x slower linear layers)
        torch.set_num_threads(1)
        self.ref = np.concatenate([lm.embed([t]) for _, t in texts])
        self.n_layers = len(lm.model.encoder.layer)

    # ------------------------------------------------------------------ one setting
    def _rule(self, mode: str, value, n: int) -> HeadRule:
        if mode == "off":  # no pruning; a LeOPArd base falls back to the HDP path, unpruned
            cfg = self.cfg
            if getattr(cfg, "front_end", "hdp") == "leopard":
                cfg = cfg.replace(front_end="hdp")
            return HeadRule(cfg.replace(prune_mode="off"))
        return apply_setting(self.cfg, mode, value, n)

    def evaluate(self, mode: str, values, label: str = "") -> dict:
        """Per-text cosines and kept blocks for ``mode`` with one value per layer."""
        values = tuple(values) if mode != "off" else (None,) * self.n_layers
        if len(values) != self.n_layers:
            raise ValueError(f"need {self.n_layers} values (one per layer), not {len(values)}")
        if mode != "off":
            for v in values:
                check_value(mode, v, self.cfg)
        t0 = time.monotonic()
        layers = self.n_layers
        # per text and layer: blocks kept, blocks valid, entries kept, valid pairs, bits read,
        # dense bits (the last two 0 off the LeOPArd front end)
        counts = np.zeros((len(self.texts), layers, len(COUNTS)), np.int64)
        cos = np.zeros(len(self.texts))
        for i, (_, text) in enumerate(self.texts):
            def attention(layer, q, k, v, i=i):
                rules = tuple(self._rule(mode, x, q.shape[1]) for x in values[:layer + 1])
                key = (i, layer, rules)
                hit = self._cache.get(key)
                if hit is None:
                    rule = rules[-1]
                    outs, c = [], np.zeros(len(COUNTS), np.int64)
                    for h in range(q.shape[0]):
                        r = model.attention_head(q[h], k[h], v[h], rule.cfg)
                        outs.append(r.out_int / float(1 << rule.cfg.out_frac))
                        c += [r.stats.get(name, 0) for name in COUNTS]
                    hit = (np.stack(outs), c)
                    self._put(key, hit)
                else:
                    self._cache.move_to_end(key)
                counts[i, layer] = hit[1]
                return hit[0]

            e = self.lm.embed([text], attention)[0]
            cos[i] = float(e @ self.ref[i])
        self.evaluations += 1
        return {"mode": mode, "values": [None if v is None else float(v) for v in values],
                "label": label, "cos": cos, "kept": counts[..., 0], "valid": counts[..., 1],
                "kept_entries": counts[..., 2], "valid_pairs": counts[..., 3],
                "bits": counts[..., 4], "bits_dense": counts[..., 5], "seconds": time.monotonic() - t0}

    def _put(self, key, val) -> None:
        size = val[0].nbytes + 112
        self._cache[key] = val
        self._cache_bytes += size
        while self._cache_bytes > self._cache_max and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old[0].nbytes + 112


def summarize(res: dict, counts: list[int], lines: list[int] | None = None) -> dict:
    """The figures of one :meth:`TextEvaluator.evaluate` result (JSON-ready).

    ``kept_entry_fraction`` (and ``kept_entry_per_layer``) is over the valid score entries;
    with the LeOPArd front end (``bits_dense`` > 0) ``bits_ratio`` (and ``bits_per_layer``) is
    the bit-serial bits read over the dense bits."""
    cos, kept, valid = res["cos"], res["kept"], res["valid"]
    ent = res.get("kept_entries", np.zeros_like(kept))
    pairs = res.get("valid_pairs", np.zeros_like(kept))
    bits = res.get("bits", np.zeros_like(kept))
    dense = res.get("bits_dense", np.zeros_like(kept))
    leopard = bool(dense.sum())

    def figures(idx) -> dict:
        idx = np.asarray(idx, int)
        if idx.size == 0:
            return {"texts": 0}
        k, v = int(kept[idx].sum()), int(valid[idx].sum())
        e, p = int(ent[idx].sum()), int(pairs[idx].sum())
        f = {"texts": int(idx.size), "tokens_min": int(min(counts[i] for i in idx)),
             "tokens_max": int(max(counts[i] for i in idx)),
             "kept_block_fraction": k / max(1, v), "blocks_kept": k, "blocks_valid": v,
             "kept_entry_fraction": e / max(1, p), "entries_kept": e, "entries_valid": p,
             "cos_mean": float(cos[idx].mean()), "cos_min": float(cos[idx].min())}
        if leopard:
            b, bd = int(bits[idx].sum()), int(dense[idx].sum())
            f.update(bits_ratio=b / max(1, bd), bits_processed=b, bits_dense=bd)
        return f

    allidx = list(range(len(cos)))
    out = figures(allidx)
    out["kept_per_layer"] = [float(kept[:, li].sum() / max(1, valid[:, li].sum()))
                             for li in range(kept.shape[1])]
    out["kept_entry_per_layer"] = [float(ent[:, li].sum() / max(1, pairs[:, li].sum()))
                                   for li in range(kept.shape[1])]
    if leopard:
        out["bits_per_layer"] = [float(bits[:, li].sum() / max(1, dense[:, li].sum()))
                                 for li in range(kept.shape[1])]
    out["buckets"] = {name: figures([i for i in allidx if lo <= counts[i] <= hi])
                      for name, lo, hi in BUCKETS}
    out["per_text"] = [{"line": None if lines is None else lines[i], "tokens": counts[i],
                        "cos": float(cos[i]),
                        "kept_block_fraction": float(kept[i].sum() / max(1, valid[i].sum())),
                        "kept_entry_fraction": float(ent[i].sum() / max(1, pairs[i].sum()))}
                       for i in allidx]
    return out


def meets(summary: dict, target: float) -> bool:
    """Mean AND minimum cosine reach ``target``."""
    return summary["cos_mean"] >= target and summary["cos_min"] >= target
