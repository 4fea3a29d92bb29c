"""Cycles of the pruning modes on real paragraphs: each mode against dense in the same process.

For each bundled capture (default: the three 128-token-class paragraphs and the 30-token
sentence) and each setting (default: the default preset's mass rule, top-k at the default
``k_frac``), every head goes through the golden model and the cycle model of the top
(:func:`sim.top_cycles.head_cycles`, equal to the RTL's ``cycles`` register on every head the
tests check); printed per capture: kept blocks, mean cycles per head dense and pruned, the
speedup and its fraction of the ideal (the array's work ratio).  ``--rtl-heads K`` also
simulates the first K heads of each capture in the RTL top (Verilator), dense and pruned,
and fails unless the registers equal the model.

    python bench/mass_cycles.py                                  # model, about a minute
    python bench/mass_cycles.py --data para128 --rtl-heads 2     # plus 2 heads in RTL
    python bench/mass_cycles.py --setting mass=0.0625 --setting topk=0.5
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchutil import BenchError, require, run_main  # noqa: E402

require("mass_cycles", ["numpy", "amaranth"])

import numpy as np  # noqa: E402

from bench.cycles import dense_of, rtl_cycles, table  # noqa: E402
from golden.model import attention  # noqa: E402
from hdpgen.calibration import apply_setting, parse_setting  # noqa: E402
from hw.presets import preset  # noqa: E402
from sim.fixtures import load_fixture  # noqa: E402
from sim.top_cycles import head_cycles, ideal_cycles  # noqa: E402


def measure(cfg, data: str) -> dict:
    d = load_fixture(data)
    vl = d.get("valid_len")
    out = {}
    for label, run, dense in (("dense", dense_of(cfg), True), ("pruned", cfg, False)):
        res = attention(d["q"], d["k"], d["v"], run, vl)
        heads = res["heads"]
        out[label] = {"cycles": [head_cycles(run, h, dense) for h in heads],
                      "ideal": [ideal_cycles(run, h, dense) for h in heads],
                      "kept": float(res["stats"]["kept_block_fraction"])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mass_cycles", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--data", action="append", help="bundled capture (repeatable; default: "
                   "para128, para119, para116, long)")
    p.add_argument("--setting", action="append", metavar="MODE=VALUE",
                   help="topk=K_FRAC, threshold=RHO or mass=EPS (repeatable; default: the "
                        "preset's mass eps and top-k k_frac)")
    p.add_argument("--rtl-heads", type=int, default=0, help="heads simulated in RTL per capture")
    p.add_argument("--build-dir", type=Path, default=ROOT / "build" / "bench" / "mass_cycles")
    p.add_argument("--traceback", action="store_true")
    a = p.parse_args(argv)
    base = preset(a.preset)
    settings = [parse_setting(s, base) for s in a.setting] if a.setting else \
        [("mass", base.eps), ("topk", base.k_frac)]
    datas = a.data or ["para128", "para119", "para116", "long"]
    rows = []
    for data in datas:
        d = load_fixture(data)
        n = int(d["valid_len"])
        if n > base.seq_len:
            raise BenchError(f"capture {data} has {n} tokens, more than seq_len {base.seq_len}")
        for mode, value in settings:
            cfg = apply_setting(base, mode, value, n).cfg
            m = measure(cfg, data)
            dn, pr = np.mean(m["dense"]["cycles"]), np.mean(m["pruned"]["cycles"])
            ideal = np.sum(m["dense"]["ideal"]) / np.sum(m["pruned"]["ideal"])
            rows.append([data, n, f"{mode}={value:g}", f"{m['pruned']['kept']:.3f}", f"{dn:.0f}",
                         f"{pr:.0f}", f"{dn / pr:.2f}x", f"{dn / pr / ideal:.0%}"])
            if a.rtl_heads:
                k = a.rtl_heads
                for label, dense in (("dense", True), ("pruned", False)):
                    got = rtl_cycles(cfg, d["q"][:k], d["k"][:k], d["v"][:k], n, "verilator",
                                     a.build_dir, dense)
                    want = m[label]["cycles"][:k]
                    if list(got) != list(want):
                        raise BenchError(f"{data} {mode}={value:g} {label}: RTL cycles "
                                         f"{list(got)} != model {want}")
                rows[-1].append(f"RTL = model on {k} heads")
    cols = ["capture", "tokens", "setting", "kept blocks", "dense cyc/head", "pruned cyc/head",
            "speedup", "of ideal"] + (["check"] if a.rtl_heads else [])
    print(table(f"Cycles per head, preset {a.preset} (dense = pruning off, exact scores)",
                cols, rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main("mass_cycles", main))
