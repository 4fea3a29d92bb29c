"""``hdpgen synth``: synthesize units with Yosys and place and route them with nextpnr-ecp5.

Prints a table (per unit and total, the pruning logic's share) and writes the numbers as
JSON (``<out>/synth.json``, atomically) and the table as Markdown (``<out>/synth.md``).
"""

import argparse
import sys
import time
from pathlib import Path

from .common import (
    CliError,
    add_config_args,
    atomic_write,
    check_output_dir,
    check_output_file,
    config_from_args,
    write_json,
)

__all__ = ["configure", "main"]


def configure(p: argparse.ArgumentParser) -> None:
    from synth.driver import DEFAULT_FMAX_TARGET_MHZ, ECP5_DSP_MIN_WIDTH, PNR_SEED, TARGETS
    add_config_args(p)
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--unit", action="append", metavar="NAME",
                     help="synthesize this unit (repeatable); default: all units")
    sel.add_argument("--all", action="store_true", help="synthesize every unit (the default)")
    p.add_argument("-o", "--out", type=Path, metavar="DIR",
                   help="output directory (default: build/<preset>/synth)")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS, metavar="TARGET",
                   help=f"Yosys flows to run: {', '.join(TARGETS)} (default: all)")
    p.add_argument("--no-fmax", dest="fmax", action="store_false",
                   help="skip nextpnr-ecp5 place and route (no Fmax)")
    p.add_argument("--fmax-target", type=float, default=DEFAULT_FMAX_TARGET_MHZ, metavar="MHZ",
                   help=f"clock constraint for nextpnr (default: {DEFAULT_FMAX_TARGET_MHZ:g})")
    p.add_argument("--seed", type=int, default=PNR_SEED, metavar="N",
                   help="nextpnr placer seed (default: %(default)s); placement, and so Fmax, "
                        "varies with it by a few MHz on a large design")
    p.add_argument("--ecp5-dsp-min-width", type=int, default=ECP5_DSP_MIN_WIDTH, metavar="BITS",
                   help="ECP5: products narrower than this many bits are built from LUTs, wider "
                        f"ones use MULT18X18D blocks (default: {ECP5_DSP_MIN_WIDTH}; 1 puts every "
                        "product of operands at least 2 bits wide into a DSP, as stock Yosys does)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up a tool run after this long (reported as a failed stage)")
    p.add_argument("-j", "--jobs", type=int, metavar="N", help="parallel jobs (default: local cores)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _progress_printer(quiet: bool):
    t0 = time.monotonic()

    def progress(unit: str, stage: str, status: str, seconds: float) -> None:
        if quiet or status == "start":
            return
        extra = f" {seconds:.1f} s" if status in ("done", "failed") else ""
        print(f"[{time.monotonic() - t0:6.1f} s] {unit:<15} {stage:<8} {status}{extra}",
              file=sys.stderr, flush=True)
    return progress


def main(args: argparse.Namespace) -> int:
    from hw.units import UNITS, unit_names
    from synth.driver import synth_all
    from synth.report import format_table

    cfg = config_from_args(args)
    avail = unit_names(cfg)
    if args.unit:
        for u in args.unit:
            if u not in UNITS:
                raise CliError(f"unit must be one of {', '.join(UNITS)}, not {u!r}")
            if u not in avail:
                raise CliError(f"unit {u!r} is not available in this checkout; "
                               f"available: {', '.join(avail) or 'none'}")
        units = args.unit
    else:
        units = avail
        if not units:
            raise CliError("no units are available in this checkout")
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {args.jobs}")
    if not args.fmax_target > 0:
        raise CliError(f"--fmax-target must be positive, not {args.fmax_target:g}")
    if args.ecp5_dsp_min_width < 1:
        raise CliError(f"--ecp5-dsp-min-width must be at least 1, not {args.ecp5_dsp_min_width}")
    if args.seed < 0:
        raise CliError(f"--seed must be a non-negative integer, not {args.seed}")
    if args.timeout is not None and not args.timeout > 0:
        raise CliError(f"--timeout must be positive, not {args.timeout:g}")
    out = check_output_dir(args.out if args.out is not None else Path("build") / args.preset / "synth")
    for name in ("synth.json", "synth.md"):
        check_output_file(out / name)
    data = synth_all(cfg, out, units, jobs=args.jobs, targets=tuple(args.targets), fmax=args.fmax,
                     fmax_target_mhz=args.fmax_target, progress=_progress_printer(args.quiet),
                     timeout=args.timeout, ecp5_dsp_min_width=args.ecp5_dsp_min_width,
                     seed=args.seed)
    write_json(out / "synth.json", data)
    with atomic_write(out / "synth.md", "w") as f:
        f.write(format_table(data, "markdown"))
    print(format_table(data, "markdown" if args.markdown else "text"), end="")
    print(f"wrote {out / 'synth.json'} and {out / 'synth.md'} ({data['seconds']:.1f} s)",
          file=sys.stderr)
    failed = any("error" in r or any(isinstance(r.get(s), dict) and "error" in r[s]
                                     for s in ("generic", "ecp5", "ice40", "fmax"))
                 for r in data["units"].values())
    return 1 if failed else 0
