"""``hdpgen simulate``: run the RTL co-processor (``hw.top.Top``) in Icarus or Verilator on
Q, K, V from an ``.npz``.

Input and output contract: as ``hdpgen golden`` (:mod:`hdpgen.cmd_golden`; input validated by
:mod:`hdpgen.npz_io` before anything is built).  Every head of the input goes through ONE build
of the top, one after another, with the configuration's run-time settings in its AXI4-Lite
registers.  OUT.npz holds the RTL's ``out`` (float32), ``out_int`` (int32), ``head_keep`` (the
status register) and ``block_keep`` (read back from the top's mask memory through the
``mask_sel``/``mask_data`` registers; all False for a pruned head, as golden); a top built
with the LeOPArd front end (``front_end = leopard``) has no block masks and writes instead
``kept_entries`` and ``bits_read`` per head (its engine's registers).  OUT.json has
the configuration, the input's shape, the simulator, ``cycles`` (sum over heads of the
``cycles`` register: first input beat to last output beat, run with the configured pruning),
``head_cycles``, ``array_cycles`` (cycles the MAC array accepted a beat), ``kept_keys`` and
the array's busy fraction.

``--calibration CAL.json`` (from ``hdpgen calibrate``: topk, threshold, mass or leopard) writes each
head's own register values (head ``h``: its layer's value, :mod:`hdpgen.calibration`) before
the head runs, on the same build.

``--compare`` also runs the golden model and exits with status 1 on any bit difference,
printing the first differing head, row, column, expected and actual (outputs are still
written).  ``--waves`` writes the simulator's waveform (Icarus FST, Verilator VCD) beside
OUT.npz as ``OUT.fst`` / ``OUT.vcd``.  The build is cached in ``--build-dir`` (default
``build/simulate``), so a second run with the same configuration and simulator starts at once.
Runs that share a build directory at the same time are safe: each has its own run folder
there (removed afterwards) and the model is built once, under a lock (:mod:`sim.top_run`).

Every destination (``--out``, OUT.json, the waveform, ``--build-dir``) is checked before
anything is built: an unwritable one is a one-line error with exit status 2, as is a failed
build or bench (the kept run folder with its logs is named).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from golden.intmath import quantize
from sim.top_run import SimulationError, simulate

from .cmd_golden import (
    _write_both,
    add_calibration_arg,
    calibration_report,
    head_rules_from_args,
    prepare_inputs,
    run_golden,
)
from .common import CliError, add_config_args, check_output_dir, check_output_file

__all__ = ["configure", "main", "first_difference"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qkv", type=Path, required=True, metavar="IN.npz",
                   help="float32 q, k, v of shape (H, N, d), optional valid_len")
    add_config_args(p)
    p.add_argument("--sim", required=True, choices=["icarus", "verilator"],
                   help="HDL simulator")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz",
                   help="output arrays; OUT.json beside it gets configuration and cycle counts")
    p.add_argument("--compare", action="store_true",
                   help="also run the golden model; exit 1 on any bit difference")
    p.add_argument("--waves", action="store_true",
                   help="write the waveform beside OUT.npz (OUT.fst for Icarus, OUT.vcd for "
                        "Verilator)")
    p.add_argument("--build-dir", type=Path, default=Path("build") / "simulate", metavar="DIR",
                   help="where the simulator build is made and cached (default build/simulate)")
    add_calibration_arg(p)


def first_difference(expected: np.ndarray, actual: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first element where the arrays differ (None when equal)."""
    diff = np.argwhere(np.asarray(expected) != np.asarray(actual))
    return None if diff.size == 0 else tuple(int(i) for i in diff[0])


def check_destinations(args: argparse.Namespace) -> None:
    """The build folder and the waveform, checked before anything is built (CliError);
    OUT.npz and OUT.json are checked by :func:`hdpgen.cmd_golden.prepare_inputs`."""
    check_output_dir(args.build_dir, "build folder")
    if args.waves:
        check_output_file(Path(args.out).with_suffix(".fst" if args.sim == "icarus" else ".vcd"),
                          "waveform")


def _one_line(exc: SimulationError) -> str:
    """The message's head on one line (up to the first line that does not end in a colon,
    i.e. through the first failed test's message), naming the kept run folder."""
    head = []
    for line in str(exc).strip().splitlines():
        head.append(line.strip())
        if not line.rstrip().endswith(":") or len(head) == 3:
            break
    more = f" (logs in {exc.details})" if getattr(exc, "details", None) else ""
    return " ".join(head or ["simulation failed"]) + more


