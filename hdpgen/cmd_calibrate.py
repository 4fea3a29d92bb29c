"""``hdpgen calibrate``: one pruning register value per layer, as aggressive as the texts allow
(extra ``eval``).

On the calibration texts (``--sentences``, one per line, each at most ``seq_len`` tokens), with
all-MiniLM-L6-v2's attention replaced by the golden model (:mod:`hdpgen.textset`), it picks for
``--mode`` (topk: ``k_frac``; threshold: ``rho``; mass: ``eps``; leopard: the LeOPArd front
end's logit threshold ``leopard_th``) one value per layer that prunes
the most while the texts' sentence embeddings keep a mean AND a minimum cosine with the
unmodified model of at least ``--target-cos``:

1. the uniform value (every layer the same) found by bisection over the mode's grid, from the
   least pruning value (which must meet the target, else the mode cannot and the command says
   so) towards the most pruning one;
2. then, layer by layer from the first, the layer's own value pushed further by bisection while
   the others stay fixed and the target holds.

With ``--floor-rule`` a text that quantization alone (pruning off) already puts below the
target must instead keep its pruning-off cosine: with ``drop_ff`` a 4-token text can sit at 0.984
before any block is pruned, and no pruning value can repair quantization; the rule keeps such a
text from blocking the search without letting pruning make it worse.  The file records the
floors.

Bisection assumes that pruning more never raises the cosine; where that fails locally the
search keeps the last value it verified, so every value written met the target when tested.

Grids (least to most pruning): topk ``k_frac`` = 1, 63/64, ..., 1/64 (steps of 4/256: with at
most 64 block columns at seq_len 128 and 2-wide blocks, one step moves a row's budget by at most
one block, and the search needs 6 instead of 8 evaluations); threshold ``rho`` = 0, 1/64, ..., 1;
mass ``eps`` = 0, 1/256, ..., 1/2 (the register's full resolution: useful eps are small);
leopard ``leopard_th`` = -6, -6 + 1/16, ..., +6 (logits at the register's full resolution of
1/16; 193 points, 8 evaluations per bisection).  The range brackets the answer on the bundled
texts: at -6 the front end keeps about 95 % of the entries and every text is at its unpruned
cosine (MiniLM's logits below -6 carry no softmax weight that matters), while a uniform +2
already drops the mean cosine to 0.80 and +6 leaves little more than the diagonal; a single
layer may tolerate more than the uniform value, hence the headroom to +6.  On
``calib_texts.txt`` the uniform answer is -2.5625 and the per-layer values run from -2.3125 to
-0.1875, well inside (``docs/leopard.md``, "Calibration").  The kept figure is the kept ENTRY
fraction for leopard, which keeps single entries, and the file's ``achieved`` has
``bits_ratio``, the bit-serial bits read over the dense bits.  A leopard calibration runs every
head with exact scores, so ``--approx`` must be ``exact`` (or left out).

The JSON (written atomically; format in :mod:`hdpgen.calibration`) holds the mode, the values,
the target, the texts' SHA-256 and the achieved figures (overall, per layer, per length bucket),
with the uniform value for comparison.
"""

import argparse
import sys
import time
from pathlib import Path

from .calibration import FORMAT, MODES, STRUCTURE_KEYS, VERSION, file_sha256, read_texts
from .common import CliError, add_config_args, check_output_file, config_from_args, write_json

__all__ = ["configure", "main", "grid", "calibrate", "calibration_doc", "kept_figure"]


def kept_figure(mode: str, s: dict) -> tuple[str, float]:
    """The pruning figure to print: kept entries for leopard (it keeps single entries), kept
    blocks for the block pruners."""
    if mode == "leopard":
        return "kept entries", s["kept_entry_fraction"]
    return "kept", s["kept_block_fraction"]


