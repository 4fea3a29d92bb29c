"""Cycles of the co-processor top on real MiniLM attention: dense vs pruned, ideal, utilization,
speedup against array size, and the array's dense GEMMs against SCALE-Sim.

Usage (from the repository root)::

    .venv/bin/python bench/cycles.py [--data long] [--sim verilator] [--model-only] [--all-heads]
                           [--keep 0.75 ...] [--rho 0.5 ...] [--out build/bench/cycles.json]
                           [--results bench/results/cycles.json]

Run it with the project's virtual environment (``.venv/bin/python``): a missing package, or any
failure in a worker process or simulation, stops the benchmark with one ``bench/cycles: error:``
line and exit status 1 (``--traceback`` shows the whole traceback).

What it reports (every ratio is against a baseline run in the same process):

1. *Configured array* (``--preset``, default 2x8): per head and per layer, the ``cycles``
   register of the top (first input beat to last output beat, input at full rate, output
   always ready) in the dense baseline (pruning and head pruning off, exact scores) and under
   each pruning setting, from the cycle model :mod:`sim.top_cycles`, and measured with
   :func:`sim.top_run.simulate` on the first ``--rtl-heads`` heads (all 72 with
   ``--all-heads``); the worst model/RTL disagreement; ideal cycles (multiply-accumulates
   issued on the array / ``R x C``), array utilization (ideal / cycles) and speedup
   (dense / pruned).
2. *Sweep of array size* (model, all heads): 4x4, 8x8, 16x16 and the co-design shapes whose
   ``array_rows`` equals ``block_rows`` (2x8, 2x16, 4x8 with 4x4 blocks): a score tile's rows
   share the kept key columns of ONE block-row, so a pruned block column is a skipped tile
   column for every row of the tile; with more rows per tile than per block, a tile carries the
   union of several block-rows' masks and skips only what all of them prune.
3. *Accuracy* of each setting: the golden model against float attention on the same data
   (:func:`hdpgen.accuracy.golden_accuracy`; the sentence-embedding cosine comes from
   ``hdpgen eval``, pass its CSV with ``--eval-csv`` to print it beside).
4. *Dense utilization at N = 128*: random Q, K, V with ``valid_len = 128`` on the preset
   (model on ``--n128-heads`` heads; RTL on one unless ``--model-only``); and on the same heads
   the pruned settings (top-k keep 1/4, 1/2, 3/4 and the ``--keep`` values; threshold with
   each ``--rho``): speedup over dense, the ideal speedup (dense MACs / pruned MACs) and the
   fraction of it achieved.
5. *SCALE-Sim* (PyPI ``scalesim``, output stationary, same R x C): compute cycles of the two
   GEMMs of a head, ``Q K^T`` (M = N, K = d, N = N) and ``P V`` (M = N, K = N, N = d),
   against our array alone on the same dense tiles (:func:`sim.cycle_model.predict_cycles`).

JSON with every number goes to ``--out``.  ``--results`` also writes the small summary that
``bench/readme_figures.py`` turns into the README's "Measured" table: the figures, the command
line that produced them and the git commit they were measured at.
"""

import argparse
import concurrent.futures as cf
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.benchutil import BenchError, provenance, require, run_main  # noqa: E402

require("bench/cycles", ["numpy", "amaranth"])

import numpy as np  # noqa: E402

from hw.config import K_FRAC_BITS, HDPConfig  # noqa: E402

#: array sizes of the sweep; ``RxC/BRxBC`` also sets the block shape (4x8/4x4: the co-design
#: point of a 4-row array)
SWEEP = ["4x4", "8x8", "16x16", "2x8", "2x16", "4x8", "4x8/4x4"]


# ------------------------------------------------------------------------------ settings
def settings_for(base: HDPConfig, keeps: list[float], rhos: list[float]
                 ) -> list[tuple[str, HDPConfig]]:
    """Pruning settings (name, configuration): top-k keeping ``keep`` of every block-row's
    valid blocks (``k_frac = keep``, rounded up to a multiple of 2**-8) and threshold with
    ``rho``."""
    out = []
    one = 1 << K_FRAC_BITS
    for kf in keeps:
        out.append((f"topk keep={kf:g}", base.replace(prune_mode="topk",
                                                       k_frac=math.ceil(kf * one) / one)))
    for rho in rhos:
        out.append((f"threshold rho={rho:g}", base.replace(prune_mode="threshold", rho=rho)))
    return out


