"""``hdpgen decode``: Token-Picker decode steps on a real-model capture, golden and optionally RTL.

Input: a decode capture (:mod:`hdpgen.decode_io`, written by ``hdpgen capture-decoder``).  Each
record (or those of ``--records``) is quantized with :func:`golden.token_picker.quantize_step`
(per-head power-of-two scales chosen from the record's valid positions) and run through
:func:`golden.token_picker.decode_step` at ``--eps`` with cache length N = the file's padded
length (N enters the exponent cap and the softmax guard, so golden and RTL use the same N).
``--set KEY=VALUE`` changes a field of :class:`golden.token_picker.TokenPickerConfig`
(``k_bits``, ``chunk_bits``, ...).

``--sim icarus|verilator`` also runs the RTL accelerator ``DecodeAccel`` (``hw/decode``: the
engine behind its AXI4-Lite registers) on every record and KV group through the cocotb bench
``sim/benches/bench_decode.py``: the settings are written and the counters and ``status`` read
through the registers, K and V sit in an AXI RAM model, no stalls, so the cycle counts are the
engine's own; the build for (d, N, group) is made once in ``--build-dir`` and reused.
``--compare`` fails (exit status 1) unless the RTL's outputs, its AXI read requests and its word
counters equal the golden model's bit for bit and ``status`` ends clear (idle, no read error).  The engine's
elaboration limits (d <= 256, N <= 4096, group <= 16) are checked before anything runs.

OUT.npz: ``out`` float32 (R, Hq, d) (dequantized), ``out_int`` int32 (``out_frac`` fraction
bits), ``keep`` bool (R, Hq, N), ``kept_q`` (R, Hq), ``kept_kv``, ``k_words_read``,
``v_words_read`` (R, Hkv), ``k_words_dense``, ``v_words_dense`` (R,) per KV head, ``layer``,
``position``, ``valid_len`` (R,); with ``--sim`` also ``rtl_out_int`` (R, Hq, d) and
``rtl_cycles`` (R, Hkv).  OUT.json beside it: configuration, eps, totals, per-record figures and
the error of the golden output against :func:`golden.token_picker.float_decode_step`.  Input
problems are found before any work (exit status 2, one line); OUT.npz and OUT.json are written
together or not at all.
"""

import argparse
import dataclasses
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from golden import token_picker as tp

from .common import CliError, check_output_dir, write_files_atomically
from .decode_io import load_capture

__all__ = ["configure", "main", "config_from_settings", "quantize_record", "run_golden",
           "summarize", "rtl_limits_problem"]

SIMULATORS = ("icarus", "verilator")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qkv", type=Path, required=True, metavar="IN.npz",
                   help="a decode capture (hdpgen capture-decoder)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz",
                   help="output arrays; OUT.json beside it gets the figures")
    p.add_argument("--eps", type=float, default=1e-3,
                   help="probability threshold below which a token is dropped (default 1e-3; "
                        "0 keeps every token)")
    p.add_argument("--eps-v", type=float, default=0.0, metavar="E",
                   help="with --set v_lo_bits=L: read V's low L bits only for the kept tokens "
                        "a query head may give a probability >= E (default 0: for all)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a TokenPickerConfig field, e.g. k_bits=12, chunk_bits=4 (repeatable)")
    p.add_argument("--records", metavar="I[,I...]", action="append",
                   help="run only these records (0-based indices; default all)")
    p.add_argument("--sim", choices=SIMULATORS, help="also run the RTL decode engine")
    p.add_argument("--compare", action="store_true",
                   help="with --sim: fail unless the RTL equals the golden model bit for bit")
    p.add_argument("--build-dir", type=Path, default=Path("build") / "decode", metavar="DIR",
                   help="simulator build folder, reused across runs (default build/decode)")


def config_from_settings(settings: list[str]) -> tp.TokenPickerConfig:
    fields = {f.name for f in dataclasses.fields(tp.TokenPickerConfig)}
    changes = {}
    for item in settings:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise CliError(f"--set {item!r}: expected KEY=VALUE")
        if key not in fields:
            raise CliError(f"--set {key}: not a TokenPickerConfig field (fields: "
                           f"{', '.join(sorted(fields))})")
        try:
            changes[key] = int(value.strip())
        except ValueError:
            raise CliError(f"--set {key}={value.strip()!r}: must be an integer") from None
    return tp.TokenPickerConfig(**changes)