def grid(mode: str) -> list[float]:
    """The mode's candidate values, least pruning first."""
    if mode == "topk":
        return [j / 64 for j in range(64, 0, -1)]
    if mode == "threshold":
        return [j / 64 for j in range(0, 65)]
    if mode == "leopard":
        return [j / 16 for j in range(-6 * 16, 6 * 16 + 1)]
    return [j / 256 for j in range(0, 129)]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sentences", type=Path, required=True, metavar="FILE",
                   help="calibration texts, one per line (# comments and blank lines skipped), "
                        "each at most seq_len tokens")
    p.add_argument("--target-cos", type=float, required=True, metavar="C",
                   help="mean and minimum embedding cosine the texts must keep, in (0, 1]")
    p.add_argument("--mode", choices=MODES, default="topk",
                   help="pruning rule to calibrate (default topk)")
    p.add_argument("--approx", choices=("drop_ff", "exact"), default=None,
                   help="score approximation (default: the configuration's)")
    p.add_argument("--out", type=Path, required=True, metavar="CAL.json",
                   help="the calibration file (written atomically)")
    p.add_argument("--floor-rule", action="store_true",
                   help="a text that quantization alone (pruning off) already puts below the "
                        "target must keep that cosine instead (the mean must still reach the "
                        "target); for drop_ff, where a very short text can fall below 0.99 "
                        "before any pruning")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_config_args(p)


def calibrate(ev, mode: str, target: float, say=print, per_layer: bool = True,
              floors=None) -> dict:
    """The search of the module docstring on a :class:`hdpgen.textset.TextEvaluator`;
    ``per_layer=False`` stops after the uniform value.  ``floors`` (the floor rule): per text,
    its cosine with pruning off; a text whose floor is below ``target`` must keep its floor
    instead of the target (the mean must still reach the target)."""
    from .textset import summarize
    g = grid(mode)
    layers = ev.n_layers
    t0 = time.monotonic()
    step = [0]

    def test(idx: list[int], what: str) -> tuple[bool, dict]:
        res = ev.evaluate(mode, [g[i] for i in idx])
        s = summarize(res, ev.counts)
        need = [target if floors is None else min(target, f) for f in
                (floors if floors is not None else [target] * len(res["cos"]))]
        ok = s["cos_mean"] >= target and all(c >= n for c, n in zip(res["cos"], need))
        step[0] += 1
        name, kept = kept_figure(mode, s)
        bits = f", bits {s['bits_ratio']:.3f}" if "bits_ratio" in s else ""
        say(f"[calibrate {step[0]:3d}] {what}: cosine mean {s['cos_mean']:.4f} min "
            f"{s['cos_min']:.4f}, {name} {kept:.3f}{bits} -> "
            f"{'meets' if ok else 'misses'} {target} ({time.monotonic() - t0:.0f} s)")
        return ok, s

    ok, best = test([0] * layers, f"uniform {mode} {g[0]:g} (least pruning)")
    if not ok:
        raise CliError(f"{mode}: even the least pruning value {g[0]:g} gives cosine mean "
                       f"{best['cos_mean']:.4f}, min {best['cos_min']:.4f} < target {target}; "
                       f"lower --target-cos, choose another --mode, or --floor-rule when "
                       f"pruning off already misses it")
    lo, hi = 0, len(g)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, s = test([mid] * layers, f"uniform {mode} {g[mid]:g}")
        if ok:
            lo, best = mid, s
        else:
            hi = mid
    uniform = {"value": g[lo], "achieved": {k: v for k, v in best.items() if k != "per_text"}}
    idx = [lo] * layers
    for layer in range(layers if per_layer else 0):
        lo_l, hi_l = idx[layer], len(g)
        while hi_l - lo_l > 1:
            mid = (lo_l + hi_l) // 2
            trial = idx[:layer] + [mid] + idx[layer + 1:]
            ok, s = test(trial, f"layer {layer} {mode} {g[mid]:g} "
                                f"[{', '.join(f'{g[i]:g}' for i in trial)}]")
            if ok:
                lo_l, best = mid, s
            else:
                hi_l = mid
        idx[layer] = lo_l
    return {"values": [g[i] for i in idx], "achieved": best, "uniform": uniform,
            "evaluations": step[0], "seconds": round(time.monotonic() - t0, 1)}