def describe(cfg: HDPConfig) -> str:
    if cfg.prune_mode == "mass":
        return f"eps={cfg.eps:g}"
    return f"k_frac={cfg.k_frac:g}" if cfg.prune_mode == "topk" else f"rho={cfg.rho:g}"


def dense_of(cfg: HDPConfig) -> HDPConfig:
    return cfg.replace(prune_mode="off", approx="exact", head_prune=False)


def with_array(cfg: HDPConfig, shape: str) -> HDPConfig:
    """``RxC`` or ``RxC/BRxBC`` (array, and block shape)."""
    arr, _, blk = shape.lower().partition("/")
    r, c = (int(x) for x in arr.split("x"))
    changes = {"array_rows": r, "array_cols": c}
    if blk:
        changes["block_rows"], changes["block_cols"] = (int(x) for x in blk.split("x"))
    return cfg.replace(**changes)


# ------------------------------------------------------------------------------ model jobs
def model_job(cfg_dict: dict, data: str, dense: bool) -> dict:
    """All heads of the fixture through the cycle model (runs in a worker process)."""
    from golden.model import attention
    from sim.fixtures import load_fixture
    from sim.top_cycles import array_busy, head_cycles, ideal_cycles
    cfg = HDPConfig.from_dict(cfg_dict)
    d = load_fixture(data)
    vl = d.get("valid_len")
    run_cfg = dense_of(cfg) if dense else cfg
    res = attention(d["q"], d["k"], d["v"], run_cfg, vl)
    heads = res["heads"]
    return {"cycles": [head_cycles(run_cfg, h, dense) for h in heads],
            "ideal": [ideal_cycles(run_cfg, h, dense) for h in heads],
            "busy": [array_busy(run_cfg, h, dense) for h in heads],
            "kept_blocks": float(res["stats"]["kept_block_fraction"]),
            "kept_heads": float(res["stats"]["kept_head_fraction"])}


def run_model_jobs(jobs: list[tuple[str, HDPConfig, bool]], data: str, workers: int
                   ) -> dict[tuple[str, bool], dict]:
    out = {}
    if workers <= 1:
        for key, cfg, dense in jobs:
            out[(key, dense)] = model_job(cfg.to_dict(), data, dense)
        return out
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        futs = {pool.submit(model_job, cfg.to_dict(), data, dense): (key, dense)
                for key, cfg, dense in jobs}
        for f in cf.as_completed(futs):
            try:
                out[futs[f]] = f.result()
            except BaseException:
                # a failed worker ends the benchmark: drop the queued jobs, re-raise (run_main
                # turns it into one error line and exit status 1)
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return out


# ------------------------------------------------------------------------------ RTL
def rtl_cycles(cfg: HDPConfig, q, k, v, vl: int, simulator: str, build_root: Path,
               dense: bool) -> np.ndarray:
    """``cycles`` registers of the RTL top for (H, N, d) float inputs (quantized here)."""
    from golden.model import quantize_qkv
    from sim.top_run import simulate, split_runtime
    run_cfg = dense_of(cfg) if dense else cfg
    hw_cfg, _ = split_runtime(run_cfg)
    import hashlib
    build = build_root / f"{simulator}_{hashlib.sha256(hw_cfg.to_json().encode()).hexdigest()[:12]}"
    q_q, k_q, v_q = quantize_qkv(q, k, v, run_cfg)
    res, _ = simulate(run_cfg, q_q, k_q, v_q, vl, simulator, build)
    return np.asarray(res["cycles"], np.int64)


