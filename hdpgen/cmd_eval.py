"""``hdpgen eval``: accuracy of the pruned golden model inside all-MiniLM-L6-v2 (extra ``eval``).

Every self-attention layer's score, softmax and P x V is replaced by the bit-exact golden model
(:func:`golden.model.attention_head` on each of the 12 heads, Q, K, V quantized from the model's
float projections, output dequantized from ``out_frac``); the rest of the model stays float.
Sentences are encoded one at a time (no padding), pooled by the attention-mask mean and
L2-normalized as sentence-transformers does; the score is the cosine between these embeddings
and those of the unmodified model (mean and min over the sentences).

Per grid point the table gives the fraction of valid score blocks kept, of heads kept, and the
fine-pass MACs (cross terms counted as one MAC per pair, fraction x fraction, P x V) against a
dense fine pass (Q K^T + P V) -- the integer pass is extra and is reported by ``hdpgen golden``.
It also gives the fraction of Q, K, V values that the quantization clamps.

Per-sentence settings (N varies from sentence to sentence):

* ``k_frac``: top-k keeps ``ceil(k_frac * valid blocks)`` blocks per block-row (the
  configuration knob ``k_frac`` itself, rounded up to a multiple of 2**-8), i.e. that fraction
  of the sentence's block columns.
* ``tau_rel``: head pruning with ``tau_head = ceil(tau_rel * N**2 * m_layer)``, where
  ``m_layer`` is the median, over the layer's 12 heads and all evaluated sentences, of the mean
  ``|A|`` per valid entry (``H / N**2``), calibrated from the unmodified model's Q and K
  quantized with the row's format.  So ``tau_rel = 0.5`` prunes the heads whose mean ``|A|`` is
  below half of the layer's typical head.

``seq_len`` is raised to the longest sentence if the preset's is shorter; everything else comes
from ``--preset``/``--config``/``--set`` and the grid row.

One setting instead of the grid (``--json OUT``, ``--calibration CAL.json`` or ``--setting
MODE=VALUE``): the configured pruning (topk's ``k_frac`` of each block-row's valid blocks;
threshold's ``rho``), or one value for every layer
(``--setting topk=0.5``, ``threshold=0.25``, ``mass=0.0625``, ``leopard=0.5``), or a calibration
file's value per layer (:mod:`hdpgen.calibration`), applied through
:func:`hdpgen.calibration.apply_setting`.  ``leopard=X`` (or a leopard calibration file, or a
configuration with ``front_end = leopard``) runs every head through the LeOPArd front end with the
logit threshold X; its JSON adds the kept fraction of the valid score ENTRIES (the figure of a
front end that keeps single entries; ``kept_entry_fraction`` is there for every mode) and
``bits_ratio``, the bit-serial bits read over the dense bits.
A text longer than ``seq_len`` is refused before any work (line, token count, limit).  The JSON
has the kept fraction of the valid score blocks, the mean and minimum embedding cosine, the kept
fraction per layer, the same per length bucket (<=16, 17-32, 33-64, 65-128 tokens), per text,
and the settings used.
"""

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golden import model
from golden.intmath import split_int_frac
from golden.reference import float_attention_head
from hw.config import K_FRAC_BITS, HDPConfig

from .common import (
    CliError,
    add_config_args,
    atomic_write,
    check_output_file,
    config_from_args,
    write_json,
)

__all__ = ["configure", "main", "GridPoint", "GRIDS", "evaluate", "DEFAULT_SENTENCES"]

DEFAULT_SENTENCES = Path(__file__).resolve().parent / "data" / "sentences.txt"


@dataclass(frozen=True)
class GridPoint:
    """One row of the sweep: configuration changes plus per-sentence rules."""
    label: str
    changes: dict = field(default_factory=dict)
    k_frac: float | None = None
    tau_rel: float = 0.0
    float_attention: bool = False  # replace attention by float attention (checks the hook path)


def _topk(crit, br, bc, kf, **kw):
    return GridPoint(f"topk {crit} {br}x{bc} k={kf:g}",
                     {"prune_mode": "topk", "criterion": crit, "block_rows": br, "block_cols": bc,
                      **kw}, k_frac=kf)


