"""The decode capture format (``hdpgen capture-decoder`` writes it, ``hdpgen decode`` reads it),
validated up front.

One file holds R records; record ``r`` is one decode step of one layer: the query of every
query head at position ``position[r]`` and the KV cache of the positions ``0..position[r]``.
All arrays are what the model's attention multiplies (q and k after the rotary embedding).

``q``          float16 (or float32) (R, Hq, d): the query of each query head.
``k``, ``v``   float16 (or float32) (R, Hkv, N, d): the KV cache; positions ``>= valid_len[r]``
               are padding (written as zeros, never read).
``valid_len``  integer (R,): cache length of the record, in [1, N]; equals ``position + 1``.
``layer``      integer (R,): the model layer (>= 0).
``position``   integer (R,): the query's token position (>= 0, ``valid_len - 1``).
``group_size`` integer scalar: query heads per KV head; ``Hq = group_size * Hkv`` and query
               head ``h`` uses KV head ``h // group_size``.
``model``      string scalar: the model the data comes from.

Optional metadata: ``kv_heads`` (integer (Hkv,): the model's KV head of each stored KV head,
when a subset was captured), ``text`` (string scalar), ``tokens`` (1-D strings: the token of
each position ``0..N-1``), ``n_layers`` (integer scalar).  Any other array is refused.

Every problem is a :class:`hdpgen.common.CliError` naming the array, what was found and the
rule, raised before any work.
"""

from pathlib import Path

import numpy as np

from .common import CliError
from .npz_io import _describe, _read

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "FORMAT_KEYS", "check_capture", "load_capture"]

REQUIRED_KEYS = ("q", "k", "v", "valid_len", "layer", "position", "group_size", "model")
OPTIONAL_KEYS = ("kv_heads", "text", "tokens", "n_layers")
FORMAT_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS

_INT_VECTORS = ("valid_len", "layer", "position")


def _is_int(a: np.ndarray) -> bool:
    return a.dtype.kind in "iu"


