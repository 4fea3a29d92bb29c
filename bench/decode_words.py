"""Token-Picker memory traffic: K and V words a decode step reads, dense against pruned, for
several K formats, on captured decoder steps (:func:`golden.token_picker.decode_step`, the
golden twin of the RTL engine's word counters).

Each record of each capture (``hdpgen capture-decoder`` format, ``docs/token_picker.md``) is
quantized from its own valid positions and run at each ``--eps``.  Per K format it prints the
K, V and K+V words read as a fraction of dense, how many times fewer K+V words than dense, the
same against the baseline format (one scale per KV head, 4-bit chunks) run in the same process,
and against an oracle with the same chunks: one that reads every token's first chunk and then
only the chunks and V rows of the tokens the step keeps in the end (no safe rule can read less
after seeing one chunk).  Tokens kept are per query head and per KV head (the union of its
query heads, which sets the V rows read).  ``width1`` and ``gap`` say why a first chunk drops
little: the median width of a token's score interval after it, and the median distance of a
token's score below its row's best, both in logits.

Reproduce (seconds on the bundled fixture; minutes on 300-token texts)::

    .venv/bin/python bench/decode_words.py                 # tests/data/smollm2_decode.npz
    make setup-decoder
    .venv/bin/hdpgen capture-decoder --text T.txt --steps 200,232,264,296 --out /tmp/t.npz
    .venv/bin/python bench/decode_words.py --capture /tmp/t.npz --eps 1e-3 2e-3
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from benchutil import ROOT, BenchError, provenance, run_main

sys.path.insert(0, str(ROOT))

from golden import token_picker as tp  # noqa: E402
from hdpgen.cmd_decode import config_from_settings, quantize_record  # noqa: E402
from hdpgen.common import CliError  # noqa: E402
from hdpgen.decode_io import load_capture  # noqa: E402

BASELINE = "k_chan_shift=0,k_center=0"
FORMATS = (BASELINE, "k_center=0", "", "chunk_bits=2", "chunk_bits=1")
FIXTURE = ROOT / "tests" / "data" / "smollm2_decode.npz"


def _config(spec: str) -> tp.TokenPickerConfig:
    try:
        return config_from_settings([s for s in spec.split(",") if s.strip()])
    except CliError as exc:
        raise BenchError(f"--format {spec!r}: {exc}") from None


def _first_chunk_logits(res, qkv, n: int):
    """Per query head and valid token: the width of its score interval after the first chunk,
    and its distance below the head's best score, both in logits (``score / (sqrt(d) 2**sf)``)."""
    q, k, _ = qkv
    n_q, d = q.x.shape
    kv_of = np.arange(n_q) // (n_q // k.x.shape[0])
    sf = np.asarray(q.frac, np.int64) + np.asarray(k.frac, np.int64)[kv_of]
    scale = (2.0 ** -sf / np.sqrt(d))[:, None]
    width = (res.upper[0, :, :n] - res.lower[0, :, :n]) * scale
    s = res.scores[:, :n] * scale
    return width.ravel(), (s.max(axis=1, keepdims=True) - s).ravel()


