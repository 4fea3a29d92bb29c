"""``hdpgen decode --sim SIM --compare`` on real SmolLM2 decode steps: a record of the bundled
capture (layer 29 on Icarus, layer 14 on Verilator, at position 63, KV head 0 with its 3 query
heads, the cache trimmed to its 64 valid positions) runs through the RTL DecodeAccel (the
engine behind its registers) via the cocotb bench ``sim/benches/bench_decode.py``, bit-exact
with the golden model; and --compare exits 1 when the golden output differs from the RTL's.
Each takes 15-30 s."""

import json
from pathlib import Path

import numpy as np
import pytest

from hdpgen import cli

pytestmark = pytest.mark.cocotb

FIXTURE = Path(__file__).parent / "data" / "smollm2_decode.npz"


def small_capture(path: Path, records=(3, 6), n=64) -> Path:
    with np.load(FIXTURE) as z:
        a = {k: z[k] for k in z.files}
    r = list(records)
    assert (a["valid_len"][r] <= n).all()
    np.savez(path, q=a["q"][r][:, :3], k=a["k"][r][:, :1, :n], v=a["v"][r][:, :1, :n],
             valid_len=a["valid_len"][r], layer=a["layer"][r], position=a["position"][r],
             group_size=a["group_size"], model=a["model"], kv_heads=np.array([0]))
    return path


def check_sim_compare(simulator, build_dir, tmp_path, capsys, records, extra=()):
    inp = small_capture(tmp_path / "small.npz", records=records)
    out = tmp_path / "out.npz"
    code = cli.main(["decode", "--qkv", str(inp), "--out", str(out), "--sim", simulator,
                     "--compare", "--build-dir", str(build_dir), *extra])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "RTL vs golden: bit-exact" in stdout and "cycles per KV-head decode step" in stdout
    with np.load(out) as z:
        assert np.array_equal(z["rtl_out_int"], z["out_int"])
        assert (z["rtl_cycles"] > 0).all()
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["rtl"]["mismatches"] == [] and rep["rtl"]["compared"]
    assert len(rep["rtl"]["cycles_per_kv_head_step"]) == len(records)
    print(f"\n{stdout}")
    return rep


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_decode_sim_compare(simulator, build_dir, tmp_path, capsys):
    check_sim_compare(simulator, build_dir, tmp_path, capsys, (6,))


@pytest.mark.parametrize("simulator", ["verilator"], indirect=True)
def test_decode_sim_compare_verilator(simulator, build_dir, tmp_path, capsys):
    """The same on Verilator, with the other layer's record and V in two planes: the low plane
    read only for the kept tokens whose probability may reach eps_v = 1e-2."""
    rep = check_sim_compare(simulator, build_dir, tmp_path, capsys, (3,),
                            ["--set", "v_lo_bits=4", "--eps-v", "1e-2"])
    s = rep["summary"]
    assert rep["eps_v"] == 1e-2 and rep["config"]["v_lo_bits"] == 4
    # the kept tokens' high planes are 8 of a row's 16 words: fewer than 16 words each
    assert s["v_words_read"] < 16 * s["kept_kv"]


@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)
def test_decode_sim_compare_fails_on_difference(simulator, build_dir, tmp_path, capsys,
                                                monkeypatch):
    """A golden output that differs from the RTL's by one unit makes --compare exit 1 and
    name the record (the golden model is altered in this process only; the bench, in the
    simulator's process, keeps the true one)."""
    from golden import token_picker as tp

    real = tp.decode_step

    def off_by_one(*a, **kw):
        r = real(*a, **kw)
        r.out[0, 0] += 1
        return r
    monkeypatch.setattr(tp, "decode_step", off_by_one)
    inp = small_capture(tmp_path / "small.npz", records=(3,))
    out = tmp_path / "out.npz"
    code = cli.main(["decode", "--qkv", str(inp), "--out", str(out), "--sim", simulator,
                     "--compare", "--build-dir", str(build_dir)])
    stdout, err = capsys.readouterr()
    assert code == 1, err
    assert "1 MISMATCHES" in stdout and "mismatch: record 0 KV head 0" in err
