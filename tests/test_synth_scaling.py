"""``bench/synth_scaling.py``: sweeps any configuration key, checks every point before any
tool runs, and reports a place and route that fails as a row, not a hole."""

import json

import pytest

from bench import synth_scaling as ss
from bench.benchutil import BenchError
from hw.presets import preset


def test_points_apply_the_settings_and_the_value_together():
    pts = ss.sweep_points(preset("large"), ["head_dim=32"], "seq_len", ["128", "256"], None)
    assert [p[0] for p in pts] == ["seq_len=128", "seq_len=256"]
    assert [(c.seq_len, c.head_dim, c.k_frac) for _, c in pts] == [(128, 32, 0.75), (256, 32, 0.75)]
    arr = ss.sweep_points(preset("tiny"), [], None, [], [2, 4])
    assert [(c.array_rows, c.array_cols) for _, c in arr] == [(2, 2), (4, 4)]


@pytest.mark.parametrize("settings, key, values, words", [
    ([], "seq_len", ["x"], ["seq_len", "integer", "'x'"]),
    ([], "seq_len", ["0"], ["seq_len", "[1, 4096]", "0"]),
    ([], "no_such_key", ["1"], ["no_such_key", "fields are"]),
    (["head_dim"], "seq_len", ["8"], ["KEY=VALUE", "head_dim"]),
    ([], None, [], ["--key"]),
])
def test_a_bad_point_is_refused_before_any_work(settings, key, values, words):
    with pytest.raises(ValueError) as exc:
        ss.sweep_points(preset("tiny"), settings, key, values, None)
    for w in words:
        assert w in str(exc.value)


def _res(fmax):
    ecp5 = {"lut4": 100, "carry": 10, "ff": 50, "dsp": 1, "bram": 2, "lutram": 0}
    return {"generic": {"cells": 300, "transistors": 4000}, "ecp5": ecp5, "fmax": fmax}


def test_a_failed_place_and_route_is_a_row_saying_so():
    row = ss.row_of("seq_len=512", "top", _res({"error": "nextpnr-ecp5 timed out after 60 s in x\n"
                                                         "more"}), True, 61.0)
    assert row["pnr"] == "not routed: nextpnr-ecp5 timed out after 60 s in x"
    assert row["fmax_mhz"] is None and row["ecp5_lut4"] == 100 and row["fits_85f"] == "yes"
    ok = ss.row_of("seq_len=128", "top", _res({"fmax_mhz": 101.5}), True, 1.0)
    assert (ok["pnr"], ok["fmax_mhz"]) == ("routed", 101.5)
    assert ok["ecp5_lut_sites"] == f"{120 / 83640:.0%}"


def test_a_failed_synthesis_stops_the_sweep():
    res = _res(None)
    res["ecp5"] = {"error": "yosys exited with status 1"}
    with pytest.raises(BenchError, match="top at seq_len=8: ecp5 failed: yosys exited"):
        ss.row_of("seq_len=8", "top", res, False, 1.0)


def test_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    assert ss.main(["--preset", "tiny", "--key", "seq_len", "--values", "8", "16",
                    "--unit", "head_detector", "--targets", "ecp5", "-j", "1", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| seq_len=8 | head_detector |" in table and "| seq_len=16 | head_detector |" in table
    doc = json.loads((out / "synth_scaling.json").read_text())
    assert [r["point"] for r in doc["rows"]] == ["seq_len=8", "seq_len=16"]
    assert all(r["ecp5_lut4"] is not None and r["pnr"] == "-" for r in doc["rows"])
    assert doc["provenance"]["command"].startswith("python bench/synth_scaling.py")
    assert (out / "synth_scaling.csv").read_text().startswith("point,unit,")
