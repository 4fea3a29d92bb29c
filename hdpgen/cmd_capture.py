"""``hdpgen capture``: per-layer Q, K, V of all-MiniLM-L6-v2 on real sentences (extra ``eval``).

Writes the IN.npz format of :mod:`hdpgen.npz_io` (float32 ``q``, ``k``, ``v`` of shape
(6 * 12, N, 32), layer-major, ``valid_len``, and metadata ``sentence``, ``tokens``,
``n_layers``, ``n_heads``, ``model``).  With one sentence ``--out`` is the file; with several,
sentence ``i`` goes to ``<out stem>_<i:02d>.npz`` beside it.  ``--pad-to N`` pads each
sentence with ``[PAD]`` to N tokens and runs the model with the padding mask (as a batched run
would), so the file exercises ``valid_len``.  ``--float16`` stores ``q``, ``k``, ``v`` as float16
(half the size, for files that are committed: the 128-token fixtures in ``tests/data``); every
reader upcasts them to float32 exactly (:func:`hdpgen.npz_io.check_qkv`), so the float16 values
are the data.
"""

import argparse
from pathlib import Path

import numpy as np

from .common import CliError, check_output_file
from .npz_io import save_npz

__all__ = ["configure", "main", "capture_files"]


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sentence", action="append", metavar="TEXT",
                     help="a sentence to run (repeatable)")
    src.add_argument("--sentences", type=Path, metavar="FILE",
                     help="a file with one sentence per line (# comments and blank lines skipped)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.npz",
                   help="output file (several sentences: OUT_00.npz, OUT_01.npz, ...)")
    p.add_argument("--pad-to", type=int, metavar="N",
                   help="pad every sentence to N tokens with [PAD] (sets valid_len)")
    p.add_argument("--float16", action="store_true",
                   help="store q, k, v as float16 (half the size; readers upcast to float32)")


def out_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    stem = out.name[:-4] if out.name.endswith(".npz") else out.name
    return [out.with_name(f"{stem}_{i:02d}.npz") for i in range(count)]


def capture_files(sentences: list[str], out: Path, pad_to: int | None = None,
                  float16: bool = False) -> list[Path]:
    from . import minilm

    model = minilm.load()
    paths = out_paths(out, len(sentences))
    for s, path in zip(sentences, paths):
        c = model.capture_qkv(s, pad_to=pad_to)
        if float16:
            c.update({key: c[key].astype(np.float16) for key in ("q", "k", "v")})
        arrays = {"q": c["q"], "k": c["k"], "v": c["v"], "valid_len": c["valid_len"],
                  "sentence": np.array(s), "tokens": c["tokens"], "n_layers": c["n_layers"],
                  "n_heads": c["n_heads"], "model": np.array(minilm.MODEL_ID)}
        save_npz(path, arrays)
        h, n, d = c["q"].shape
        print(f"{path}: H={h} N={n} d={d} valid_len={int(c['valid_len'])} "
              f"({path.stat().st_size / 1024:.0f} KiB)")
    return paths


def main(args: argparse.Namespace) -> int:
    if args.pad_to is not None and args.pad_to < 1:
        raise CliError(f"--pad-to must be >= 1, not {args.pad_to}")
    if args.sentences is not None:
        from .minilm import read_sentences
        try:
            sentences = read_sentences(args.sentences)
        except OSError as exc:
            raise CliError(f"cannot read {args.sentences}: {exc.strerror or exc}") from None
    else:
        sentences = [s for s in args.sentence if s.strip()]
        if not sentences:
            raise CliError("--sentence must not be empty")
    for path in out_paths(args.out, len(sentences)):
        check_output_file(path, "output")
    from .minilm import require_extra
    require_extra()
    capture_files(sentences, args.out, args.pad_to, args.float16)
    return 0