def _thr(crit, br, bc, rho):
    return GridPoint(f"thr {crit} {br}x{bc} rho={rho:g}",
                     {"prune_mode": "threshold", "criterion": crit, "block_rows": br,
                      "block_cols": bc, "rho": rho})


def _grid_small() -> list[GridPoint]:
    """The reported sweep: a hook check, quantization alone (both approximation modes), top-k
    over criterion x block shape x k_frac, threshold over criterion x rho, exact-mode variants
    of the most promising rows, and head pruning on top of top-k."""
    g = [GridPoint("float attention (hook check)", float_attention=True),
         GridPoint("quantized, prune off", {"prune_mode": "off"}),
         GridPoint("quantized, prune off, exact", {"prune_mode": "off", "approx": "exact"})]
    for br in (2, 4):
        for crit in ("abs_sum", "sum", "max"):
            for kf in (0.25, 0.5, 0.75):
                g.append(_topk(crit, br, br, kf))
    for crit in ("abs_sum", "sum", "max"):
        for rho in (0.0, 0.25, 0.5):
            g.append(_thr(crit, 2, 2, rho))
    g.append(_thr("max", 4, 4, 0.0))
    for p in (_topk("max", 2, 2, 0.5), _topk("max", 2, 2, 0.75), _thr("max", 2, 2, 0.0),
              _thr("sum", 2, 2, 0.0)):
        g.append(GridPoint(p.label + " exact", {**p.changes, "approx": "exact"}, k_frac=p.k_frac))
    for tau in (0.25, 0.5):
        p = _topk("max", 2, 2, 0.75)
        g.append(GridPoint(p.label + f" tau={tau:g}", {**p.changes, "head_prune": True},
                           k_frac=p.k_frac, tau_rel=tau))
    return g


def _grid_quick() -> list[GridPoint]:
    return [GridPoint("float attention (hook check)", float_attention=True),
            GridPoint("quantized, prune off", {"prune_mode": "off"}),
            _topk("max", 2, 2, 0.5),
            GridPoint("topk max 2x2 k=0.5 tau=0.5", {**_topk("max", 2, 2, 0.5).changes,
                                                      "head_prune": True}, k_frac=0.5, tau_rel=0.5)]


def _grid_half() -> list[GridPoint]:
    """The candidates for pruning about half of the blocks, in both approximation modes."""
    g = [GridPoint("quantized, prune off", {"prune_mode": "off"}),
         GridPoint("quantized, prune off, exact", {"prune_mode": "off", "approx": "exact"})]
    for p in (_topk("max", 2, 2, 0.5), _topk("sum", 2, 2, 0.5), _thr("max", 2, 2, 0.0),
              _thr("sum", 2, 2, 0.0)):
        g.append(p)
        g.append(GridPoint(p.label + " exact", {**p.changes, "approx": "exact"}, k_frac=p.k_frac))
    return g


GRIDS = {"small": _grid_small, "quick": _grid_quick, "half": _grid_half}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sentences", type=Path, default=DEFAULT_SENTENCES, metavar="FILE",
                   help="one sentence per line (default: the bundled hdpgen/data/sentences.txt)")
    p.add_argument("--grid", default="small", choices=sorted(GRIDS),
                   help="which sweep to run (default: small)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N sentences")
    add_config_args(p)
    p.add_argument("--csv", type=Path, metavar="OUT.csv", help="write the table as CSV")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    one = p.add_argument_group("one setting instead of the grid")
    one.add_argument("--json", type=Path, metavar="OUT.json",
                     help="evaluate one setting (the configured one, --setting or --calibration) "
                          "and write its figures here")
    one.add_argument("--calibration", type=Path, metavar="CAL.json",
                     help="per-layer values from 'hdpgen calibrate'")
    one.add_argument("--setting", metavar="MODE=VALUE",
                     help="one value for every layer: topk=K_FRAC, threshold=RHO, mass=EPS or "
                          "leopard=LOGIT_THRESHOLD")


