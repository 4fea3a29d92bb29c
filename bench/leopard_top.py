"""The LeOPArd front end against the same engine without early termination and against HDP's
front end, on the bundled 128-token-class paragraphs, all in one process.

For each capture (default: para128, para119, para116; 72 heads each), every head runs through
the RTL top generated with the LeOPArd front end (Verilator by default) three times -- with
the thresholds (a calibration file's per-layer values, or the preset's ``leopard_th``), the
same without early termination, and dense -- each checked whole against golden; and through
the HDP top's exact cycle model with the default preset's pruning.  Printed per capture and
in total: kept entries, bits read, engine and top cycles, and the ratios.  ``--json`` writes
every figure with its provenance.

    python bench/leopard_top.py                                    # preset threshold
    python bench/leopard_top.py --calibration leopard_cal.json     # per-layer thresholds
    python bench/leopard_top.py --data para128 --stride 6           # 12 heads, every layer
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchutil import BenchError, provenance, require, run_main  # noqa: E402

require("leopard_top", ["numpy", "amaranth", "cocotb"])

from hdpgen.leopard_run import hdp_cycles, leopard_golden, leopard_rtl  # noqa: E402
from hw.presets import preset  # noqa: E402
from sim.fixtures import load_fixture  # noqa: E402

DATA = ("para128", "para119", "para116")


def head_cfgs(cfg, calibration, heads: int, n: int):
    if calibration is None:
        return None
    from hdpgen.calibration import head_rules, load_calibration
    cal = load_calibration(Path(calibration))
    if cal.mode != "leopard":
        raise BenchError(f"--calibration must be a leopard calibration, not {cal.mode}")
    return [r.cfg for r in head_rules(cfg, cal, heads, n)]


def measure(cfg, name: str, args) -> dict:
    d = load_fixture(name)
    q, k, v = (d[x][:: args.stride][: args.heads] for x in ("q", "k", "v"))
    vl = d.get("valid_len")
    n = int(vl) if vl is not None else q.shape[1]
    gold = leopard_golden(q, k, v, cfg, vl, head_cfgs(cfg, args.calibration, q.shape[0], n))

    def tick(done, total, what):
        print(f"  {name}: {what} {done}/{total}", end="\r", flush=True)

    rtl = leopard_rtl(gold, cfg, args.simulator, args.build_dir, progress=tick)
    print(" " * 60, end="\r")
    if not rtl["bit_exact"]:
        raise BenchError(f"{name}: the RTL differs from golden ({rtl['first_mismatch']})")
    return {"golden": gold["stats"], "accuracy": gold["accuracy"], "rtl": rtl,
            "hdp": hdp_cycles(gold, cfg)}


def row(name: str, m: dict) -> list:
    r, h, st = m["rtl"], m["hdp"], m["golden"]
    s = {k: sum(r[k]["cycles"]) for k in ("as_run", "no_et", "dense")}
    fe = {k: sum(r[k]["fe_cycles"]) for k in ("as_run", "no_et")}
    hp, hd = sum(h["cycles"]), sum(h["cycles_dense"])
    return [name, f"{st['kept_fraction']:.3f}", f"{st['bits_ratio']:.3f}",
            f"{fe['no_et'] / fe['as_run']:.2f}x", f"{s['no_et'] / s['as_run']:.2f}x",
            f"{s['dense'] / s['as_run']:.2f}x", f"{h['kept_entry_fraction']:.3f}",
            f"{hd / hp:.2f}x", f"{hp / s['as_run']:.2f}x"]


HEAD = ["capture", "kept entries", "bits read / all", "engine: no ET / ET", "top: no ET / ET",
        "top: dense / ET", "HDP kept entries", "HDP: dense / pruned", "HDP / LeOPArd cycles"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="leopard_top", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="leopard")
    p.add_argument("--lanes", type=int, default=None,
                   help="bit-serial lanes (default: the preset's leopard_lanes)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="a leopard calibration (hdpgen calibrate --mode leopard): per-layer "
                        "thresholds (default: the preset's leopard_th on every head)")
    p.add_argument("--data", action="append", help=f"bundled capture (repeatable; default: "
                   f"{', '.join(DATA)})")
    p.add_argument("--heads", type=int, default=None, help="first K heads of each capture")
    p.add_argument("--stride", type=int, default=1,
                   help="every S-th head (6: two heads of each of MiniLM's six layers)")
    p.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench" / "leopard_top")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = p.parse_args(argv)
    cfg = preset(args.preset)
    if args.lanes is not None:
        cfg = cfg.replace(leopard_lanes=args.lanes)
    if cfg.front_end != "leopard":
        raise BenchError(f"--preset must have front_end leopard, not {cfg.front_end}")
    results = {name: measure(cfg, name, args) for name in (args.data or DATA)}
    rows = [row(name, m) for name, m in results.items()]
    print("| " + " | ".join(HEAD) + " |")
    print("|" + "---|" * len(HEAD))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        prov = provenance("bench/leopard_top.py", sys.argv[1:] if argv is None else argv)
        args.json.write_text(json.dumps({"provenance": prov, "config": cfg.to_dict(),
                                         "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("leopard_top", main))
