"""``hdpgen golden``: run the bit-exact golden model on Q, K, V from an ``.npz``.

Input: IN.npz (see :mod:`hdpgen.npz_io`).  Output: OUT.npz with ``out`` (float32 (H, N, d), the
dequantized output), ``out_int`` (int32, raw fixed point with ``out_frac`` fraction bits),
``block_keep`` (bool (H, n_block_rows, n_block_cols) for this N) and ``head_keep`` (bool (H,)),
and OUT.json beside it with the configuration actually used, the input's shape, the clipping of
the quantization, the statistics of :func:`golden.model.summarize` and the error against
:func:`golden.reference.float_attention` (float64, unquantized, unpruned) over the valid query
rows: ``max_abs`` and ``rel_rms`` = ``rms(out - ref) / rms(ref)``.

``--set qk_frac=auto`` (or ``v_frac=auto``) picks the largest fraction width at which the valid
tokens' Q and K (one F shared by both) or V do not clip (:func:`golden.intmath.best_frac_bits`);
the chosen value is in OUT.json under ``config`` and ``auto``.

``--calibration CAL.json`` (from ``hdpgen calibrate``) runs head ``h`` with the value of its
layer ``h // heads_per_layer`` (topk ``k_frac``, threshold ``rho`` or mass ``eps``; see
:mod:`hdpgen.calibration`); OUT.json gets the file's values and every head's register.

Every input problem is found before any work and exits with status 2 and one line; nothing is
written then, and an existing OUT.npz / OUT.json is left as it was.  OUT.npz and OUT.json are
written together or not at all; neither may be the input file.  When quantization clamps more
than 0.1 % (:data:`CLIP_WARN_FRACTION`) of the valid values of q, k or v, a one-line warning
goes to stderr (the run still succeeds; OUT.json has ``clipped_fraction``).
"""

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from golden import model
from golden.intmath import best_frac_bits
from golden.reference import float_attention
from hw.config import HDPConfig

from .common import (
    CliError,
    add_config_args,
    check_output_file,
    config_from_args,
    same_file,
    write_files_atomically,
)
from .npz_io import load_qkv

__all__ = ["configure", "main", "prepare_inputs", "check_outputs", "config_with_auto", "run_golden",
           "error_stats", "clip_fraction", "clipped_fractions", "clip_warning", "CLIP_WARN_FRACTION"]

AUTO_FIELDS = ("qk_frac", "v_frac")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qkv", type=Path, required=True, metavar="IN.npz",
                   help="float32 q, k, v of shape (H, N, d), optional valid_len")
    add_config_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz",
                   help="output arrays; OUT.json beside it gets configuration and statistics")
    add_calibration_arg(p)


def add_calibration_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", type=Path, metavar="CAL.json",
                   help="per-layer pruning values from 'hdpgen calibrate': head h runs with the "
                        "value of layer h // heads_per_layer (checked before any work)")


def head_rules_from_args(args, cfg, data):
    """The per-head rules of ``--calibration`` for this data (None without it); a file that
    does not fit the data or the configuration is a one-line CliError, before any work."""
    if not getattr(args, "calibration", None):
        return None, None
    from .calibration import head_rules, load_calibration
    h, n = data["q"].shape[:2]
    cal = load_calibration(args.calibration, cfg, heads=h)
    meta_heads = (data.get("meta") or {}).get("n_heads")
    if meta_heads is not None and int(meta_heads) != cal.heads_per_layer:
        raise CliError(f"--calibration {args.calibration}: {cal.heads_per_layer} heads per "
                       f"layer, but the data has {int(meta_heads)} (its n_heads)")
    vl = n if data.get("valid_len") is None else int(data["valid_len"])
    return cal, head_rules(cfg, cal, h, vl)

def split_auto(settings: list[str]) -> tuple[list[str], set[str]]:
    """Separate ``qk_frac=auto`` / ``v_frac=auto`` from the other ``--set`` items."""
    rest, auto = [], set()
    for item in settings:
        key, sep, value = item.partition("=")
        if sep and key.strip() in AUTO_FIELDS and value.strip().lower() == "auto":
            auto.add(key.strip())
        else:
            rest.append(item)
    return rest, auto


