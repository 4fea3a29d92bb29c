"""Reading and writing the ``.npz`` files of the command line, with validation up front.

IN.npz (``hdpgen golden --qkv``, written by ``hdpgen capture``)
    ``q``, ``k``, ``v``: float32 (H, N, d), finite.  H heads (for a capture, layer-major:
    index ``layer * n_heads + head``), N tokens, d the head dimension.
    ``valid_len`` (optional): integer scalar in [1, N]; positions >= valid_len are padding.
    Metadata (optional, ignored by the golden model): ``sentence``, ``tokens`` (strings),
    ``n_layers``, ``n_heads`` (integer scalars), ``model`` (string); a metadata key of another
    type is refused (the message names the key, the type found and the type expected).
    float32 of either byte order is accepted (``>f4`` is converted to native float32), and so is
    float16 (``hdpgen capture --float16``, the committed 128-token fixtures), upcast exactly to
    float32: every reader sees float32.

Every problem is a :class:`hdpgen.common.CliError` with a one-line message, raised before any
work is done.
"""

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .common import CliError, atomic_write

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "METADATA_KEYS", "METADATA_TYPES", "load_qkv",
           "check_qkv", "save_npz"]

REQUIRED_KEYS = ("q", "k", "v")
OPTIONAL_KEYS = ("valid_len",)
METADATA_KEYS = ("sentence", "tokens", "n_layers", "n_heads", "model")


ZIP_MAGIC = b"PK"
NPY_MAGIC = b"\x93NUMPY"

#: Metadata keys and what each must be: (test of the array, the expected type in words).
METADATA_TYPES = {
    "sentence": (lambda a: a.ndim == 0 and a.dtype.kind == "U", "a string"),
    "model": (lambda a: a.ndim == 0 and a.dtype.kind == "U", "a string"),
    "tokens": (lambda a: a.ndim == 1 and a.dtype.kind == "U", "a 1-D array of strings"),
    "n_layers": (lambda a: a.ndim == 0 and a.dtype.kind in "iu", "an integer scalar"),
    "n_heads": (lambda a: a.ndim == 0 and a.dtype.kind in "iu", "an integer scalar"),
}


def _describe(a: np.ndarray) -> str:
    """The type of an array in words, for messages: ``int64 array of shape (3,)``."""
    return f"{a.dtype} scalar" if a.ndim == 0 else f"{a.dtype} array of shape {tuple(a.shape)}"


def _read(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.is_dir():
        raise CliError(f"{path}: is a directory, not an .npz file")
    if not path.exists():
        raise CliError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(NPY_MAGIC):
        raise CliError(f"{path}: not an .npz archive (a single .npy array); save q, k, v "
                       f"with numpy.savez")
    if not head.startswith(ZIP_MAGIC):
        if not head:
            kind = "an empty file"
        elif all(32 <= c < 127 or c in b"\t\r\n" for c in head):
            kind = "a text file"
        else:
            kind = "no zip archive header"
        raise CliError(f"{path}: not a readable .npz file ({kind}); save q, k, v with "
                       f"numpy.savez")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover - the magic says zip
            raise CliError(f"{path}: not an .npz archive (a single {type(z).__name__}); "
                           f"save q, k, v with numpy.savez")
        with z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "allow_pickle" in msg:
            msg = "an array holds Python objects (dtype object), which are never read"
        raise CliError(f"{path}: not a readable .npz file ({msg})") from None


def check_qkv(data: dict[str, np.ndarray], where: str = "input", head_dim: int | None = None,
              seq_len: int | None = None) -> dict:
    """Validate an IN.npz mapping; returns ``{"q", "k", "v", "valid_len" (int or None), "meta"}``."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CliError(f"{where}: missing array {missing[0]!r} (need q, k, v)")
    extra = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS) - set(METADATA_KEYS))
    if extra:
        raise CliError(f"{where}: unexpected array {extra[0]!r} (allowed: "
                       f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS + METADATA_KEYS)})")
    for name in REQUIRED_KEYS:
        a = data[name]
        if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4):
            raise CliError(f"{where}: {name} must be float32 (or float16), not {a.dtype}")
        if a.ndim != 3:
            raise CliError(f"{where}: {name} must have 3 dimensions (H, N, d), not shape "
                           f"{tuple(a.shape)}")
    # float32 of either byte order, or float16 (exact upcast); the model sees native float32
    data = {**data, **{n: np.asarray(data[n], np.float32) for n in REQUIRED_KEYS}}
    shape = data["q"].shape
    for name in ("k", "v"):
        if data[name].shape != shape:
            raise CliError(f"{where}: {name} has shape {tuple(data[name].shape)}, q has "
                           f"{tuple(shape)}; they must match")
    h, n, d = shape
    if h < 1 or n < 1 or d < 1:
        raise CliError(f"{where}: q, k, v must not be empty, shape is {tuple(shape)}")
    if head_dim is not None and d != head_dim:
        raise CliError(f"{where}: head dimension d = {d} differs from the configuration's "
                       f"head_dim = {head_dim}")
    if seq_len is not None and n > seq_len:
        raise CliError(f"{where}: N = {n} tokens exceeds the configuration's seq_len = {seq_len}")
    for name in REQUIRED_KEYS:
        bad = ~np.isfinite(data[name])
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CliError(f"{where}: {name} holds NaN or infinity (first at {idx})")
    valid_len = None
    if "valid_len" in data:
        vl = data["valid_len"]
        if vl.ndim != 0 or not np.issubdtype(vl.dtype, np.integer):
            raise CliError(f"{where}: valid_len must be an integer scalar, not "
                           f"{vl.dtype} with shape {tuple(vl.shape)}")
        valid_len = int(vl)
        if not 1 <= valid_len <= n:
            raise CliError(f"{where}: valid_len must be in [1, N] = [1, {n}], not {valid_len}")
    for key, (ok, expected) in METADATA_TYPES.items():
        if key in data and not ok(np.asarray(data[key])):
            raise CliError(f"{where}: metadata {key!r} must be {expected}, not "
                           f"{_describe(np.asarray(data[key]))}")
    meta = {k: data[k] for k in METADATA_KEYS if k in data}
    return {"q": data["q"], "k": data["k"], "v": data["v"], "valid_len": valid_len, "meta": meta}


def load_qkv(path: Path, head_dim: int | None = None, seq_len: int | None = None) -> dict:
    """Read and validate an IN.npz file (see the module docstring)."""
    return check_qkv(_read(path), str(path), head_dim, seq_len)


def save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """Write ``arrays`` atomically (nothing appears at ``path`` unless the write completes)."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    with atomic_write(Path(path), "wb") as f:
        f.write(buf.getvalue())
