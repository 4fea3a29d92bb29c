"""Property-based tests of the command line's input checks (``hdpgen golden``), in-process.

Every bad input (a random shape, dtype, NaN/inf, valid_len, missing or extra key, mistyped
metadata, corrupt bytes) exits with status 2 and one line on stderr, and writes nothing: an
existing output is left byte for byte as it was.  Every good input (random H, N, values, byte
order, valid_len dtype, metadata) is accepted and gives the golden model's output.  The
configuration overrides give the same configuration in any order.

Examples are derandomized (no example database), so a run is reproducible; the whole file
runs in a few seconds.
"""

import argparse
import contextlib
import io
import json
import string
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from golden import model
from hdpgen import cli
from hdpgen.common import CliError, config_from_args
from hdpgen.npz_io import METADATA_KEYS, OPTIONAL_KEYS, REQUIRED_KEYS
from hw.config import HDPConfig
from hw.presets import preset

TINY = preset("tiny")  # seq_len 8, head_dim 4
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def SETTINGS(n: int):  # noqa: N802 - reads like hypothesis' own decorator
    return settings(deadline=None, derandomize=True, database=None, max_examples=n,
                    suppress_health_check=HEALTH)
ALLOWED = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS) | set(METADATA_KEYS)
INT_DTYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", ">i4", ">u8", "<i8"]