def config_with_auto(cfg: HDPConfig, auto: set[str], q, k, v, valid_len: int | None) -> HDPConfig:
    """Apply ``auto`` fraction widths chosen from the valid tokens of q, k, v."""
    n = q.shape[1] if valid_len is None else valid_len
    changes = {}
    if "qk_frac" in auto:
        changes["qk_frac"] = min(best_frac_bits(q[:, :n], cfg.qk_bits),
                                 best_frac_bits(k[:, :n], cfg.qk_bits))
    if "v_frac" in auto:
        changes["v_frac"] = best_frac_bits(v[:, :n], cfg.v_bits)
    return cfg.replace(**changes) if changes else cfg


#: Warn on stderr when quantization clamps more than this fraction of the (valid) values of any
#: one of q, k, v: 0.1 %.  Real attention inputs at a suitable fraction width clip nothing or a
#: few outliers; above 1 in 1000 values the clipping changes the scores noticeably.
CLIP_WARN_FRACTION = 0.001


def clip_fraction(x: np.ndarray, bits: int, frac: int) -> float:
    """Fraction of the values of ``x`` that quantization clamps."""
    r = np.rint(np.asarray(x, np.float64) * float(1 << frac))
    return float(((r < -(1 << (bits - 1))) | (r > (1 << (bits - 1)) - 1)).mean()) if r.size else 0.0


def clipped_fractions(cfg: HDPConfig, q, k, v, valid_len: int | None) -> dict[str, float]:
    """Per q, k, v: the fraction of the valid tokens' values that quantization clamps."""
    n = q.shape[1] if valid_len is None else valid_len
    return {"q": clip_fraction(q[:, :n], cfg.qk_bits, cfg.qk_frac),
            "k": clip_fraction(k[:, :n], cfg.qk_bits, cfg.qk_frac),
            "v": clip_fraction(v[:, :n], cfg.v_bits, cfg.v_frac)}


def clip_warning(cfg: HDPConfig, q, k, v, valid_len: int | None,
                 command: str = "golden") -> str | None:
    """The one-line stderr warning when more than :data:`CLIP_WARN_FRACTION` of the values of
    q, k or v clip (None otherwise)."""
    frac = clipped_fractions(cfg, q, k, v, valid_len)
    bad = {name: f for name, f in frac.items() if f > CLIP_WARN_FRACTION}
    if not bad:
        return None
    what = ", ".join(f"{f:.1%} of {name}" for name, f in bad.items())
    fmt = ", ".join(sorted({f"{'qk' if name in 'qk' else 'v'}_bits/"
                            f"{'qk' if name in 'qk' else 'v'}_frac" for name in bad}))
    return (f"hdpgen {command}: warning: quantization clips {what} (more than "
            f"{CLIP_WARN_FRACTION:.1%} of the values; see {fmt}, or --set qk_frac=auto / "
            f"v_frac=auto)")


def error_stats(out: np.ndarray, ref: np.ndarray, valid_len: int | None) -> dict:
    """Max abs error and relative RMS error over the valid query rows."""
    n = out.shape[1] if valid_len is None else valid_len
    d = np.asarray(out, np.float64)[:, :n] - np.asarray(ref, np.float64)[:, :n]
    ref_rms = float(np.sqrt(np.mean(np.asarray(ref, np.float64)[:, :n] ** 2)))
    rms = float(np.sqrt(np.mean(d ** 2)))
    return {"max_abs": float(np.abs(d).max()), "rms": rms, "ref_rms": ref_rms,
            "rel_rms": rms / ref_rms if ref_rms > 0 else 0.0}


def run_golden(cfg: HDPConfig, q, k, v, valid_len: int | None,
               rules=None) -> tuple[dict, dict]:
    """The golden model on every head (with ``rules``: one :class:`hdpgen.calibration.HeadRule`
    per head); returns (arrays for OUT.npz, statistics for OUT.json)."""
    if rules is not None:
        from .calibration import attention
        res = attention(q, k, v, cfg, valid_len, rules)
    else:
        res = model.attention(q, k, v, cfg, valid_len)
    ref = float_attention(q, k, v, valid_len, cfg.causal)
    arrays = {"out": res["out"].astype(np.float32), "out_int": res["out_int"].astype(np.int32),
              "block_keep": res["block_keep"].astype(bool),
              "head_keep": res["head_keep"].astype(bool)}
    stats = dict(res["stats"])
    stats["error_vs_float"] = error_stats(res["out"], ref, valid_len)
    stats["clipped_fraction"] = clipped_fractions(cfg, q, k, v, valid_len)
    return arrays, stats


