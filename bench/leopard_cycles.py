"""Cycles of the LeOPArd bit-serial score engine with and without early termination, on real
MiniLM heads.

Usage (from the repository root)::

    .venv/bin/python bench/leopard_cycles.py [--data long] [--heads 0 17 40 65] [--lanes 4]
                                             [--logit 0 1] [--out build/bench/leopard.json]

For each head and threshold (``golden.leopard.threshold_int`` in logit units), the engine
(:class:`hw.leopard_engine.LeopardEngine`, default preset, ``--lanes`` lanes) runs in Amaranth's
simulator twice, with early termination and with ``no_et`` (every entry reads all ``B`` bits),
input at full rate and output always ready; every record of both runs is checked against
:func:`golden.leopard.front_end` before its cycles count.  Reported: the engine's ``cycles``
register (first Q row to the end of the last row) of both runs and their ratio, against the
golden bits ratio (``bits_processed / bits_dense``) that an ideal engine without per-entry and
per-row overhead would reach.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchutil import BenchError, provenance, require, run_main  # noqa: E402

NAME = "bench/leopard_cycles"


def main(argv: list[str]) -> int:
    require(NAME, ["amaranth", "numpy"])
    from golden import leopard as lp
    from hw.leopard_engine import LeopardEngine
    from hw.presets import preset
    from sim.leopard_run import run_cases
    from sim.vectors import leopard as vec

    ap = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="long")
    ap.add_argument("--heads", type=int, nargs="+", default=[0, 17, 40, 65])
    ap.add_argument("--lanes", type=int, default=4)
    ap.add_argument("--logit", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cfg = preset("default")
    rows = []
    for logit in args.logit:
        for h in args.heads:
            et = vec.fixture_case(cfg, args.data, h, logit)
            if et is None:
                raise BenchError(f"fixture {args.data!r} missing or does not fit the preset")
            full = vec.fixture_case(cfg, args.data, h, logit, no_et=True)
            got, (c_et, c_full) = run_cases(LeopardEngine(cfg, lanes=args.lanes), [et, full])
            for case, beats in zip((et, full), got):
                msg = vec.first_mismatch(cfg, 0, case, beats)
                if msg is not None:
                    raise BenchError(f"RTL differs from golden: {msg}")
            st = lp.front_end_stats(lp.front_end(et.q_q, et.k_q, et.th, cfg.qk_bits,
                                                 et.valid_len))
            rows.append({"logit": logit, "head": h, "cycles_et": c_et, "cycles_no_et": c_full,
                         "ratio": c_et / c_full, "bits_ratio": st["bits_ratio"],
                         "kept_fraction": st["kept_fraction"]})
            r = rows[-1]
            print(f"logit>={logit:g} head {h:2d}: cycles ET {c_et:5d}  no ET {c_full:5d}  "
                  f"ratio {r['ratio']:.3f}  (golden bits ratio {r['bits_ratio']:.3f}, "
                  f"kept {r['kept_fraction']:.1%})", flush=True)
    print(f"{args.data}, default preset (B = {cfg.qk_bits}, d = {cfg.head_dim}), "
          f"{args.lanes} lanes:")
    for logit in args.logit:
        sel = [r for r in rows if r["logit"] == logit]
        et, full = sum(r["cycles_et"] for r in sel), sum(r["cycles_no_et"] for r in sel)
        print(f"  logit >= {logit:g}: {len(sel)} heads, cycles ET {et} / no ET {full} = "
              f"{et / full:.3f} (ideal bits ratio "
              f"{sum(r['bits_ratio'] for r in sel) / len(sel):.3f})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "lanes": args.lanes, "data": args.data,
                                        "provenance": provenance(NAME, argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(NAME, main))