def main(args: argparse.Namespace) -> int:
    cfg, data, auto = prepare_inputs(args)
    cal, rules = head_rules_from_args(args, cfg, data)
    check_destinations(args)
    q, k, v, valid_len = data["q"], data["k"], data["v"], data["valid_len"]
    from sim.runner import simulator_missing
    reason = simulator_missing(args.sim)
    if reason is not None:
        raise CliError(reason)
    h, n, d = q.shape
    vl = n if valid_len is None else valid_len
    q_q, k_q = quantize(q, cfg.qk_bits, cfg.qk_frac), quantize(k, cfg.qk_bits, cfg.qk_frac)
    v_q = quantize(v, cfg.v_bits, cfg.v_frac)

    t0 = time.monotonic()
    last = [0.0]

    def progress(done, total):
        now = time.monotonic()
        if done == total or now - last[0] >= 1.0:
            last[0] = now
            print(f"hdpgen simulate: {args.sim}: head {done}/{total} ({now - t0:.0f} s)",
                  flush=True)

    print(f"hdpgen simulate: building the top for {args.sim} (H={h} N={n} d={d} "
          f"valid_len={vl}) ...", flush=True)
    try:
        res, _ = simulate(cfg, q_q, k_q, v_q, vl, args.sim, args.build_dir, waves=args.waves,
                          progress=progress, waves_to=args.out if args.waves else None,
                          head_cfgs=None if rules is None else [r.cfg for r in rules])
    except SimulationError as exc:
        raise CliError(_one_line(exc)) from None
    seconds = time.monotonic() - t0
    out_int = res["out_int"].astype(np.int32)
    leopard = cfg.front_end == "leopard"
    arrays = {"out": (out_int / float(1 << cfg.out_frac)).astype(np.float32),
              "out_int": out_int, "head_keep": res["head_keep"].astype(bool)}
    if leopard:     # entries, not blocks: the engine's kept entries and bits read per head
        arrays.update(kept_entries=res["kept_entries"].astype(np.int64),
                      bits_read=res["bits_read"].astype(np.int64))
    else:
        arrays["block_keep"] = res["block_keep"].astype(bool)
    cycles = [int(c) for c in res["cycles"]]
    arr_cycles = [int(c) for c in res["array_cycles"]]
    report = {
        "config": cfg.to_dict(),
        "auto": {key: getattr(cfg, key) for key in sorted(auto)},
        "input": {"path": str(args.qkv), "heads": h, "tokens": n, "head_dim": d, "valid_len": vl},
        "simulator": args.sim,
        "cycles": int(sum(cycles)),
        "head_cycles": cycles,
        "array_cycles": int(sum(arr_cycles)),
        "head_array_cycles": arr_cycles,
        "kept_keys": [int(x) for x in res["kept_keys"]],
        "array_busy_fraction": sum(arr_cycles) / max(1, sum(cycles)),
        "heads_kept": int(arrays["head_keep"].sum()),
        "wall_seconds": round(seconds, 2),
    }
    if cal is not None:
        report["calibration"] = calibration_report(cal, rules)
    mismatch = None
    if args.compare:
        gold, stats = run_golden(cfg, q, k, v, valid_len, rules)
        report["golden_stats"] = stats
        for name in ("out_int", "head_keep") + (() if leopard else ("block_keep",)):
            idx = first_difference(gold[name], arrays[name])
            if idx is not None:
                mismatch = (name, idx, gold[name][idx], arrays[name][idx])
                break
        report["compare"] = "mismatch" if mismatch else "bit-exact"
    waves = None
    if args.waves:
        waves = res.get("waves")
        report["waves"] = None if waves is None else str(waves)
    try:
        js = _write_both(args.out, arrays, report)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"hdpgen simulate: {args.sim}: {h} heads in {seconds:.1f} s, {report['cycles']} cycles "
          f"({report['cycles'] / h:.0f} per head), array busy "
          f"{report['array_busy_fraction']:.3f}, heads kept {report['heads_kept']}/{h} -> "
          f"{args.out}, {js}" + (f", waves {waves}" if waves else ""))
    if args.compare:
        if mismatch:
            name, idx, exp, act = mismatch
            where = ", ".join(f"{a}={i}" for a, i in zip(
                {"out_int": ("head", "row", "col"), "head_keep": ("head",),
                 "block_keep": ("head", "block_row", "block_col")}[name], idx))
            print(f"hdpgen simulate: MISMATCH against golden in {name} at {where}: expected "
                  f"{exp}, actual {act}")
            return 1
        print("hdpgen simulate: bit-exact against the golden model")
    return 0