def check_eps_v(eps_v: float, cfg: tp.TokenPickerConfig) -> None:
    """``--eps-v``: a threshold in [0, 1) that needs V's low plane (``v_lo_bits > 0``)."""
    tp.eps_q_of(eps_v, cfg, "--eps-v")
    if eps_v and not cfg.v_lo_bits:
        raise CliError("--eps-v needs --set v_lo_bits=L with L > 0 (V's low plane to skip)")


def quantize_record(data: dict, r: int, cfg: tp.TokenPickerConfig):
    """Record ``r`` quantized: scales chosen from its valid positions, padding zero."""
    n = int(data["valid_len"][r])
    k, v = data["k"][r], data["v"][r]
    qq, kq, vq = tp.quantize_step(data["q"][r], k[:, :n], v[:, :n], cfg)
    pad = [(0, 0), (0, k.shape[1] - n), (0, 0)]
    return (qq, dataclasses.replace(kq, x=np.pad(kq.x, pad)),
            dataclasses.replace(vq, x=np.pad(vq.x, pad)))


def run_golden(data: dict, records: list[int], eps: float, cfg: tp.TokenPickerConfig,
               eps_v: float = 0.0):
    """``(quantized, results, reference)`` per record: the quantized step, the
    :class:`~golden.token_picker.StepResult` and the float64 unquantized output."""
    quant, results, refs = [], [], []
    for r in records:
        qkv = quantize_record(data, r, cfg)
        n = int(data["valid_len"][r])
        quant.append(qkv)
        results.append(tp.decode_step(*qkv, n, eps, cfg, eps_v))
        refs.append(tp.float_decode_step(data["q"][r], data["k"][r], data["v"][r], n))
    return quant, results, refs


def summarize(results, valid_lens, group: int) -> dict:
    """Totals over the records: words read, dense vs pruned, and tokens kept."""
    kr = sum(int(x.stats.k_words_read.sum()) for x in results)
    vr = sum(int(x.stats.v_words_read.sum()) for x in results)
    kd = sum(x.stats.k_words_dense * len(x.stats.k_words_read) for x in results)
    vd = sum(x.stats.v_words_dense * len(x.stats.v_words_read) for x in results)
    kept_q = sum(int(x.stats.kept_q.sum()) for x in results)
    kept_kv = sum(int(x.stats.kept_kv.sum()) for x in results)
    valid_q = sum(int(n) * len(x.stats.kept_q) for x, n in zip(results, valid_lens))
    valid_kv = sum(int(n) * len(x.stats.kept_kv) for x, n in zip(results, valid_lens))
    return {"k_words_read": kr, "k_words_dense": kd, "k_ratio": kr / kd,
            "v_words_read": vr, "v_words_dense": vd, "v_ratio": vr / vd,
            "kv_words_read": kr + vr, "kv_words_dense": kd + vd, "kv_ratio": (kr + vr) / (kd + vd),
            "kept_per_query_head": kept_q / valid_q, "kept_per_kv_head": kept_kv / valid_kv,
            "kept_q": kept_q, "valid_q": valid_q, "kept_kv": kept_kv, "valid_kv": valid_kv,
            "group_size": group}


def rtl_limits_problem(d: int, n_cache: int, group: int, cfg: tp.TokenPickerConfig) -> str | None:
    """Why the RTL engine cannot be elaborated for these sizes (None when it can)."""
    from hw.decode.params import DecodeParams
    try:
        return DecodeParams(cfg, d=d, n_cache=n_cache, group=group).burst_problem()
    except ValueError as exc:
        return str(exc)


def _parse_records(values, count: int) -> list[int]:
    if not values:
        return list(range(count))
    out = []
    for item in values:
        for part in item.split(","):
            try:
                i = int(part.strip())
            except ValueError:
                raise CliError(f"--records: {part.strip()!r} is not an integer") from None
            if not 0 <= i < count:
                raise CliError(f"--records: {i} is outside [0, {count - 1}] (the file holds "
                               f"{count} records)")
            if i not in out:
                out.append(i)
    return out


def _check_args(args) -> None:
    if args.out.suffix != ".npz":
        raise CliError(f"--out must name a .npz file, not {str(args.out)!r}")
    if args.compare and not args.sim:
        raise CliError("--compare needs --sim icarus|verilator (it compares the RTL with the "
                       "golden model)")
    from .cmd_golden import check_outputs
    check_outputs(args)
    if args.sim:
        check_output_dir(args.build_dir, "build folder")