# ---------------------------------------------------------------------------- calibration
def head_activity(captures: list[dict], cfg: HDPConfig) -> np.ndarray:
    """Per layer, the median over heads and sentences of mean |A| per valid entry."""
    layers = int(captures[0]["n_layers"])
    per_layer: list[list[float]] = [[] for _ in range(layers)]
    for c in captures:
        n = int(c["valid_len"])
        q = model.quantize_qkv(c["q"][:, :n], c["k"][:, :n], c["v"][:, :n], cfg)
        qi, _ = split_int_frac(q[0], cfg.qk_frac)
        ki, _ = split_int_frac(q[1], cfg.qk_frac)
        a = np.abs(qi @ ki.transpose(0, 2, 1)).sum(axis=(1, 2)) / (n * n)
        for li in range(layers):
            per_layer[li].extend(a[li * 12:(li + 1) * 12].tolist())
    return np.array([float(np.median(x)) for x in per_layer])


# ---------------------------------------------------------------------------- one grid point
def sentence_config(base: HDPConfig, point: GridPoint, n: int, layer: int,
                    activity: np.ndarray | None) -> HDPConfig:
    changes = dict(point.changes)
    cfg = base.replace(**{k: v for k, v in changes.items() if k != "tau_head"})
    if point.k_frac is not None:
        cfg = cfg.replace(k_frac=math.ceil(point.k_frac * (1 << K_FRAC_BITS)) / (1 << K_FRAC_BITS))
    if cfg.head_prune and activity is not None:
        cfg = cfg.replace(tau_head=min(cfg.h_max, math.ceil(point.tau_rel * n * n * activity[layer])))
    return cfg


def _clipped(x, bits, frac) -> tuple[int, int]:
    r = np.rint(np.asarray(x, np.float64) * float(1 << frac))
    return int(((r < -(1 << (bits - 1))) | (r > (1 << (bits - 1)) - 1)).sum()), int(r.size)


