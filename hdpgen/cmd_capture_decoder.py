"""``hdpgen capture-decoder``: decode-step queries and KV caches of SmolLM2-135M-Instruct on a
text (extra ``decoder``, installed by ``make setup-decoder``; see :mod:`hdpgen.smollm`).

The text runs once through the model; for every chosen layer and decode position ``p`` a record
holds the post-RoPE query of the chosen query heads at ``p`` and the post-RoPE K and the V of
the positions ``0..p`` (the KV cache a decode step at ``p`` reads).  The file is the capture
format of :mod:`hdpgen.decode_io` (float16, padded to the largest ``p + 1``, records
layer-major), written atomically.

``--layers`` (default: all 30), ``--heads`` (KV heads, each with its 3 query heads; default all
3) and ``--steps`` (positions; default: the last token) take comma-separated lists or repeats.
"""

import argparse
from pathlib import Path

import numpy as np

from .common import CliError, check_output_file
from .npz_io import save_npz

__all__ = ["configure", "main", "parse_int_list", "build_records"]


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, metavar="FILE", help="a UTF-8 text file (run whole)")
    src.add_argument("--sentence", metavar="TEXT", help="the text itself")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz", help="output capture")
    p.add_argument("--layers", action="append", metavar="L[,L...]",
                   help="layers to record, 0..29 (default: all)")
    p.add_argument("--heads", action="append", metavar="G[,G...]",
                   help="KV heads to record, 0..2, each with its query heads (default: all)")
    p.add_argument("--steps", action="append", metavar="P[,P...]",
                   help="decode positions (0-based token index; default: the last token)")


def parse_int_list(values: list[str] | None, what: str, lo: int, hi: int | None) -> list[int] | None:
    """``["1,2", "5"]`` -> ``[1, 2, 5]`` (sorted, distinct), each in ``[lo, hi]``."""
    if not values:
        return None
    out = set()
    for item in values:
        for part in item.split(","):
            part = part.strip()
            try:
                x = int(part)
            except ValueError:
                raise CliError(f"{what}: {part!r} is not an integer") from None
            if x < lo or (hi is not None and x > hi):
                rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise CliError(f"{what}: {x} must be in {rng}")
            out.add(x)
    return sorted(out)


def build_records(captured: dict, layers: list[int], steps: list[int], kv_heads: list[int],
                  group: int) -> dict[str, np.ndarray]:
    """The capture-format arrays (float16) from per-layer ``(q (Hq, T, d), k, v (Hkv, T, d))``."""
    n = max(steps) + 1
    qh = [g * group + j for g in kv_heads for j in range(group)]
    qs, ks, vs, lay, pos = [], [], [], [], []
    for li in layers:
        q, k, v = captured[li]
        for p in steps:
            kk = np.zeros((len(kv_heads), n, k.shape[2]), np.float32)
            vv = np.zeros_like(kk)
            kk[:, :p + 1] = k[kv_heads, :p + 1]
            vv[:, :p + 1] = v[kv_heads, :p + 1]
            qs.append(q[qh, p])
            ks.append(kk)
            vs.append(vv)
            lay.append(li)
            pos.append(p)
    pos = np.array(pos, np.int64)
    return {"q": np.stack(qs).astype(np.float16), "k": np.stack(ks).astype(np.float16),
            "v": np.stack(vs).astype(np.float16), "valid_len": pos + 1,
            "layer": np.array(lay, np.int64), "position": pos, "group_size": np.int64(group),
            "kv_heads": np.array(kv_heads, np.int64)}


def main(args: argparse.Namespace) -> int:
    from . import smollm

    if args.text is not None:
        try:
            text = args.text.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read --text {args.text}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise CliError(f"--text {args.text}: not UTF-8 text (byte at offset "
                           f"{exc.start})") from None
    else:
        text = args.sentence.strip()
    if not text:
        raise CliError("the text is empty")
    layers = parse_int_list(args.layers, "--layers", 0, smollm.N_LAYERS - 1) or \
        list(range(smollm.N_LAYERS))
    heads = parse_int_list(args.heads, "--heads", 0, smollm.N_KV_HEADS - 1) or \
        list(range(smollm.N_KV_HEADS))
    steps = parse_int_list(args.steps, "--steps", 0, None)
    if args.out.suffix != ".npz":
        raise CliError(f"--out must name a .npz file, not {str(args.out)!r}")
    check_output_file(args.out, "output")
    smollm.require_extra()
    model = smollm.load()
    ids = model.tokenize(text)
    t = int(ids.shape[1])
    if steps is None:
        steps = [t - 1]
    if steps[-1] >= t:
        raise CliError(f"--steps: position {steps[-1]} is past the text's last token (the text "
                       f"has {t} tokens, positions 0..{t - 1})")
    captured = model.capture(ids, layers)
    arrays = build_records(captured, layers, steps, heads, smollm.GROUP)
    n = steps[-1] + 1
    arrays.update({"model": np.array(smollm.MODEL_ID), "text": np.array(text),
                   "tokens": np.array(model.tokens(ids)[:n]),
                   "n_layers": np.int64(smollm.N_LAYERS)})
    try:
        save_npz(args.out, arrays)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    r, hq, d = arrays["q"].shape
    print(f"hdpgen capture-decoder: {t} tokens; {r} records ({len(layers)} layers x "
          f"{len(steps)} positions), {hq} query heads / {len(heads)} KV heads, d={d}, N={n} -> "
          f"{args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0