def _write_both(out: Path, arrays: dict, report: dict) -> Path:
    """Serialize both outputs in memory, then put them in place together
    (:func:`hdpgen.common.write_files_atomically`): OUT.npz and OUT.json are both written or,
    on an error, both left exactly as they were."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    js = out.with_suffix(".json")
    write_files_atomically({out: buf.getvalue(), js: text.encode()})
    return js


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: ``--out`` names a ``.npz``; OUT.npz and OUT.json can both be written;
    neither is the input file."""
    if args.out.suffix != ".npz":
        raise CliError(f"--out must name a .npz file, not {str(args.out)!r}")
    js = args.out.with_suffix(".json")
    for path, what in ((args.out, "--out"), (js, "its report")):
        if same_file(path, args.qkv):
            raise CliError(f"{what} {path} is the input file --qkv {args.qkv}; refusing to "
                           f"overwrite the input")
    check_output_file(args.out, "output")
    check_output_file(js, "output report")


def prepare_inputs(args: argparse.Namespace) -> tuple:
    """What ``hdpgen golden`` and ``hdpgen simulate`` share before any work: the outputs'
    checks, the configuration (with ``auto`` fraction bits resolved from the data) and the
    validated input.  Returns ``(cfg, data, auto)``; every problem is a one-line
    :class:`CliError`.  Prints a warning on stderr when quantization clips more than
    :data:`CLIP_WARN_FRACTION` of q, k or v."""
    check_outputs(args)
    settings, auto = split_auto(args.settings)
    args.settings = settings
    cfg = config_from_args(args)
    data = load_qkv(args.qkv, head_dim=cfg.head_dim, seq_len=cfg.seq_len)
    cfg = config_with_auto(cfg, auto, data["q"], data["k"], data["v"], data["valid_len"])
    warning = clip_warning(cfg, data["q"], data["k"], data["v"], data["valid_len"],
                           getattr(args, "command", None) or "golden")
    if warning:
        print(warning, file=sys.stderr)
    return cfg, data, auto


def _registers(mode: str, cfg) -> dict:
    if mode == "topk":
        return {"k_frac_q": cfg.k_frac_q}
    if mode == "threshold":
        return {"rho": cfg.rho}
    if mode == "leopard":
        from golden.leopard import config_threshold
        return {"leopard_th": cfg.leopard_th, "th_int": config_threshold(cfg)}
    return {"eps_q": cfg.eps_q}


def calibration_report(cal, rules) -> dict | None:
    if cal is None:
        return None
    return {"path": cal.path.removeprefix("--calibration "), "mode": cal.mode,
            "values": list(cal.values), "heads_per_layer": cal.heads_per_layer,
            "registers_per_head": [_registers(cal.mode, r.cfg) for r in rules]}


def main(args: argparse.Namespace) -> int:
    cfg, data, auto = prepare_inputs(args)
    cal, rules = head_rules_from_args(args, cfg, data)
    q, k, v, valid_len = data["q"], data["k"], data["v"], data["valid_len"]
    arrays, stats = run_golden(cfg, q, k, v, valid_len, rules)
    h, n, d = q.shape
    report = {
        "config": cfg.to_dict(),
        "auto": {key: getattr(cfg, key) for key in sorted(auto)},
        "input": {"path": str(args.qkv), "heads": h, "tokens": n, "head_dim": d,
                  "valid_len": n if valid_len is None else valid_len,
                  **{key: np.asarray(val).tolist() for key, val in data["meta"].items()}},
        "stats": stats,
    }
    if cal is not None:
        report["calibration"] = calibration_report(cal, rules)
    try:
        js = _write_both(args.out, arrays, report)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    err = stats["error_vs_float"]
    if "bits_ratio" in stats:  # the LeOPArd front end: entries are kept, bits are saved
        print(f"hdpgen golden: H={h} N={n} d={d} valid_len={report['input']['valid_len']}: "
              f"leopard kept entries {stats['kept_entry_fraction']:.3f}, bits processed "
              f"{stats['bits_ratio']:.3f} of dense; error vs float: max abs {err['max_abs']:.4f}, "
              f"relative RMS {err['rel_rms']:.4f} -> {args.out}, {js}")
        return 0
    print(f"hdpgen golden: H={h} N={n} d={d} valid_len={report['input']['valid_len']}: "
          f"kept blocks {stats['kept_block_fraction']:.3f}, heads {stats['kept_head_fraction']:.3f}, "
          f"fine MACs {stats['mac_fine_vs_dense']:.3f} of dense; error vs float: max abs "
          f"{err['max_abs']:.4f}, relative RMS {err['rel_rms']:.4f} -> {args.out}, {js}")
    return 0