def check_capture(data: dict[str, np.ndarray], where: str = "input") -> dict:
    """Validate a capture mapping; returns a dict with float32 ``q``, ``k``, ``v`` (padding
    zeroed), int64 ``valid_len``, ``layer``, ``position``, ``kv_heads``, int ``group_size``
    and the strings ``model``, ``text`` (or None), ``tokens`` (list or None)."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CliError(f"{where}: missing array {missing[0]!r} (a decode capture needs "
                       f"{', '.join(REQUIRED_KEYS)})")
    extra = sorted(set(data) - set(FORMAT_KEYS))
    if extra:
        raise CliError(f"{where}: unexpected array {extra[0]!r} (allowed: {', '.join(FORMAT_KEYS)})")
    for name, ndim, dims in (("q", 3, "(R, Hq, d)"), ("k", 4, "(R, Hkv, N, d)"),
                             ("v", 4, "(R, Hkv, N, d)")):
        a = data[name]
        if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4):
            raise CliError(f"{where}: {name} must be float16 or float32, not {a.dtype}")
        if a.ndim != ndim:
            raise CliError(f"{where}: {name} must have {ndim} dimensions {dims}, not shape "
                           f"{tuple(a.shape)}")
    q, k, v = data["q"], data["k"], data["v"]
    if v.shape != k.shape:
        raise CliError(f"{where}: v has shape {tuple(v.shape)}, k has {tuple(k.shape)}; they "
                       f"must match")
    r, hq, d = q.shape
    rk, hkv, n, dk = k.shape
    if min(r, hq, d, hkv, n) < 1:
        raise CliError(f"{where}: q and k must not be empty (q {tuple(q.shape)}, k "
                       f"{tuple(k.shape)})")
    if rk != r:
        raise CliError(f"{where}: k holds {rk} records, q holds {r}; they must match")
    if dk != d:
        raise CliError(f"{where}: k's head dimension {dk} differs from q's d = {d}")
    for name in _INT_VECTORS:
        a = data[name]
        if not _is_int(a) or a.shape != (r,):
            raise CliError(f"{where}: {name} must be an integer array of shape ({r},) (one per "
                           f"record), not {_describe(a)}")
    gs = data["group_size"]
    if not _is_int(gs) or gs.ndim != 0:
        raise CliError(f"{where}: group_size must be an integer scalar, not {_describe(gs)}")
    group = int(gs)
    if group < 1 or hq != group * hkv:
        raise CliError(f"{where}: q has {hq} query heads and k {hkv} KV heads; with group_size "
                       f"{group} they must satisfy Hq = group_size * Hkv")
    valid_len = data["valid_len"].astype(np.int64)
    layer = data["layer"].astype(np.int64)
    position = data["position"].astype(np.int64)
    bad = np.flatnonzero((valid_len < 1) | (valid_len > n))
    if bad.size:
        raise CliError(f"{where}: valid_len[{bad[0]}] = {valid_len[bad[0]]} is outside [1, N] = "
                       f"[1, {n}]")
    bad = np.flatnonzero(layer < 0)
    if bad.size:
        raise CliError(f"{where}: layer[{bad[0]}] = {layer[bad[0]]} is negative")
    bad = np.flatnonzero(position != valid_len - 1)
    if bad.size:
        raise CliError(f"{where}: position[{bad[0]}] = {position[bad[0]]} must equal "
                       f"valid_len - 1 = {valid_len[bad[0]] - 1} (the cache holds the positions "
                       f"0..position)")
    for name, test, expected in (("model", lambda a: a.ndim == 0 and a.dtype.kind == "U", "a string"),
                                 ("text", lambda a: a.ndim == 0 and a.dtype.kind == "U", "a string"),
                                 ("tokens", lambda a: a.ndim == 1 and a.dtype.kind == "U",
                                  "a 1-D array of strings"),
                                 ("n_layers", lambda a: a.ndim == 0 and _is_int(a),
                                  "an integer scalar"),
                                 ("kv_heads", lambda a: a.shape == (hkv,) and _is_int(a),
                                  f"an integer array of shape ({hkv},)")):
        if name in data and not test(np.asarray(data[name])):
            raise CliError(f"{where}: {name} must be {expected}, not "
                           f"{_describe(np.asarray(data[name]))}")
    kv_heads = (np.asarray(data["kv_heads"], np.int64) if "kv_heads" in data
                else np.arange(hkv, dtype=np.int64))
    if (kv_heads < 0).any() or len(set(kv_heads.tolist())) != hkv:
        raise CliError(f"{where}: kv_heads must be distinct non-negative integers, not "
                       f"{kv_heads.tolist()}")
    q32 = np.asarray(q, np.float32)
    k32 = np.array(k, np.float32)
    v32 = np.array(v, np.float32)
    valid = np.arange(n)[None, :] < valid_len[:, None]          # (R, N)
    for name, a in (("q", q32), ("k", k32), ("v", v32)):
        fin = np.isfinite(a)
        if name != "q":
            fin |= ~valid[:, None, :, None]
        if not fin.all():
            idx = tuple(int(i) for i in np.argwhere(~fin)[0])
            raise CliError(f"{where}: {name} holds NaN or infinity (first at {idx})")
    k32[~np.broadcast_to(valid[:, None, :, None], k32.shape)] = 0.0
    v32[~np.broadcast_to(valid[:, None, :, None], v32.shape)] = 0.0
    return {"q": q32, "k": k32, "v": v32, "valid_len": valid_len, "layer": layer,
            "position": position, "group_size": group, "kv_heads": kv_heads,
            "model": str(data["model"]),
            "text": str(data["text"]) if "text" in data else None,
            "tokens": [str(t) for t in data["tokens"]] if "tokens" in data else None}


def load_capture(path: Path) -> dict:
    """Read and validate a decode capture (see the module docstring)."""
    return check_capture(_read(path), str(path))