def _run(inp: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        code = cli.main(["golden", "--qkv", str(inp), "--preset", "tiny", *extra, "--out", str(out)])
    return code, so.getvalue(), se.getvalue()


# ---------------------------------------------------------------------------- strategies
@st.composite
def good_inputs(draw):
    h = draw(st.integers(1, 3))
    n = draw(st.integers(1, TINY.seq_len))
    shape = (h, n, TINY.head_dim)
    elems = st.floats(-20, 20, width=32, allow_nan=False, allow_infinity=False)
    order = draw(st.sampled_from(["<f4", ">f4", "=f4"]))
    arrays = {}
    for name in REQUIRED_KEYS:
        flat = draw(st.lists(elems, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        arrays[name] = np.array(flat, np.float32).reshape(shape).astype(order)
    if draw(st.booleans()):
        dt = draw(st.sampled_from(INT_DTYPES))
        arrays["valid_len"] = np.array(draw(st.integers(1, min(n, 127))), dtype=dt)
    if draw(st.booleans()):
        arrays["sentence"] = np.array(draw(st.text(max_size=20)))
        arrays["tokens"] = np.array(draw(st.lists(st.text(min_size=1, max_size=5), min_size=1,
                                                  max_size=n)))
        arrays["n_layers"] = np.array(draw(st.integers(1, 12)), draw(st.sampled_from(INT_DTYPES)))
        arrays["n_heads"] = np.int64(h)
        arrays["model"] = np.array("some/model")
    return arrays


def _base(draw, n_max=TINY.seq_len):
    h, n = draw(st.integers(1, 2)), draw(st.integers(1, n_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return {name: rng.normal(0, 1.5, (h, n, TINY.head_dim)).astype(np.float32)
            for name in REQUIRED_KEYS}


BAD_KINDS = ["dtype", "ndim", "shape", "nonfinite", "valid_len_range", "valid_len_type", "missing",
             "extra", "metadata", "head_dim", "too_long", "empty"]


@st.composite
def bad_inputs(draw):
    """(arrays, kind): a good input with exactly one defect of the drawn kind."""
    kind = draw(st.sampled_from(BAD_KINDS))
    a = _base(draw)
    h, n, d = a["q"].shape
    name = draw(st.sampled_from(REQUIRED_KEYS))
    if kind == "dtype":
        # float16 is a valid input (the compact captures), float32's other neighbours are not
        dt = draw(st.sampled_from(["f8", ">f8", "i4", "u1", "i8", "?", "c8", "U3"]))
        a[name] = a[name].astype(dt)
    elif kind == "ndim":
        shape = draw(st.lists(st.integers(1, 3), min_size=0, max_size=5).filter(lambda s: len(s) != 3))
        for k in REQUIRED_KEYS:
            a[k] = np.zeros(shape, np.float32)
    elif kind == "shape":
        axis = draw(st.integers(0, 2))
        new = list(a[name].shape)
        new[axis] += draw(st.integers(1, 2))
        a[name] = np.zeros(new, np.float32)
    elif kind == "nonfinite":
        bad = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        idx = tuple(draw(st.integers(0, s - 1)) for s in a[name].shape)
        a[name][idx] = bad
        if draw(st.booleans()):
            a["valid_len"] = np.int64(draw(st.integers(1, n)))  # padding is checked too
    elif kind == "valid_len_range":
        a["valid_len"] = np.int64(draw(st.one_of(st.integers(-5, 0), st.integers(n + 1, n + 100))))
    elif kind == "valid_len_type":
        a["valid_len"] = draw(st.sampled_from([
            np.float32(1), np.float64(n), np.bool_(True), np.array([1]), np.array([[1, 1]]),
            np.array("1"), np.complex64(1)]))
    elif kind == "missing":
        for k in draw(st.lists(st.sampled_from(REQUIRED_KEYS), min_size=1, unique=True)):
            del a[k]
    elif kind == "extra":
        key = draw(st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=8))
        assume(key not in ALLOWED and key not in ("file", "allow_pickle"))
        a[key] = np.zeros(2)
    elif kind == "metadata":
        key = draw(st.sampled_from(METADATA_KEYS))
        wants_str = key in ("sentence", "model")
        a[key] = draw(st.sampled_from(
            [np.array([1, 2, 3]), np.float64(2.5), np.array(["a", "b"]) if wants_str else
             np.array("x"), np.bool_(True) if key in ("n_layers", "n_heads") else np.int64(3),
             np.zeros((2, 2))]))
    elif kind == "head_dim":
        dd = draw(st.integers(1, 7).filter(lambda x: x != TINY.head_dim))
        for k in REQUIRED_KEYS:
            a[k] = np.zeros((h, n, dd), np.float32)
    elif kind == "too_long":
        nn = draw(st.integers(TINY.seq_len + 1, TINY.seq_len + 4))
        for k in REQUIRED_KEYS:
            a[k] = np.zeros((h, nn, d), np.float32)
    elif kind == "empty":
        axis = draw(st.integers(0, 2))
        for k in REQUIRED_KEYS:
            s = list(a[k].shape)
            s[axis] = 0
            a[k] = np.zeros(s, np.float32)
    return a, kind


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _assert_rejected_untouched(inp_bytes: bytes, suffix: str = ".npz") -> str:
    """Run golden on the bytes with an existing good output beside; exit 2, one line, and
    the output folder exactly as it was."""
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        inp = td / f"in{suffix}"
        inp.write_bytes(inp_bytes)
        out = td / "res" / "r.npz"
        out.parent.mkdir()
        out.write_bytes(b"previous good output")
        out.with_suffix(".json").write_text("{}\n")
        code, stdout, err = _run(inp, out)
        lines = err.strip().splitlines()
        assert code == 2, (code, stdout, err)
        assert len(lines) == 1 and lines[0].startswith("hdpgen golden: error: "), err
        assert out.read_bytes() == b"previous good output"
        assert out.with_suffix(".json").read_text() == "{}\n"
        assert sorted(p.name for p in out.parent.iterdir()) == ["r.json", "r.npz"]
        assert inp.read_bytes() == inp_bytes
        return lines[0]


# ---------------------------------------------------------------------------- properties
@SETTINGS(40)
@given(good_inputs())
def test_every_good_input_is_accepted_and_is_the_golden_model(arrays):
    with tempfile.TemporaryDirectory() as td:
        inp, out = Path(td) / "in.npz", Path(td) / "o" / "r.npz"
        inp.write_bytes(_npz_bytes(arrays))
        code, stdout, err = _run(inp, out)
        assert code == 0, err
        assert all(ln.startswith("hdpgen golden: warning: ") for ln in err.splitlines()), err
        vl = int(arrays["valid_len"]) if "valid_len" in arrays else None
        native = {k: arrays[k].astype(np.float32) for k in REQUIRED_KEYS}
        want = model.attention(native["q"], native["k"], native["v"], TINY, vl)
        with np.load(out) as z:
            assert np.array_equal(z["out_int"], want["out_int"])
            assert z["out"].shape == arrays["q"].shape and z["out"].dtype == np.float32
        rep = json.loads(out.with_suffix(".json").read_text())
        assert rep["input"]["valid_len"] == (arrays["q"].shape[1] if vl is None else vl)


@SETTINGS(150)
@given(bad_inputs())
def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(case):
    arrays, kind = case
    line = _assert_rejected_untouched(_npz_bytes(arrays))
    if kind in ("metadata", "extra"):
        key = next(k for k in arrays if k not in REQUIRED_KEYS and (kind == "metadata") ==
                   (k in METADATA_KEYS))
        assert repr(key) in line, line


@SETTINGS(60)
@given(st.data())
def test_corrupt_bytes_exit_2(data):
    good = _npz_bytes({k: np.zeros((1, 2, 4), np.float32) for k in REQUIRED_KEYS})
    how = data.draw(st.sampled_from(["random", "truncate", "zip_prefix", "text", "empty", "npy"]))
    if how == "random":
        blob = data.draw(st.binary(min_size=0, max_size=200))
    elif how == "truncate":
        blob = good[:data.draw(st.integers(0, len(good) - 1))]
    elif how == "zip_prefix":
        blob = b"PK" + data.draw(st.binary(max_size=100))
    elif how == "text":
        blob = data.draw(st.text(max_size=100)).encode()
    elif how == "npy":
        buf = io.BytesIO()
        np.save(buf, np.zeros((1, 2, 4), np.float32))
        blob = buf.getvalue()[:data.draw(st.integers(1, 200))]
    else:
        blob = b""
    line = _assert_rejected_untouched(blob)
    assert "pickle" not in line and "Traceback" not in line


@SETTINGS(2)
@given(st.sampled_from(["dir", "missing"]))
def test_unreadable_paths_exit_2(kind):
    with tempfile.TemporaryDirectory() as td:
        inp = Path(td) / "in.npz"
        if kind == "dir":
            inp.mkdir()
        code, _, err = _run(inp, Path(td) / "o.npz")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert ("is a directory" if kind == "dir" else "no such file") in err
        assert not (Path(td) / "o.npz").exists()


# ---------------------------------------------------------------------------- configuration
OVERRIDES = st.fixed_dictionaries({}, optional={
    "seq_len": st.sampled_from([8, 16, 32]), "k_frac": st.integers(1, 256).map(lambda q: q / 256),
    "block_cols": st.sampled_from([1, 2, 4]), "criterion": st.sampled_from(["sum", "max", "abs_sum"]),
    "approx": st.sampled_from(["exact", "drop_ff"]), "causal": st.booleans(),
    "rho": st.sampled_from([0.0, 0.25, 0.5, 1.0]), "qk_frac": st.integers(0, 7)})


def _args(sets, config=None, preset_name="tiny"):
    return argparse.Namespace(preset=preset_name, config=config, settings=list(sets))


@SETTINGS(60)
@given(OVERRIDES, st.randoms(use_true_random=False))
def test_overrides_are_order_independent_and_validated_once(changes, rnd):
    items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in changes.items()]
    try:
        want = TINY.replace(**changes)
    except ValueError as exc:
        want = exc
    for _ in range(3):
        rnd.shuffle(items)
        try:
            got = config_from_args(_args(items))
        except (ValueError, CliError) as exc:
            got = exc
        if isinstance(want, Exception):
            assert isinstance(got, ValueError) and str(got) == str(want)
        else:
            assert got == want


@SETTINGS(60)
@given(OVERRIDES, OVERRIDES)
def test_partial_config_json_then_set(in_file, on_cli):
    items = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in on_cli.items()]
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "c.json"
        p.write_text(json.dumps(in_file))
        try:
            want = TINY.replace(**{**in_file, **on_cli})
        except ValueError as exc:
            want = exc
        try:
            got = config_from_args(_args(items, p))
        except (ValueError, CliError) as exc:
            got = exc
    assert (str(got) == str(want)) if isinstance(want, Exception) else got == want


@SETTINGS(30)
@given(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10), st.booleans())
def test_unknown_keys_are_named_with_the_valid_ones(key, in_file):
    assume(key not in HDPConfig.field_names())
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "c.json"
        p.write_text(json.dumps({key: 1}))
        args = _args([], p) if in_file else _args([f"{key}=1"])
        try:
            config_from_args(args)
        except (ValueError, CliError) as exc:  # both exit 2 in the CLI
            msg = str(exc)
        else:  # pragma: no cover
            raise AssertionError("accepted an unknown key")
    assert f"unknown configuration field {key!r}; fields are " in msg
    assert ", ".join(HDPConfig.field_names()) in msg
