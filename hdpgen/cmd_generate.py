"""``hdpgen generate``: write a unit's (or every unit's) Verilog and JSON.

    hdpgen generate --unit score_unit --preset tiny -o out/
    hdpgen generate --all --preset odd --set causal=false -o out/

Each unit gives ``<unit>.v`` and ``<unit>.json`` (configuration, ports, tool versions).  All
units are generated in memory first and written only when every one succeeded; each file is
written to a temporary and renamed into place, so a failure leaves no half-written output.
"""

import argparse
import json
from pathlib import Path

from hw.export import verilog_text
from hw.units import UNITS, not_in_design_message, unit_names

from .common import (
    CliError,
    add_config_args,
    atomic_write,
    check_output_dir,
    check_output_file,
    config_from_args,
)

__all__ = ["configure", "main"]


def configure(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", metavar="NAME", help=f"one unit: {', '.join(UNITS)}")
    which.add_argument("--all", action="store_true", help="every unit present in this checkout")
    add_config_args(p)
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output directory")


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = check_output_dir(Path(args.out))
    if args.all:
        names = unit_names(cfg)
        if not names:
            raise CliError("no unit is implemented in this checkout yet")
    else:
        if args.unit not in UNITS:
            raise CliError(f"unit must be one of {', '.join(UNITS)}, not {args.unit!r}")
        if args.unit not in unit_names(cfg):
            raise CliError(not_in_design_message(args.unit, cfg))
        names = [args.unit]
    for name in names:
        for suffix in (".v", ".json"):
            check_output_file(out / f"{name}{suffix}")
    outputs = []
    for name in names:
        try:
            v_text, meta = verilog_text(name, cfg)
        except Exception as exc:
            exc.add_note(f"hdpgen generate: while generating unit {name!r}; nothing was written")
            raise
        outputs.append((name, v_text, json.dumps(meta, indent=2, sort_keys=True) + "\n"))
    for name, v_text, j_text in outputs:
        with atomic_write(out / f"{name}.v", "w") as f:
            f.write(v_text)
        with atomic_write(out / f"{name}.json", "w") as f:
            f.write(j_text)
        print(f"{out / name}.v  {out / name}.json")
    return 0
