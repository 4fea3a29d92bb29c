"""``hdpgen simulate``: input validation (exit 2, nothing written), a real run on the tiny
preset (bit-exact, cycles in OUT.json, waveform), and --compare's exit 1 on a difference."""

import json

import numpy as np
import pytest

import hdpgen.cmd_simulate as cmd
from golden.model import attention
from hdpgen.cli import main
from hw.presets import preset


def write_qkv(path, h=2, n=8, d=4, valid_len=None, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {x: rng.normal(0, 1.5, (h, n, d)).astype(np.float32) for x in "qkv"}
    if valid_len is not None:
        arrays["valid_len"] = np.array(valid_len)
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("argv_extra, needle", [
    (["--out", "x.txt"], "--out must name a .npz file"),
    (["--preset", "default"], "head dimension d = 4 differs"),
    (["--set", "bogus=1"], "unknown configuration field"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv_extra, needle):
    write_qkv(tmp_path / "in.npz")
    out = tmp_path / "out.npz"
    argv = ["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny", "--sim", "icarus",
            "--out", str(out), "--build-dir", str(tmp_path / "b")]
    # later options win in argparse
    rc = main(argv + argv_extra)
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_missing_input_exits_2(tmp_path, capsys):
    rc = main(["simulate", "--qkv", str(tmp_path / "nope.npz"), "--preset", "tiny", "--sim",
               "icarus", "--out", str(tmp_path / "o.npz")])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_tiny_run_is_bit_exact_with_cycles_and_waves(simulator, tmp_path, capsys):
    arrays = write_qkv(tmp_path / "in.npz", h=3, valid_len=7)
    out = tmp_path / "o" / "out.npz"
    rc = main(["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny",
               "--set", "prune_mode=topk", "--set", "k_b=2", "--sim", simulator, "--out", str(out),
               "--compare", "--waves", "--build-dir", str(tmp_path / "b")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "bit-exact against the golden model" in text
    assert "head 3/3" in text
    cfg = preset("tiny").replace(prune_mode="topk", k_b=2)
    gold = attention(arrays["q"], arrays["k"], arrays["v"], cfg, 7)
    with np.load(out) as z:
        assert np.array_equal(z["out_int"], gold["out_int"])
        assert np.array_equal(z["block_keep"], gold["block_keep"])
        assert np.array_equal(z["head_keep"], gold["head_keep"])
        assert z["out"].dtype == np.float32
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["compare"] == "bit-exact"
    assert len(report["head_cycles"]) == 3 and report["cycles"] == sum(report["head_cycles"])
    assert all(c > 0 for c in report["head_cycles"])
    assert report["config"]["k_b"] == 2
    assert report["waves"] and (tmp_path / "o" / report["waves"].split("/")[-1]).is_file()


def test_compare_reports_first_difference_and_exits_1(tmp_path, capsys, monkeypatch):
    """--compare on a result that differs in one bit: exit 1, the first differing
    head/row/col with expected and actual; outputs are still written."""
    arrays = write_qkv(tmp_path / "in.npz", h=2)
    cfg = preset("tiny")
    gold = attention(arrays["q"], arrays["k"], arrays["v"], cfg)

    def fake_simulate(cfg_, q_q, k_q, v_q, valid_len, simulator, build_dir, **kw):
        out = gold["out_int"].astype(np.int64).copy()
        out[1, 5, 2] += 1
        h = out.shape[0]
        return ({"out_int": out, "head_keep": gold["head_keep"], "block_keep": gold["block_keep"],
                 "cycles": np.full(h, 100), "array_cycles": np.full(h, 40),
                 "kept_keys": np.full(h, 8), "head_imp": np.zeros(h, np.int64)}, tmp_path)

    monkeypatch.setattr(cmd, "simulate", fake_simulate)
    monkeypatch.setattr("sim.runner.simulator_missing", lambda s: None)
    out = tmp_path / "out.npz"
    rc = main(["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny", "--sim",
               "icarus", "--out", str(out), "--compare"])
    text = capsys.readouterr().out
    assert rc == 1
    expected = int(gold["out_int"][1, 5, 2])
    assert (f"MISMATCH against golden in out_int at head=1, row=5, col=2: expected {expected}, "
            f"actual {expected + 1}") in text
    assert out.exists()
    assert json.loads(out.with_suffix(".json").read_text())["compare"] == "mismatch"