# ------------------------------------------------------------------------------ SCALE-Sim
_SCALESIM_CFG = """[general]
run_name = hdpgen

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:    4096
FilterSramSzkB:   4096
OfmapSramSzkB:    4096
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow : os
Bandwidth : 64
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 64
IfmapSRAMBankNum: 16
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 64
FilterSRAMBankNum: 16
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def scalesim_gemms(rows: int, cols: int, gemms: list[tuple[str, int, int, int]], folder: Path
                   ) -> list[dict]:
    """SCALE-Sim (output stationary, rows x cols) on GEMMs ``(name, M, N, K)``.

    Per GEMM: ``compute`` = rows of SCALE-Sim's OS demand matrices, i.e. its compute cycles:
    ``ceil(M/R) * ceil(N/C)`` folds, each ``K + R + C - 2`` cycles (K accumulation steps, the
    operand skew fill ``R - 1``, the output drain ``C - 1``), folds NOT overlapped (it drains
    every fold before the next); ``stalls`` = its memory stall cycles (0 here: 4 MB SRAMs and
    bandwidth estimation mode); ``util`` its compute utilization.  Driven layer by layer: its
    memory model's epilogue (``int(max(...))`` over 1-element arrays) fails with NumPy 2 after
    the compute and stall figures are final, so that error is caught and ignored."""
    from scalesim.scale_sim import scalesim
    from scalesim.single_layer_sim import single_layer_sim
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scalesim.cfg").write_text(_SCALESIM_CFG.format(rows=rows, cols=cols))
    (folder / "gemm.csv").write_text("Layer, M, N, K,\n" + "".join(
        f"{name}, {m}, {n}, {k},\n" for name, m, n, k in gemms))
    (folder / "layout.csv").write_text("Layer name, unused,\n")
    s = scalesim(save_disk_space=True, verbose=False, config=str(folder / "scalesim.cfg"),
                 topology=str(folder / "gemm.csv"), layout=str(folder / "layout.csv"),
                 input_type_gemm=True)
    out = []
    for i, (name, m, n, k) in enumerate(gemms):
        layer = single_layer_sim()
        layer.set_params(layer_id=i, config_obj=s.config, topology_obj=s.topo,
                         layout_obj=s.layout, verbose=False)
        try:
            layer.run()
        except TypeError as exc:      # NumPy 2 and scalesim 3.0.0's trace epilogue, see above
            if "0-dimensional" not in str(exc):
                raise
        cs = layer.compute_system
        out.append({"gemm": name, "M": m, "N": n, "K": k,
                    "compute": int(cs.get_ofmap_demand_mat().shape[0]),
                    "stalls": int(layer.memory_system.stall_cycles),
                    "util": float(cs.get_avg_compute_utilization())})
    return out


def our_gemm_cycles(cfg: HDPConfig, n: int, which: str) -> int:
    """Our array alone on the dense tiles of one GEMM (tiles back to back, ideal feeder):
    ``score`` = Q K^T (R x C tiles, depth d), ``pv`` = P V (R x C tiles, depth n)."""
    from sim.cycle_model import predict_cycles, tile_plan
    keep = np.ones((-(-n // cfg.block_rows), -(-n // cfg.block_cols)), bool)
    tiles = tile_plan(cfg, keep, n, n, passes=(which,))
    return predict_cycles(cfg, [t.depth(cfg) for t in tiles])


# ------------------------------------------------------------------------------ printing
def table(title: str, cols: list[str], rows: list[list]) -> str:
    def f(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return "-" if v is None else str(v)
    cells = [cols] + [[f(v) for v in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = [title, "  ".join(c.rjust(x) for c, x in zip(cells[0], w)),
             "  ".join("-" * x for x in w)]
    lines += ["  ".join(c.rjust(x) for c, x in zip(r, w)) for r in cells[1:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="long", help="bundled fixture (default long)")
    p.add_argument("--preset", default="default")
    p.add_argument("--sim", default="verilator", choices=["verilator", "icarus"])
    p.add_argument("--model-only", action="store_true", help="no RTL simulation")
    p.add_argument("--rtl-heads", type=int, default=4, help="heads simulated in RTL (default 4)")
    p.add_argument("--all-heads", action="store_true", help="simulate all 72 heads in RTL")
    p.add_argument("--keep", type=float, action="append",
                   help="top-k fraction of block columns kept; repeatable (default 0.75)")
    p.add_argument("--rho", type=float, action="append",
                   help="threshold rho; repeatable (default 0: keep the blocks at or above the "
                        "row's mean importance)")
    p.add_argument("--arrays", default=",".join(SWEEP), help="sweep, comma separated RxC")
    p.add_argument("--n128-heads", type=int, default=2, help="random heads at N = 128")
    p.add_argument("--no-scalesim", action="store_true")
    p.add_argument("--eval-csv", type=Path, help="hdpgen eval --csv output to print beside")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "cycles.json")
    p.add_argument("--results", type=Path, metavar="JSON",
                   help="also write the summary the README's table is rendered from (with the "
                        "command and git commit), e.g. bench/results/cycles.json")
    p.add_argument("--traceback", action="store_true", help="on failure, print the traceback")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    needed = [] if args.model_only else ["cocotb", "cocotb_tools", "cocotbext.axi"]
    require("bench/cycles", needed + ([] if args.no_scalesim else ["scalesim"]))

    from hdpgen.accuracy import golden_accuracy
    from hw.presets import preset
    from sim.fixtures import load_fixture
    t_start = time.monotonic()
    times: dict[str, float] = {}
    base = preset(args.preset)
    d = load_fixture(args.data)
    H, N = d["q"].shape[0], d["q"].shape[1]
    vl = int(d.get("valid_len") or N)
    n_layers, n_heads = int(d.get("n_layers", 6)), int(d.get("n_heads", 12))
    keeps = args.keep or [0.75]
    rhos = args.rho if args.rho is not None else [0.0]
    settings = settings_for(base, keeps, rhos)
    here = f"{base.array_rows}x{base.array_cols}"
    arrays = list(dict.fromkeys([here] + [a.strip() for a in args.arrays.split(",") if a]))
    report: dict = {"data": {"name": args.data, "heads": H, "tokens": N, "valid_len": vl,
                             "sentence": str(d.get("sentence", ""))},
                    "preset": args.preset, "config": base.to_dict(),
                    "settings": [{"label": lab, "prune_mode": c.prune_mode, "k_frac": c.k_frac,
                                  "rho": c.rho} for lab, c in settings]}
    settings_of = {a: dict(settings_for(with_array(base, a), keeps, rhos)) for a in arrays}
    print(f"bench/cycles: {args.data} ({H} heads, N = {N}, valid_len = {vl}), preset "
          f"{args.preset}: {base.array_rows}x{base.array_cols} array, "
          f"{base.block_rows}x{base.block_cols} blocks, criterion {base.criterion}", flush=True)

    # -------------------------------------------------------------- model, every array
    t0 = time.monotonic()
    jobs = []
    for a in arrays:
        cfg_a = with_array(base, a)
        jobs.append((f"{a}|dense", cfg_a, True))
        for lab, c in settings_of[a].items():
            jobs.append((f"{a}|{lab}", c, False))
    model = run_model_jobs(jobs, args.data, args.jobs)
    times["model_sweep_s"] = time.monotonic() - t0

    # -------------------------------------------------------------- RTL on the configured array
    n_rtl = 0 if args.model_only else (H if args.all_heads else min(args.rtl_heads, H))
    rtl: dict[str, np.ndarray] = {}
    if n_rtl:
        t0 = time.monotonic()
        build_root = ROOT / "build" / "bench" / "rtl"
        q, k, v = (np.asarray(d[x])[:n_rtl] for x in ("q", "k", "v"))
        print(f"bench/cycles: RTL ({args.sim}) on {n_rtl} heads, dense and "
              f"{len(settings)} settings ...", flush=True)
        rtl["dense"] = rtl_cycles(base, q, k, v, vl, args.sim, build_root, True)
        for lab, c in settings:
            rtl[lab] = rtl_cycles(c, q, k, v, vl, args.sim, build_root, False)
        times["rtl_s"] = time.monotonic() - t0

    # -------------------------------------------------------------- per head, configured array
    dm = model[(f"{here}|dense", True)]
    worst = 0.0
    per_head: dict[str, list] = {}
    for lab, _c in settings:
        pm = model[(f"{here}|{lab}", False)]
        rows = []
        for h in range(H):
            row = {"head": h, "layer": h // n_heads, "dense": dm["cycles"][h],
                   "pruned": pm["cycles"][h], "ideal_dense": dm["ideal"][h],
                   "ideal_pruned": pm["ideal"][h], "busy_dense": dm["busy"][h],
                   "busy_pruned": pm["busy"][h]}
            if h < n_rtl:
                row["dense_rtl"] = int(rtl["dense"][h])
                row["pruned_rtl"] = int(rtl[lab][h])
                for m_key, r_key in (("dense", "dense_rtl"), ("pruned", "pruned_rtl")):
                    worst = max(worst, abs(row[m_key] - row[r_key]) / row[r_key])
            rows.append(row)
        per_head[lab] = rows
    report["per_head"] = per_head
    report["rtl"] = {"simulator": None if not n_rtl else args.sim, "heads": n_rtl,
                     "worst_model_vs_rtl": worst if n_rtl else None}

    out_lines = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        out_lines.append(s)

    say()
    for lab, rows in per_head.items():
        trows = []
        for r in rows[:max(n_rtl, 4)]:
            trows.append([r["head"], r.get("dense_rtl"), r["dense"], r.get("pruned_rtl"),
                          r["pruned"], r["ideal_dense"], r["ideal_pruned"],
                          r["ideal_dense"] / r["dense"], r["ideal_pruned"] / r["pruned"],
                          r["dense"] / r["pruned"]])
        for layer in range(n_layers):
            lr = [r for r in rows if r["layer"] == layer]
            if not lr:
                continue
            dn, pr = sum(r["dense"] for r in lr), sum(r["pruned"] for r in lr)
            idn, ipr = sum(r["ideal_dense"] for r in lr), sum(r["ideal_pruned"] for r in lr)
            trows.append([f"layer {layer}", None, dn, None, pr, idn, ipr, idn / dn, ipr / pr,
                          dn / pr])
        dn, pr = sum(r["dense"] for r in rows), sum(r["pruned"] for r in rows)
        idn, ipr = sum(r["ideal_dense"] for r in rows), sum(r["ideal_pruned"] for r in rows)
        trows.append([f"all {H}", None, dn, None, pr, idn, ipr, idn / dn, ipr / pr, dn / pr])
        say(table(f"[1] {here} array, {lab} ({describe(settings_of[here][lab])}): cycles per "
                  f"head (RTL = measured, model = sim.top_cycles), per layer and total",
                  ["head", "dense RTL", "dense", "pruned RTL", "pruned", "ideal dense",
                   "ideal pruned", "util dense", "util pruned", "speedup"], trows))
        say()
    if n_rtl:
        say(f"model vs RTL ({args.sim}, {n_rtl} heads x (dense + {len(settings)} settings)): "
            f"worst |model - RTL| / RTL = {worst:.4%}")
        say()

    # -------------------------------------------------------------- sweep table
    sweep = []
    for a in arrays:
        ca = with_array(base, a)
        da = model[(f"{a}|dense", True)]
        for lab, cfg_s in settings_of[a].items():
            pa = model[(f"{a}|{lab}", False)]
            dn, pr = sum(da["cycles"]), sum(pa["cycles"])
            sweep.append({"array": f"{ca.array_rows}x{ca.array_cols}",
                          "block": f"{ca.block_rows}x{ca.block_cols}",
                          "codesign": ca.array_rows == ca.block_rows, "setting": lab,
                          "param": describe(cfg_s),
                          "dense": dn, "pruned": pr, "speedup": dn / pr,
                          "ideal_dense": sum(da["ideal"]), "ideal_pruned": sum(pa["ideal"]),
                          "util_dense": sum(da["ideal"]) / dn,
                          "util_pruned": sum(pa["ideal"]) / pr,
                          "busy_dense": sum(da["busy"]) / dn, "busy_pruned": sum(pa["busy"]) / pr,
                          "kept_blocks": pa["kept_blocks"]})
    report["sweep"] = sweep
    say(table(f"[2] speedup against array size (model, all {H} heads; codesign: array_rows == "
              f"block_rows)",
              ["array", "block", "codesign", "setting", "param", "kept blocks", "dense",
               "pruned", "speedup", "util dense", "util pruned", "array busy dense"],
              [[s["array"], s["block"], "yes" if s["codesign"] else "", s["setting"], s["param"],
                s["kept_blocks"],
                s["dense"], s["pruned"], s["speedup"], s["util_dense"], s["util_pruned"],
                s["busy_dense"]] for s in sweep]))
    say()

    # -------------------------------------------------------------- accuracy
    t0 = time.monotonic()
    acc = {}
    blocks = list(dict.fromkeys(f"{with_array(base, a).block_rows}x"
                                f"{with_array(base, a).block_cols}" for a in arrays))
    for blk in blocks:
        for lab, c in settings_for(with_array(base, f"1x1/{blk}"), keeps, rhos):
            ga = golden_accuracy(d["q"], d["k"], d["v"], c, vl)
            st = ga["result"]["stats"]
            acc[f"{blk} {lab}"] = {
                "block": blk, "param": describe(c),
                "cosine_vs_float": ga["pruned_vs_float"]["mean_cosine"],
                "rel_rms_vs_float": ga["pruned_vs_float"]["rel_rms"],
                "unpruned_cosine_vs_float": ga["unpruned_vs_float"]["mean_cosine"],
                "kept_blocks": st["kept_block_fraction"],
                "kept_heads": st["kept_head_fraction"]}
    times["accuracy_s"] = time.monotonic() - t0
    report["accuracy"] = acc
    say(table("[3] accuracy of each setting: golden attention output vs float attention on the "
              "fixture (mean row cosine, relative RMS)",
              ["blocks, setting", "param", "kept blocks", "cosine", "rel RMS",
               "unpruned cosine"],
              [[lab, a["param"], a["kept_blocks"], a["cosine_vs_float"], a["rel_rms_vs_float"],
                a["unpruned_cosine_vs_float"]] for lab, a in acc.items()]))
    if args.eval_csv and args.eval_csv.is_file():
        import csv
        with open(args.eval_csv) as f:
            ev = list(csv.DictReader(f))
        report["eval_csv"] = {"path": str(args.eval_csv), "rows": ev}
        cols = [c for c in ("setting", "cos_mean", "cos_min", "kept_blocks", "kept_heads",
                            "fine_macs") if ev and c in ev[0]] or list(ev[0])[:6]

        def num(x: str):
            try:
                return float(x)
            except ValueError:
                return x
        say()
        say(table(f"    sentence-embedding cosine vs the unpruned model (hdpgen eval, "
                  f"{args.eval_csv})", cols, [[num(r[c]) for c in cols] for r in ev]))
    say()

    # -------------------------------------------------------------- dense utilization, N = 128
    t0 = time.monotonic()
    from golden.model import attention_head_int
    from sim.top_cycles import array_busy, head_cycles, ideal_cycles
    n128 = 128
    dcfg = dense_of(base.replace(seq_len=max(base.seq_len, n128)))
    rng = np.random.default_rng(128)
    nh = max(1, args.n128_heads)
    qk = (-(1 << (dcfg.qk_bits - 1)), 1 << (dcfg.qk_bits - 1))
    vv = (-(1 << (dcfg.v_bits - 1)), 1 << (dcfg.v_bits - 1))
    qs = rng.integers(*qk, size=(nh, n128, dcfg.head_dim))
    ks = rng.integers(*qk, size=(nh, n128, dcfg.head_dim))
    vs = rng.integers(*vv, size=(nh, n128, dcfg.head_dim))
    u_rows = []
    for h in range(nh):
        g = attention_head_int(qs[h], ks[h], vs[h], dcfg, n128)
        u_rows.append({"head": h, "cycles": head_cycles(dcfg, g, True),
                       "ideal": ideal_cycles(dcfg, g, True), "busy": array_busy(dcfg, g, True)})
    if not args.model_only:
        import hashlib

        from sim.top_run import simulate, split_runtime
        hw_cfg, _ = split_runtime(dcfg)
        build = ROOT / "build" / "bench" / "rtl" / (
            f"{args.sim}_{hashlib.sha256(hw_cfg.to_json().encode()).hexdigest()[:12]}")
        res, _ = simulate(dcfg, qs[:1], ks[:1], vs[:1], n128, args.sim, build)
        u_rows[0]["cycles_rtl"] = int(res["cycles"][0])
        u_rows[0]["busy_rtl"] = int(res["array_cycles"][0])
        if u_rows[0]["cycles_rtl"]:
            worst = max(worst, abs(u_rows[0]["cycles"] - u_rows[0]["cycles_rtl"])
                        / u_rows[0]["cycles_rtl"])
            report["rtl"]["worst_model_vs_rtl"] = worst
    times["n128_s"] = time.monotonic() - t0
    report["dense_n128"] = {"array": here, "rows": u_rows}
    say(table(f"[4] dense utilization at N = 128 (random data, valid_len = 128, {here} array): "
              f"ideal = MACs issued / (R C)",
              ["head", "cycles RTL", "cycles model", "ideal", "utilization", "array busy"],
              [[r["head"], r.get("cycles_rtl"), r["cycles"], r["ideal"],
                r["ideal"] / r["cycles"], r["busy"] / r["cycles"]] for r in u_rows]))
    say()

    # -------------------------------------------------------------- pruned speedup, N = 128
    t0 = time.monotonic()
    d_cyc = sum(r["cycles"] for r in u_rows)
    d_ideal = sum(r["ideal"] for r in u_rows)
    p_rows = []
    keeps128 = sorted(set(keeps) | {0.25, 0.5, 0.75})
    for label, scfg in settings_for(dcfg.replace(prune_mode=base.prune_mode), keeps128, rhos):
        cyc = ideal = kept = 0.0
        for h in range(nh):
            g = attention_head_int(qs[h], ks[h], vs[h], scfg, n128)
            cyc += head_cycles(scfg, g, False)
            ideal += ideal_cycles(scfg, g, False)
            kept += float(np.asarray(g.block_keep).sum()) / max(1, np.asarray(g.block_valid).sum())
        speedup, ideal_speedup = d_cyc / cyc, d_ideal / ideal
        p_rows.append({"setting": label, "param": describe(scfg), "kept_blocks": kept / nh,
                       "cycles": cyc, "speedup": speedup, "ideal_speedup": ideal_speedup,
                       "of_ideal": speedup / ideal_speedup})
    times["n128_pruned_s"] = time.monotonic() - t0
    report["pruned_n128"] = {"array": here, "dense_cycles": d_cyc, "rows": p_rows}
    say(table(f"[4b] pruned vs dense at N = 128 (same random heads, model, {here} array): "
              f"ideal speedup = dense MACs / pruned MACs; 'of ideal' = speedup / ideal speedup",
              ["setting", "param", "kept blocks", "cycles", "speedup", "ideal speedup",
               "of ideal"],
              [[r["setting"], r["param"], r["kept_blocks"], r["cycles"], r["speedup"],
                r["ideal_speedup"], r["of_ideal"]] for r in p_rows]))
    say()

    # -------------------------------------------------------------- SCALE-Sim
    if not args.no_scalesim:
        t0 = time.monotonic()
        ss_rows = []
        for a in dict.fromkeys(x.partition("/")[0] for x in arrays):
            cfg_a = with_array(base, a)
            for n in sorted({vl, n128}):
                cfg_n = cfg_a.replace(seq_len=max(cfg_a.seq_len, n))
                dd = cfg_n.head_dim
                res = scalesim_gemms(cfg_n.array_rows, cfg_n.array_cols,
                                     [("qkt", n, n, dd), ("pv", n, dd, n)],
                                     ROOT / "build" / "bench" / "scalesim" / f"{a}_n{n}")
                for r, which in zip(res, ("score", "pv")):
                    ours = our_gemm_cycles(cfg_n, n, which)
                    ss_rows.append({"array": a, "n": n, **r, "ours": ours,
                                    "ratio": ours / r["compute"]})
        times["scalesim_s"] = time.monotonic() - t0
        report["scalesim"] = ss_rows
        say(table("[5] dense GEMM cycles of the array vs SCALE-Sim 3.0.0 (os dataflow, same "
                  "R x C; SCALE-Sim compute cycles = folds x (K + R + C - 2), no fold overlap; "
                  "stalls separate)",
                  ["array", "N", "GEMM", "M", "N'", "K", "SCALE-Sim", "stalls", "ours",
                   "ours/SCALE-Sim"],
                  [[r["array"], r["n"], r["gemm"], r["M"], r["N"], r["K"], r["compute"],
                    r["stalls"], r["ours"], r["ratio"]] for r in ss_rows]))
        say()

    # -------------------------------------------------------------- summary
    best = [s for s in sweep if s["speedup"] >= 2.0]
    if best:
        say("settings with pruned >= 2x faster than dense: " + "; ".join(
            f"{s['array']} ({s['block']} blocks) {s['setting']} ({s['param']}, kept blocks "
            f"{s['kept_blocks']:.3f}) {s['speedup']:.2f}x" for s in best))
    else:
        top = max(sweep, key=lambda s: s["speedup"])
        say(f"no array/setting reaches 2x; best {top['array']} ({top['block']}) {top['setting']}: "
            f"{top['speedup']:.2f}x (kept blocks {top['kept_blocks']:.3f})")
    times["total_s"] = time.monotonic() - t_start
    report["runtime"] = {k: round(v, 1) for k, v in times.items()}
    say("runtime: " + ", ".join(f"{k} {v:.1f}" for k, v in report["runtime"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))
    args.out.with_suffix(".txt").write_text("\n".join(out_lines) + "\n")
    print(f"bench/cycles: wrote {args.out} and {args.out.with_suffix('.txt')}")
    if args.results:
        summary = summarize(report, provenance("bench/cycles.py", argv, times["total_s"]))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(summary, indent=1, default=float) + "\n")
        print(f"bench/cycles: wrote {args.results} (render the README table with "
              f"python bench/readme_figures.py)")
    return 0


def summarize(report: dict, meta: dict) -> dict:
    """The figures the README quotes, small enough to commit: per setting the mean cycles per
    head (model, all heads) of the configured array, the RTL check, the array sweep, dense
    utilization at N = 128, SCALE-Sim ratios and the golden accuracy per setting."""
    if not report.get("per_head"):
        raise BenchError("no pruning setting was measured")
    settings = {}
    dense_mean = None
    for lab, rows in report["per_head"].items():
        dn = sum(r["dense"] for r in rows)
        pr = sum(r["pruned"] for r in rows)
        dense_mean = dn / len(rows)
        settings[lab] = {"cycles_per_head": pr / len(rows), "speedup": dn / pr,
                         "heads": len(rows)}
    for s in report["settings"]:
        settings[s["label"]].update({k: s[k] for k in ("prune_mode", "k_frac", "rho")})
    n128 = report["dense_n128"]["rows"]
    return {
        "meta": meta,
        "data": report["data"],
        "preset": report["preset"],
        "array": report["dense_n128"]["array"],
        "block": f"{report['config']['block_rows']}x{report['config']['block_cols']}",
        "dense_cycles_per_head": dense_mean,
        "settings": settings,
        "rtl": report["rtl"],
        "dense_n128": {"heads": len(n128),
                       "utilization": sum(r["ideal"] for r in n128) / sum(r["cycles"] for r in n128),
                       "cycles_model": [r["cycles"] for r in n128],
                       "cycles_rtl": [r.get("cycles_rtl") for r in n128]},
        "pruned_n128": [{k: r[k] for k in ("setting", "param", "kept_blocks", "speedup",
                                           "ideal_speedup", "of_ideal")}
                        for r in report["pruned_n128"]["rows"]],
        "sweep": [{k: s[k] for k in ("array", "block", "codesign", "setting", "param", "kept_blocks",
                                     "dense", "pruned", "speedup", "util_dense")}
                  for s in report["sweep"]],
        "scalesim": [{k: r[k] for k in ("array", "n", "gemm", "M", "N", "K", "compute", "ours",
                                        "ratio")} for r in report.get("scalesim", [])],
        "accuracy": report["accuracy"],
    }


if __name__ == "__main__":
    sys.exit(run_main("bench/cycles", main))