def calibration_doc(found: dict, mode: str, target: float, cfg, texts_path: Path,
                    counts: list[int]) -> dict:
    """The calibration file's JSON object for the result of :func:`calibrate`."""
    from . import minilm
    return {
        "format": FORMAT, "version": VERSION, "mode": mode, "values": found["values"],
        "n_layers": len(found["values"]), "heads_per_layer": minilm.N_HEADS,
        "target_cos": target, "model": minilm.MODEL_ID,
        "texts": {"file": Path(texts_path).name, "sha256": file_sha256(texts_path),
                  "count": len(counts), "tokens_min": min(counts), "tokens_max": max(counts)},
        "achieved": {k: v for k, v in found["achieved"].items() if k != "per_text"},
        "uniform": found["uniform"],
        "config": {k: getattr(cfg, k) for k in (*STRUCTURE_KEYS, "approx", "qk_bits", "qk_frac",
                                                "v_bits", "v_frac", "seq_len")},
        "search": {"grid": {"least": grid(mode)[0], "most": grid(mode)[-1],
                            "points": len(grid(mode))},
                   "evaluations": found["evaluations"], "seconds": found["seconds"]},
    }


def main(args: argparse.Namespace) -> int:
    if not 0 < args.target_cos <= 1:
        raise CliError(f"--target-cos must be in (0, 1], not {args.target_cos}")
    cfg = config_from_args(args)
    if args.mode == "leopard":
        if args.approx not in (None, "exact"):
            raise CliError(f"--mode leopard runs every head with exact scores (the LeOPArd front "
                           f"end); --approx must be exact or left out, not {args.approx}")
        if cfg.front_end != "leopard":  # the base of the floor rule's unpruned run
            cfg = cfg.replace(approx="exact")
    elif cfg.front_end == "leopard":
        raise CliError(f"--mode {args.mode} calibrates an HDP pruner, but the configuration's "
                       f"front_end is leopard; use --mode leopard or an HDP preset")
    if args.approx:
        cfg = cfg.replace(approx=args.approx)
    texts = read_texts(args.sentences)
    check_output_file(args.out, "--out")
    from . import minilm
    minilm.require_extra()
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    lm = minilm.load()
    from .textset import TextEvaluator, check_lengths, token_counts
    counts = token_counts(lm, texts)
    check_lengths(counts, texts, cfg.seq_len, args.sentences)
    say(f"hdpgen calibrate: {len(texts)} texts ({min(counts)}-{max(counts)} tokens), mode "
        f"{args.mode}, approx {cfg.approx}, target cosine {args.target_cos}")
    ev = TextEvaluator(lm, texts, cfg, counts, say=say)
    floors = None
    if args.floor_rule:
        floors = [float(c) for c in ev.evaluate("off", None)["cos"]]
        say(f"floor rule: {sum(f < args.target_cos for f in floors)} texts below the target "
            f"with pruning off (lowest {min(floors):.4f})")
    found = calibrate(ev, args.mode, args.target_cos, say, floors=floors)
    doc = calibration_doc(found, args.mode, args.target_cos, cfg, args.sentences, counts)
    doc["floor_rule"] = floors
    achieved = doc["achieved"]
    write_json(args.out, doc)
    name, kept = kept_figure(args.mode, achieved)
    name = "kept blocks" if name == "kept" else name
    bits = (f", bits {achieved['bits_ratio']:.3f} (uniform "
            f"{found['uniform']['achieved']['bits_ratio']:.3f})" if "bits_ratio" in achieved else "")
    print(f"hdpgen calibrate: {args.mode} per layer {found['values']} (uniform "
          f"{found['uniform']['value']:g}): cosine mean {achieved['cos_mean']:.4f} min "
          f"{achieved['cos_min']:.4f}, {name} {kept:.3f} "
          f"(uniform {kept_figure(args.mode, found['uniform']['achieved'])[1]:.3f}){bits} -> "
          f"{args.out}")
    return 0