def evaluate(lm, sentences: list[str], base: HDPConfig, point: GridPoint, ref: np.ndarray,
             activity: np.ndarray | None) -> dict:
    """Embeddings with the replaced attention for one grid point, compared with ``ref``."""
    stats: list[dict] = []
    clip = {"q": [0, 0], "k": [0, 0], "v": [0, 0]}

    def attention(layer, q, k, v):
        n = q.shape[1]
        if point.float_attention:
            return np.stack([float_attention_head(q[h], k[h], v[h]) for h in range(q.shape[0])])
        cfg = sentence_config(base, point, n, layer, activity)
        for name, x, bits, frac in (("q", q, cfg.qk_bits, cfg.qk_frac), ("k", k, cfg.qk_bits, cfg.qk_frac),
                                    ("v", v, cfg.v_bits, cfg.v_frac)):
            c, t = _clipped(x, bits, frac)
            clip[name][0] += c
            clip[name][1] += t
        outs = []
        for h in range(q.shape[0]):
            r = model.attention_head(q[h], k[h], v[h], cfg)
            stats.append(r.stats)
            outs.append(r.out_int / float(1 << cfg.out_frac))
        return np.stack(outs)

    emb = lm.embed(sentences, attention)
    cos = (emb * ref).sum(axis=1)
    row = {"setting": point.label, "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}
    if stats:
        s = model.summarize(stats)
        row.update(kept_blocks=s["kept_block_fraction"], kept_heads=s["kept_head_fraction"],
                   kept_entries=s["kept_entry_fraction"], fine_macs=s["mac_fine_vs_dense"])
    else:
        row.update(kept_blocks=1.0, kept_heads=1.0, kept_entries=1.0, fine_macs=1.0)
    for name, (c, t) in clip.items():
        row[f"clip_{name}"] = c / t if t else 0.0
    return row


# ---------------------------------------------------------------------------- output
COLUMNS = [("setting", "{:<34}"), ("cos_mean", "{:>8.4f}"), ("cos_min", "{:>8.4f}"),
           ("kept_blocks", "{:>11.3f}"), ("kept_heads", "{:>10.3f}"), ("fine_macs", "{:>9.3f}"),
           ("clip_q", "{:>7.4f}"), ("clip_k", "{:>7.4f}"), ("clip_v", "{:>7.4f}"),
           ("seconds", "{:>7.1f}")]


def format_table(rows: list[dict]) -> str:
    widths = {name: 34 if name == "setting" else len(fmt.format(0.0)) for name, fmt in COLUMNS}
    head = " ".join(f"{name:<{widths[name]}}" if name == "setting" else f"{name:>{widths[name]}}"
                    for name, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(" ".join(fmt.format(r[name]) for name, fmt in COLUMNS))
    return "\n".join(lines)


def conclusions(rows: list[dict]) -> str:
    good = [r for r in rows if r["kept_blocks"] <= 0.5 and r["cos_mean"] >= 0.99]
    strict = [r for r in good if r["cos_min"] >= 0.99]
    if good:
        out = ["settings that prune >= half of the score blocks with mean cosine >= 0.99:"]
        out += [f"  {r['setting']}: kept blocks {r['kept_blocks']:.3f}, cosine mean "
                f"{r['cos_mean']:.4f} min {r['cos_min']:.4f}" for r in good]
        out.append(f"  of which {len(strict)} keep every sentence >= 0.99")
        return "\n".join(out)
    pruned = [r for r in rows if r["kept_blocks"] <= 0.5]
    best = max(pruned, key=lambda r: r["cos_mean"]) if pruned else None
    msg = "no setting prunes >= half of the score blocks with mean cosine >= 0.99"
    if best:
        msg += (f"; best such: {best['setting']} (kept {best['kept_blocks']:.3f}, cosine "
                f"{best['cos_mean']:.4f})")
    return msg


def main_one_setting(args: argparse.Namespace, base: HDPConfig) -> int:
    """``--json`` / ``--calibration`` / ``--setting``: one setting, figures as JSON."""
    from . import calibration as cal_mod
    from .textset import TextEvaluator, check_lengths, summarize, token_counts
    if args.calibration and args.setting:
        raise CliError("give --calibration CAL.json or --setting MODE=VALUE, not both")
    texts = cal_mod.read_texts(args.sentences)
    if args.limit is not None:
        if args.limit < 1:
            raise CliError(f"--limit must be >= 1, not {args.limit}")
        texts = texts[:args.limit]
    if args.json:
        check_output_file(args.json, "--json")
    from .minilm import N_HEADS, N_LAYERS, require_extra
    if args.calibration:
        c = cal_mod.load_calibration(args.calibration, base, heads=N_LAYERS * N_HEADS)
        mode, values, source = c.mode, list(c.values), f"calibration {args.calibration}"
    elif args.setting:
        mode, v = cal_mod.parse_setting(args.setting, base)
        values, source = [v] * N_LAYERS, f"--setting {args.setting}"
    else:
        s = cal_mod.configured_setting(base)
        mode, values = ("off", [None] * N_LAYERS) if s is None else (s[0], [s[1]] * N_LAYERS)
        source = "configuration"
    require_extra()
    from . import minilm
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.time()
    lm = minilm.load()
    counts = token_counts(lm, texts)
    check_lengths(counts, texts, base.seq_len, args.sentences)
    ev = TextEvaluator(lm, texts, base, counts)
    res = ev.evaluate(mode, values)
    s = summarize(res, counts, [line for line, _ in texts])
    out = {**s, "settings": {"mode": mode, "values": res["values"], "source": source,
                        "approx": base.approx, "heads_per_layer": N_HEADS,
                        "config": base.to_dict()},
           "texts": {"file": str(args.sentences), "sha256": cal_mod.file_sha256(args.sentences),
                     "count": len(texts), "tokens_min": min(counts), "tokens_max": max(counts)},
           "seconds": round(time.time() - t0, 1)}
    say(f"hdpgen eval: {len(texts)} texts ({min(counts)}-{max(counts)} tokens) in "
        f"{out['seconds']:.0f} s")
    # LeOPArd keeps entries and saves bits; the block pruners keep blocks
    leo = "bits_ratio" in s
    kept, what = ("kept_entry_fraction", "kept entries") if leo else \
        ("kept_block_fraction", "kept blocks")
    extra = (lambda x: f", bits {x['bits_ratio']:.3f}") if leo else (lambda x: "")
    print(f"{mode} {res['values']} ({source})" + ("" if leo else f", approx {base.approx}")
          + f": {what} {s[kept]:.3f}" + (f", bits processed {s['bits_ratio']:.3f} of dense"
                                         if leo else "")
          + f", cosine mean {s['cos_mean']:.4f} min {s['cos_min']:.4f}")
    per_layer = s["kept_entry_per_layer"] if leo else s["kept_per_layer"]
    print(f"  per layer {'kept entries' if leo else 'kept'}: "
          + " ".join(f"{x:.3f}" for x in per_layer))
    for name, b in s["buckets"].items():
        if b["texts"]:
            print(f"  {name:>6} tokens: {b['texts']:2d} texts, {'kept entries' if leo else 'kept'} "
                  f"{b[kept]:.3f}{extra(b)}, cosine mean {b['cos_mean']:.4f} min "
                  f"{b['cos_min']:.4f}")
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


def main(args: argparse.Namespace) -> int:
    base = config_from_args(args)
    if args.json or args.calibration or args.setting:
        return main_one_setting(args, base)
    from . import minilm

    try:
        sentences = minilm.read_sentences(args.sentences)
    except OSError as exc:
        raise CliError(f"cannot read {args.sentences}: {exc.strerror or exc}") from None
    if args.limit is not None:
        if args.limit < 1:
            raise CliError(f"--limit must be >= 1, not {args.limit}")
        sentences = sentences[: args.limit]
    if base.head_dim != minilm.HEAD_DIM:
        raise CliError(f"head_dim must be {minilm.HEAD_DIM} for all-MiniLM-L6-v2, not {base.head_dim}")
    if args.csv is not None:
        check_output_file(args.csv, "--csv output")
    minilm.require_extra()
    grid = GRIDS[args.grid]()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    t0 = time.time()
    lm = minilm.load()
    lengths = [lm.n_tokens(s) for s in sentences]
    if max(lengths) > base.seq_len:
        base = base.replace(seq_len=max(lengths))
    say(f"hdpgen eval: {len(sentences)} sentences, {min(lengths)}..{max(lengths)} tokens, "
        f"{len(grid)} settings (model loaded in {time.time() - t0:.1f} s)")
    ref = lm.embed(sentences)
    captures = [lm.capture_qkv(s) for s in sentences]

    rows = []
    for i, point in enumerate(grid):
        t1 = time.time()
        cfg0 = base.replace(**point.changes)
        activity = head_activity(captures, cfg0) if point.tau_rel > 0 else None
        row = evaluate(lm, sentences, base, point, ref, activity)
        row["seconds"] = time.time() - t1
        row.update({key: getattr(cfg0, key) for key in
                    ("criterion", "block_rows", "block_cols", "prune_mode", "rho", "approx",
                     "qk_bits", "qk_frac", "v_bits", "v_frac")})
        row["k_frac"] = point.k_frac if point.k_frac is not None else ""
        row["tau_rel"] = point.tau_rel
        rows.append(row)
        say(f"[{i + 1}/{len(grid)}] {point.label}: cosine {row['cos_mean']:.4f} "
            f"(min {row['cos_min']:.4f}), kept blocks {row['kept_blocks']:.3f}, "
            f"{row['seconds']:.1f} s")

    print(f"all-MiniLM-L6-v2, {len(sentences)} sentences ({min(lengths)}-{max(lengths)} tokens); "
          f"base: qk {base.qk_bits}b/F{base.qk_frac}, v {base.v_bits}b/F{base.v_frac}, "
          f"prob_frac {base.prob_frac}, exp_frac {base.exp_frac}, approx {base.approx}")
    print(format_table(rows))
    print(conclusions(rows))
    if args.csv:
        keys = [c for c, _ in COLUMNS] + [k for k in rows[0] if k not in dict(COLUMNS)]
        with atomic_write(args.csv, "w") as f:
            w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.csv}")
    say(f"hdpgen eval: done in {time.time() - t0:.0f} s")
    return 0
