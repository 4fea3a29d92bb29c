"""Real attention inputs bundled with the tests: all-MiniLM-L6-v2 Q, K, V (no torch needed).

Each fixture is an IN.npz file (see :mod:`hdpgen.npz_io`) in ``tests/data/``: ``q``, ``k``,
``v`` of shape (72, N, 32) (float32; float16 in the ``para*`` files, which :func:`load_fixture`
and :func:`hdpgen.npz_io.load_qkv` upcast exactly to float32), i.e. 6 layers x 12 heads, layer-major (index
``layer * 12 + head``), taken after the query/key/value projections and before the
``1/sqrt(32)`` scaling; ``valid_len``; metadata ``sentence``, ``tokens``, ``n_layers``,
``n_heads``, ``model``.

=========  ===  =========  ==========================================================
name        N   valid_len  sentence
=========  ===  =========  ==========================================================
short        5          5  Hi there.
medium      12         12  The quick brown fox jumps over the lazy dog.
padded      12          7  Cats sleep a lot.   (5 [PAD] tokens, run with the padding mask)
long        30         30  Dynamic pruning skips blocks of the attention score matrix that
                           an integer estimate marks as unimportant, before the softmax.
para128    128        128  A good bread dough needs only four ingredients: ... (float16;
                           the default data of ``hdpgen run``)
para119    119        119  When the power failed across the valley, ... (float16)
para116    116        116  Our hiking group set out before sunrise ... (float16)
=========  ===  =========  ==========================================================

The ``para*`` sentences are paragraphs of ``hdpgen/data/eval_texts.txt`` (full text in each
file's ``sentence``); float16 halves the files (about 1.5 MB each instead of 3).

Made (about 1.5 MB in total for the first four, 4.7 MB for the ``para*`` ones) with the
``eval`` extra installed, from the repository root::

    export HF_HUB_OFFLINE=1
    hdpgen capture --sentence "Hi there." --out tests/data/minilm_short.npz
    hdpgen capture --sentence "The quick brown fox jumps over the lazy dog." \\
        --out tests/data/minilm_medium.npz
    hdpgen capture --sentence "Cats sleep a lot." --pad-to 12 --out tests/data/minilm_padded.npz
    hdpgen capture --sentence "Dynamic pruning skips blocks of the attention score matrix \\
    that an integer estimate marks as unimportant, before the softmax." \\
        --out tests/data/minilm_long.npz
    grep -F 'A good bread dough' hdpgen/data/eval_texts.txt > p128.txt
    hdpgen capture --float16 --sentences p128.txt --out tests/data/minilm_para128.npz
    # likewise 'When the power failed' -> para119, 'Our hiking group' -> para116
"""

from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "FIXTURES", "DEFAULT_FIXTURE", "fixture_names", "fixture_path", "load_fixture",
           "fixture_for"]

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
FIXTURES = {"short": "minilm_short.npz", "medium": "minilm_medium.npz",
            "padded": "minilm_padded.npz", "long": "minilm_long.npz",
            "para128": "minilm_para128.npz", "para119": "minilm_para119.npz",
            "para116": "minilm_para116.npz"}
DEFAULT_FIXTURE = "medium"


def fixture_names() -> list[str]:
    """Names of the bundled fixtures (those whose file is present)."""
    return [name for name, f in FIXTURES.items() if (DATA_DIR / f).is_file()]


def fixture_path(name: str | None = None) -> Path:
    name = DEFAULT_FIXTURE if name is None else name
    if name not in FIXTURES:
        raise ValueError(f"fixture must be one of {', '.join(FIXTURES)}, not {name!r}")
    return DATA_DIR / FIXTURES[name]


def load_fixture(name: str | None = None) -> dict:
    """A fixture as a dict: ``q``, ``k``, ``v`` (float32 (72, N, 32), float16 files upcast),
    ``valid_len`` (int), ``sentence`` (str), ``tokens`` (list of str), ``n_layers``, ``n_heads``
    (int), ``name``.

    ``name`` is one of :func:`fixture_names` (default ``"medium"``)."""
    path = fixture_path(name)
    with np.load(path, allow_pickle=False) as z:
        d = {key: z[key] for key in z.files}
    return {
        "name": DEFAULT_FIXTURE if name is None else name,
        **{key: np.asarray(d[key], np.float32) for key in ("q", "k", "v")},  # float16 upcast
        "valid_len": int(d["valid_len"]),
        "sentence": str(d["sentence"]),
        "tokens": [str(t) for t in d["tokens"]],
        "n_layers": int(d["n_layers"]),
        "n_heads": int(d["n_heads"]),
    }


def fixture_for(cfg, name: str) -> dict | None:
    """The fixture ``name`` when it is in this checkout and fits ``cfg`` (its head dimension
    equals ``head_dim`` and its length N is at most ``seq_len``), else None: stimulus
    generators use real data where a preset can take it."""
    if name not in fixture_names():
        return None
    fx = load_fixture(name)
    if fx["q"].shape[2] != cfg.head_dim or fx["q"].shape[1] > cfg.seq_len:
        return None
    return fx
