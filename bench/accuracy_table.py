"""Accuracy table of pruning settings inside all-MiniLM-L6-v2: kept blocks against embedding
cosine, uncalibrated and per-layer calibrated, for topk, threshold and mass, in both score
approximation modes (needs the ``eval`` extra).

For each approximation mode and pruning mode:

1. ``hdpgen calibrate``'s search (:func:`hdpgen.cmd_calibrate.calibrate`) on the calibration
   texts (``hdpgen/data/calib_texts.txt``) at ``--target`` (0.99): per-layer values, and the
   best uniform value on those texts; the calibration file goes to ``OUT_DIR/cal_<mode>_<approx>.json``
   (an existing one with the same texts' hash, target and approx is reused with ``--reuse``);
   where pruning off already misses the target on a set (drop_ff: a 4-token calibration text
   at 0.984), the search uses the floor rule of ``hdpgen calibrate --floor-rule`` there;
2. the best uniform value on the evaluation texts themselves (``hdpgen/data/eval_texts.txt``),
   the same bisection: the most pruning single value that meets the target there (the
   setting a default should be: it is measured where it is reported);
3. the evaluation texts under: quantization only (prune off), the uniform value from the
   calibration texts, the best uniform value on the evaluation texts, and the calibrated
   per-layer values.

Writes ``OUT_DIR/accuracy_table.json`` (every figure, per length bucket and per layer) after
each mode, so a partial run keeps what it measured, and prints a Markdown table.  Reproduce::

    python bench/accuracy_table.py                      # everything (about an hour on 2 cores)
    python bench/accuracy_table.py --modes topk --approx drop_ff
    python bench/accuracy_table.py --show               # print the stored table
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hdpgen import minilm  # noqa: E402
from hdpgen.calibration import MODES, file_sha256, read_texts  # noqa: E402
from hdpgen.cmd_calibrate import calibrate, calibration_doc, grid  # noqa: E402
from hdpgen.common import CliError, write_json  # noqa: E402
from hdpgen.textset import BUCKETS, TextEvaluator, check_lengths, summarize, token_counts  # noqa: E402
from hw.presets import preset  # noqa: E402

DATA = ROOT / "hdpgen" / "data"


def _row(label, mode, values, s) -> dict:
    return {"label": label, "mode": mode, "values": values,
            **{k: s[k] for k in ("kept_block_fraction", "cos_mean", "cos_min", "kept_per_layer",
                                 "buckets")}}


def markdown(rows: list[dict]) -> str:
    names = [b[0] for b in BUCKETS]
    head = ("| approx | mode | setting | values | kept | cos mean | cos min | "
            + " | ".join(f"{n}: kept / mean / min" for n in names) + " |")
    out = [head, "|" + "---|" * (7 + len(names))]
    for r in rows:
        if "buckets" not in r:
            out.append(f"| {r['approx']} | {r['mode']} | {r['label']} | - | - | - | - | "
                       + " | ".join("-" for _ in names) + " |")
            continue
        vals = r["values"]
        if vals is None or vals[0] is None:
            v = "-"
        elif len(set(vals)) == 1:
            v = f"{vals[0]:g}"
        else:
            v = "/".join(f"{x:g}" for x in vals)
        cells = []
        for n in names:
            b = r["buckets"][n]
            cells.append(f"{b['kept_block_fraction']:.3f} / {b['cos_mean']:.4f} / {b['cos_min']:.4f}"
                         if b["texts"] else "-")
        out.append(f"| {r['approx']} | {r['mode']} | {r['label']} | {v} | "
                   f"{r['kept_block_fraction']:.3f} | {r['cos_mean']:.4f} | {r['cos_min']:.4f} | "
                   + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated (default: all)")
    p.add_argument("--approx", default="drop_ff,exact", help="comma-separated (default: both)")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--eval-texts", type=Path, default=DATA / "eval_texts.txt")
    p.add_argument("--calib-texts", type=Path, default=DATA / "calib_texts.txt")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--reuse", action="store_true",
                   help="reuse calibration files in OUT_DIR made from the same texts and target")
    p.add_argument("--show", action="store_true",
                   help="only print the table of OUT_DIR/accuracy_table.json (no measuring)")
    args = p.parse_args(argv)
    if args.show:
        print(markdown(json.loads((args.out_dir / "accuracy_table.json").read_text())["rows"]))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    approxes = [a for a in args.approx.split(",") if a]
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    lm = minilm.load()
    ev_texts, cal_texts = read_texts(args.eval_texts), read_texts(args.calib_texts)
    ev_counts, cal_counts = token_counts(lm, ev_texts), token_counts(lm, cal_texts)
    base = preset("default")
    check_lengths(ev_counts, ev_texts, base.seq_len, args.eval_texts)
    check_lengths(cal_counts, cal_texts, base.seq_len, args.calib_texts)
    out_json = args.out_dir / "accuracy_table.json"
    old = json.loads(out_json.read_text()) if out_json.is_file() else {}
    rows = [r for r in old.get("rows", [])
            if not (r["approx"] in approxes and r["mode"] in modes + ["off"])]
    t0 = time.monotonic()
    for approx in approxes:
        cfg = base.replace(approx=approx)
        ev = TextEvaluator(lm, ev_texts, cfg, ev_counts, cache_mb=768)
        cal_ev = TextEvaluator(lm, cal_texts, cfg, cal_counts, cache_mb=768)
        s = summarize(ev.evaluate("off", None), ev_counts)
        rows.append({**_row("quantized, prune off", "off", None, s), "approx": approx})
        # the floor rule (hdpgen calibrate --floor-rule) where pruning off already misses
        floors = {}
        for name, e in (("calib", cal_ev), ("eval", ev)):
            off = [float(c) for c in e.evaluate("off", None)["cos"]]
            floors[name] = off if min(off) < args.target else None
            if floors[name]:
                say(f"{approx}: {name} texts with pruning off: min cosine {min(off):.4f} < "
                    f"{args.target}; floor rule on")
        for mode in modes:
            say(f"== {approx} {mode} ({time.monotonic() - t0:.0f} s)")
            cal_path = args.out_dir / f"cal_{mode}_{approx}.json"
            doc = json.loads(cal_path.read_text()) if args.reuse and cal_path.is_file() else None
            if doc is not None and (doc["texts"]["sha256"] != file_sha256(args.calib_texts)
                                    or doc["target_cos"] != args.target):
                doc = None
            try:
                if doc is None:
                    found = calibrate(cal_ev, mode, args.target, say, floors=floors["calib"])
                    doc = calibration_doc(found, mode, args.target, cfg, args.calib_texts,
                                          cal_counts)
                    doc["floor_rule"] = floors["calib"]
                    write_json(cal_path, doc)
                on_eval = calibrate(ev, mode, args.target, say, per_layer=False,
                                    floors=floors["eval"])
            except CliError as exc:  # even the least pruning value misses the target
                say(f"   {exc}")
                values = [grid(mode)[0]] * ev.n_layers
                s = summarize(ev.evaluate(mode, values), ev_counts)
                rows.append({**_row("least pruning value (no value meets the target)", mode,
                                    values, s), "approx": approx, "note": str(exc)})
                continue
            u_cal, u_ev = doc["uniform"]["value"], on_eval["uniform"]["value"]
            layers = ev.n_layers
            for label, values in (("uniform, best on calibration texts", [u_cal] * layers),
                                  ("uniform, best on evaluation texts", [u_ev] * layers),
                                  ("per-layer calibrated", list(doc["values"]))):
                s = summarize(ev.evaluate(mode, values), ev_counts)
                rows.append({**_row(label, mode, values, s), "approx": approx,
                             "calibration": cal_path.name,
                             "floor_rule_on_calibration": floors["calib"] is not None,
                             "floor_rule_on_evaluation": floors["eval"] is not None})
                say(f"   {label}: {values}: kept {s['kept_block_fraction']:.3f}, cosine mean "
                    f"{s['cos_mean']:.4f} min {s['cos_min']:.4f}")
            write_json(out_json, {"target": args.target, "model": minilm.MODEL_ID,
                                  "eval_texts": {"file": args.eval_texts.name,
                                                 "sha256": file_sha256(args.eval_texts),
                                                 "count": len(ev_texts)},
                                  "calib_texts": {"file": args.calib_texts.name,
                                                  "sha256": file_sha256(args.calib_texts),
                                                  "count": len(cal_texts)},
                                  "rows": rows})
    print(markdown(rows))
    say(f"done in {time.monotonic() - t0:.0f} s; {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