def _simulate(args, data, records, quant, results, cfg, eps):
    """Run the engine on every record and KV group; returns (rtl_out (R, Hq, d), cycles
    (R, Hkv), mismatches)."""
    from hw.config import HDPConfig
    from hw.decode.accel import DecodeAccel
    from hw.decode.params import DecodeParams
    from sim.benches.bench_decode import write_case_file
    from sim.runner import run_cocotb, simulator_missing

    reason = simulator_missing(args.sim)
    if reason is not None:
        raise CliError(f"--sim {args.sim}: {reason}")
    r_count = len(records)
    hq, d = data["q"].shape[1:]
    hkv, n_cache = data["k"].shape[1:3]
    group = data["group_size"]
    params = DecodeParams(cfg, d=d, n_cache=n_cache, group=group)
    rtl_out = np.zeros((r_count, hq, d), np.int64)
    cycles = np.zeros((r_count, hkv), np.int64)
    problems = []
    print(f"hdpgen decode: RTL accelerator on {args.sim} (d={d} N={n_cache} group={group}), "
          f"{r_count * hkv} runs", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hdpgen-decode-") as tmp:
        for i, r in enumerate(records):
            qq, kq, vq = quant[i]
            for g in range(hkv):
                hs = slice(g * group, (g + 1) * group)
                case = Path(tmp) / f"case_{i}_{g}.npz"
                write_case_file(case, tp.Quantized(qq.x[hs], qq.frac[hs]),
                                tp.Quantized(kq.x[g:g + 1], kq.frac[g:g + 1]),
                                tp.Quantized(vq.x[g:g + 1], vq.frac[g:g + 1]))
                fig = Path(tmp) / f"fig_{i}_{g}.json"
                spec = {"cfg": dataclasses.asdict(cfg), "d": d, "n_cache": n_cache,
                        "group": group, "n": int(data["valid_len"][r]), "eps": eps,
                        "eps_v": args.eps_v,
                        "case": "file", "data": str(case), "seed": 1, "stall": 0.0,
                        "axil": True, "check": bool(args.compare)}
                try:
                    run_cocotb(unit=DecodeAccel(params), cfg=HDPConfig(), name="decode_accel",
                               simulator=args.sim, test_module="sim.benches.bench_decode",
                               build_dir=args.build_dir, run_dir=Path(tmp) / f"run_{i}_{g}",
                               extra_env={"HDPGEN_DECODE": json.dumps(spec),
                                          "HDPGEN_DECODE_OUT": fig})
                except AssertionError as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else "the bench failed"
                    problems.append(f"record {r} KV head {g}: {msg}")
                    print(f"  record {r} KV head {g}: RTL differs: {msg}", file=sys.stderr)
                    continue
                except RuntimeError as exc:
                    raise CliError(f"--sim {args.sim}: {str(exc).splitlines()[0]}") from None
                f = json.loads(fig.read_text())
                rtl_out[i, hs] = np.asarray(f["out"], np.int64)
                cycles[i, g] = f["cycles"]
                golden = results[i].out[hs]
                same = (np.array_equal(rtl_out[i, hs], golden) and f["reads_match"] and
                        (f["k_words"], f["v_words"]) == (f["k_words_golden"], f["v_words_golden"]))
                if not same:
                    problems.append(f"record {r} KV head {g}: RTL outputs, reads or counters "
                                    f"differ from the golden model")
                print(f"  record {r} (layer {int(data['layer'][r])}, position "
                      f"{int(data['position'][r])}) KV head {g}: {f['cycles']} cycles, "
                      f"{'equal to golden' if same else 'DIFFERENT from golden'}",
                      file=sys.stderr)
    return rtl_out, cycles, problems


def main(args: argparse.Namespace) -> int:
    cfg = config_from_settings(args.settings)
    eps = args.eps
    tp.eps_q_of(eps, cfg)                  # a ValueError names the rule
    check_eps_v(args.eps_v, cfg)
    _check_args(args)
    data = load_capture(args.qkv)
    records = _parse_records(args.records, data["q"].shape[0])
    hq, d = data["q"].shape[1:]
    hkv, n_cache = data["k"].shape[1:3]
    group = data["group_size"]
    width = cfg.exp_bits + 1 + max(0, (n_cache - 1).bit_length()) + cfg.eps_frac
    if d > tp.MAX_D or n_cache > tp.MAX_CACHE or width > 62:
        raise CliError(f"{args.qkv}: d = {d}, N = {n_cache} exceed the golden model's limits "
                       f"(d <= {tp.MAX_D}, N <= {tp.MAX_CACHE}, exp_bits + 1 + clog2(N) + "
                       f"eps_frac <= 62)")
    if args.sim:
        problem = rtl_limits_problem(d, n_cache, group, cfg)
        if problem:
            raise CliError(f"{args.qkv}: the RTL decode engine cannot be built for this file "
                           f"(d = {d}, N = {n_cache}, group_size = {group}): {problem}")

    quant, results, refs = run_golden(data, records, eps, cfg, args.eps_v)
    vl = [int(data["valid_len"][r]) for r in records]
    summary = summarize(results, vl, group)
    scale = 2.0 ** -cfg.out_frac
    out_int = np.stack([x.out for x in results])
    ref = np.stack(refs)
    err = out_int * scale - ref
    ref_rms = float(np.sqrt(np.mean(ref ** 2)))
    error = {"max_abs": float(np.abs(err).max()), "rel_rms": float(np.sqrt(np.mean(err ** 2))) /
             ref_rms if ref_rms else 0.0}
    arrays = {"out": (out_int * scale).astype(np.float32), "out_int": out_int.astype(np.int32),
              "keep": np.stack([x.keep for x in results]),
              "kept_q": np.stack([x.stats.kept_q for x in results]),
              "kept_kv": np.stack([x.stats.kept_kv for x in results]),
              "k_words_read": np.stack([x.stats.k_words_read for x in results]),
              "v_words_read": np.stack([x.stats.v_words_read for x in results]),
              "k_words_dense": np.array([x.stats.k_words_dense for x in results], np.int64),
              "v_words_dense": np.array([x.stats.v_words_dense for x in results], np.int64),
              **{key: data[key][records] for key in ("layer", "position", "valid_len")}}
    per_record = [{"record": r, "layer": int(data["layer"][r]),
                   "position": int(data["position"][r]), "valid_len": n,
                   "kept_q": x.stats.kept_q.tolist(), "kept_kv": x.stats.kept_kv.tolist(),
                   "k_words_read": int(x.stats.k_words_read.sum()),
                   "k_words_dense": x.stats.k_words_dense * hkv,
                   "v_words_read": int(x.stats.v_words_read.sum()),
                   "v_words_dense": x.stats.v_words_dense * hkv}
                  for r, n, x in zip(records, vl, results)]
    report = {"input": {"path": str(args.qkv), "model": data["model"], "records": len(records),
                        "query_heads": hq, "kv_heads": hkv, "head_dim": d, "n_cache": n_cache},
              "config": dataclasses.asdict(cfg), "eps": eps, "eps_v": args.eps_v,
              "summary": summary,
              "error_vs_float": error, "records": per_record}

    problems = []
    if args.sim:
        rtl_out, cycles, problems = _simulate(args, data, records, quant, results, cfg, eps)
        arrays["rtl_out_int"] = rtl_out.astype(np.int32)
        arrays["rtl_cycles"] = cycles
        report["rtl"] = {"simulator": args.sim, "cycles_per_kv_head_step": cycles.tolist(),
                         "mean_cycles": float(cycles.mean()), "compared": bool(args.compare),
                         "mismatches": problems}
        for rec, c in zip(per_record, cycles):
            rec["cycles"] = c.tolist()

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    js = args.out.with_suffix(".json")
    text = json.dumps(report, indent=2) + "\n"
    try:
        write_files_atomically({args.out: buf.getvalue(), js: text.encode()})
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None

    s = summary
    print(f"hdpgen decode: {len(records)} records of {args.qkv} ({hq} query heads / {hkv} KV "
          f"heads, d={d}, N={n_cache}), eps={eps:g}, K {cfg.k_bits} bits in {cfg.chunk_bits}-bit "
          f"chunks")
    print(f"  K words read {s['k_words_read']} of {s['k_words_dense']} dense "
          f"({s['k_ratio']:.3f}); V words {s['v_words_read']} of {s['v_words_dense']} "
          f"({s['v_ratio']:.3f}); K+V {s['kv_words_read']} of {s['kv_words_dense']} "
          f"({s['kv_ratio']:.3f})")
    print(f"  tokens kept: {s['kept_per_query_head']:.1%} per query head, "
          f"{s['kept_per_kv_head']:.1%} per KV head; error vs float: max abs "
          f"{error['max_abs']:.4f}, relative RMS {error['rel_rms']:.4f}")
    if args.sim:
        print(f"  RTL ({args.sim}): {report['rtl']['mean_cycles']:.0f} cycles per KV-head decode "
              f"step on average (min {int(cycles.min())}, max {int(cycles.max())})")
        if args.compare:
            print(f"  RTL vs golden: {'bit-exact' if not problems else f'{len(problems)} MISMATCHES'}")
    print(f"  -> {args.out}, {js}")
    if args.compare and problems:
        for p in problems:
            print(f"hdpgen decode: mismatch: {p}", file=sys.stderr)
        return 1
    return 0