def measure(captures: list[dict], cfg: tp.TokenPickerConfig, eps: float, min_pos: int,
            eps_v: float = 0.0) -> dict:
    """Word and token counts over every record at or past ``min_pos``."""
    t = dict(k=0, k_dense=0, v=0, v_dense=0, k_oracle=0, kept_q=0, valid_q=0, kept_kv=0,
             valid_kv=0, records=0)
    widths = []
    for data in captures:
        for r in range(len(data["valid_len"])):
            if int(data["position"][r]) < min_pos:
                continue
            n = int(data["valid_len"][r])
            qkv = quantize_record(data, r, cfg)
            res = tp.decode_step(*qkv, n, eps, cfg, eps_v)
            st = res.stats
            widths.append(_first_chunk_logits(res, qkv, n))
            n_kv = st.k_words_read.shape[0]
            kw = cfg.k_chunk_words(data["q"].shape[2])
            t["k"] += int(st.k_words_read.sum())
            t["k_dense"] += st.k_words_dense * n_kv
            t["v"] += int(st.v_words_read.sum())
            t["v_dense"] += st.v_words_dense * n_kv
            t["k_oracle"] += int(n * n_kv * kw[0] + st.kept_kv.sum() * sum(kw[1:]))
            t["kept_q"] += int(st.kept_q.sum())
            t["valid_q"] += n * st.kept_q.shape[0]
            t["kept_kv"] += int(st.kept_kv.sum())
            t["valid_kv"] += n * n_kv
            t["records"] += 1
    if not t["records"]:
        raise BenchError(f"no record at position >= {min_pos}")
    dense, read = t["k_dense"] + t["v_dense"], t["k"] + t["v"]
    w = np.concatenate([x[0] for x in widths])
    gap = np.concatenate([x[1] for x in widths])
    return t | {"first_chunk_width_logits": float(np.median(w)),
                "gap_to_best_logits": float(np.median(gap)),
                "k_fraction": t["k"] / t["k_dense"], "v_fraction": t["v"] / t["v_dense"],
                "kv_fraction": read / dense, "fewer_than_dense": dense / read,
                "oracle_fewer_than_dense": dense / (t["k_oracle"] + t["v"]),
                "kept_per_query_head": t["kept_q"] / t["valid_q"],
                "kept_per_kv_head": t["kept_kv"] / t["valid_kv"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench/decode_words.py", description=__doc__.split("\n")[0])
    ap.add_argument("--capture", type=Path, nargs="+", default=[FIXTURE], metavar="NPZ",
                    help="decode captures (default: the bundled SmolLM2 fixture)")
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-3], metavar="E")
    ap.add_argument("--format", dest="formats", action="append", metavar="KEY=V[,KEY=V]",
                    help=f"a K format as TokenPickerConfig settings (repeatable; default: "
                         f"{', '.join(repr(f) for f in FORMATS)}; '' is the default config)")
    ap.add_argument("--eps-v", type=float, default=0.0, metavar="E",
                    help="for formats with v_lo_bits > 0: read V's low plane only for the kept "
                         "tokens a query head may give a probability >= E (default 0: always)")
    ap.add_argument("--min-position", type=int, default=0, metavar="P",
                    help="only records whose query position is >= P")
    ap.add_argument("--json", type=Path, metavar="OUT.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        captures = [load_capture(p) for p in args.capture]
    except CliError as exc:
        raise BenchError(str(exc)) from None
    formats = [BASELINE] + [f for f in (args.formats or FORMATS) if f != BASELINE]
    cfgs = {f: _config(f) for f in formats}
    for e in args.eps:
        tp.eps_q_of(e, cfgs[BASELINE])
    tp.eps_q_of(args.eps_v, cfgs[BASELINE], "--eps-v")
    rows = []
    print(f"{'eps':>7} {'K format':<28} {'K':>6} {'V':>6} {'K+V':>6} {'x dense':>8} "
          f"{'x base':>7} {'oracle':>7} {'kept/q':>7} {'kept/kv':>7} {'width1':>6} {'gap':>5}")
    for e in args.eps:
        base = None
        for f in formats:
            m = measure(captures, cfgs[f], e, args.min_position, args.eps_v)
            base = base or m
            vs_base = (base["k"] + base["v"]) / (m["k"] + m["v"])
            rows.append({"eps": e, "eps_v": args.eps_v, "format": f or "default",
                         "config": dataclasses.asdict(cfgs[f]), "vs_baseline": vs_base, **m})
            print(f"{e:>7g} {f or 'default':<28} {m['k_fraction']:>6.3f} {m['v_fraction']:>6.3f} "
                  f"{m['kv_fraction']:>6.3f} {m['fewer_than_dense']:>7.2f}x {vs_base:>6.3f}x "
                  f"{m['oracle_fewer_than_dense']:>6.2f}x {m['kept_per_query_head']:>7.3f} "
                  f"{m['kept_per_kv_head']:>7.3f} {m['first_chunk_width_logits']:>6.2f} "
                  f"{m['gap_to_best_logits']:>5.2f}", flush=True)
    print(f"({rows[0]['records']} records; x dense: dense K+V words / words read; x base: "
          f"against {BASELINE}; oracle: x dense of an oracle with the same chunks; "
          f"width1: median score-interval width after the first chunk, gap: median distance "
          f"below the row's best score, both in logits)")
    if args.json:
        report = {"provenance": provenance("bench/decode_words.py", argv, time.time() - t0),
                  "captures": [str(p) for p in args.capture], "rows": rows}
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("decode_words", main))
