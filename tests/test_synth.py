"""Synthesis driver, ``hdpgen synth`` and the synthesis report table.

Tests that run Yosys/nextpnr are marked ``synth`` (deselect with ``-m 'not synth'``); they use
the ``tiny`` preset and the smallest unit present in the checkout, and share one build
directory per module so the tools run once (the first YoWASP call of a fresh machine
compiles for about 30 s).  Tool runs go under ``build/`` in the checkout, not pytest's
``/tmp`` directory: inside YoWASP ``/tmp`` is private.
"""

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest

from hdpgen.cli import main as cli_main
from hw.presets import preset
from hw.units import unit_names, unit_role
from synth import driver
from synth.report import PRUNING_UNITS, format_table, summary

# smallest first: the test needs only one real unit, the quicker the better
_PREFERRED = ("head_detector", "block_pruner", "score_unit", "softmax_unit", "systolic_array",
              "top")


def _small_unit() -> str:
    avail = unit_names()
    for u in _PREFERRED:
        if u in avail:
            return u
    pytest.skip("no unit is available in this checkout yet")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def first_run():
    unit = _small_unit()
    out = ROOT / "build" / "pytest-synth" / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    events = []
    t0 = time.monotonic()
    res = driver.synth_unit(unit, preset("tiny"), out, progress=lambda *e: events.append(e))
    yield {"unit": unit, "out": out, "res": res, "events": events, "seconds": time.monotonic() - t0}
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.suppress(OSError):
        out.parent.rmdir()  # only when no other worker still uses it


@pytest.mark.synth
def test_unit_numbers_are_sane(first_run):
    unit, res = first_run["unit"], first_run["res"]
    info = f"unit {unit} on tiny: {json.dumps(res, default=str)[:2000]}"
    for stage in driver.STAGES:
        assert "error" not in res[stage], info
        assert res[stage]["cached"] is False, info
    assert res["generic"]["cells"] > 0 and res["generic"]["transistors"] > 0, info
    assert res["generic"]["transistors_lower_bound"] is False, info
    assert res["ecp5"]["lut4"] > 0 and res["ecp5"]["ff"] > 0, info
    assert res["ice40"]["lut4"] > 0 and res["ice40"]["ff"] > 0, info
    assert 1.0 < res["fmax"]["fmax_mhz"] < 2000.0, info
    assert res["fmax"]["device"] == "LFE5U-85F" and res["fmax"]["out_of_context"] is True
    assert res["unit"] == unit and res["config"] == preset("tiny").to_dict()
    json.dumps(res)  # JSON-serialisable as promised
    # every stage reported start then an end status, in order
    stages = [(s, st) for (_, s, st, _) in first_run["events"]]
    for stage in ("export", *driver.STAGES):
        assert (stage, "start") in stages and (stage, "done") in stages, stages


@pytest.mark.synth
def test_numbers_come_from_stat_json(first_run):
    build = first_run["out"] / first_run["unit"]
    res = first_run["res"]
    for target in ("ecp5", "ice40"):
        stat = json.loads((build / f"{target}_stat.json").read_text())
        assert stat["invocation"].startswith("stat -json")
        in_file = {k: v for k, v in stat["design"]["num_cells_by_type"].items() if k != "$scopeinfo"}
        assert res[target]["cells_by_type"] == in_file
        assert (build / f"{target}.log").stat().st_size > 0  # the full log, not stdout
    # the parser reads the file: change the file, the numbers follow
    stat_path = build / "ecp5_stat.json"
    stat = json.loads(stat_path.read_text())
    stat["design"]["num_cells_by_type"]["LUT4"] = 12345
    stat["design"]["num_cells_by_type"]["MULT18X18D"] = 7
    stat_path.write_text(json.dumps(stat))
    parsed = driver._parse_ecp5(build)
    assert parsed["lut4"] == 12345 and parsed["dsp"] == 7 + parsed["cells_by_type"].get("ALU54B", 0)
    report = json.loads((build / "pnr_report.json").read_text())
    assert res["fmax"]["fmax_mhz"] == min(c["achieved"] for c in report["fmax"].values())


@pytest.mark.synth
def test_rerun_hits_the_cache(first_run):
    unit, out, res = first_run["unit"], first_run["out"], first_run["res"]
    t0 = time.monotonic()
    again = driver.synth_unit(unit, preset("tiny"), out)
    took = time.monotonic() - t0
    for stage in driver.STAGES:
        assert again[stage]["cached"] is True, stage
        strip = {k: v for k, v in again[stage].items() if k != "cached"}
        assert strip == {k: v for k, v in res[stage].items() if k != "cached"}, stage
    assert took < 10.0, f"cached re-run took {took:.1f} s (first run {first_run['seconds']:.1f} s)"
    # the key covers the Verilog text and the script
    text = (out / unit / "design.v").read_text()
    assert driver.stage_key("ecp5", text) != driver.stage_key("ecp5", text + "\n// changed\n")
    assert driver.stage_key("ecp5", text) != driver.stage_key("ice40", text)
    assert driver.stage_key("fmax", text, 100.0) != driver.stage_key("fmax", text, 150.0)
    # the placer seed keys place and route only: a new seed reuses the Yosys netlists
    assert driver.stage_key("fmax", text, 100.0, seed=2) != driver.stage_key("fmax", text, 100.0)
    assert driver.stage_key("ecp5", text, seed=2) == driver.stage_key("ecp5", text)
    assert res["fmax"]["seed"] == driver.PNR_SEED


@pytest.mark.synth
def test_synth_all_counts_progress_and_totals(first_run):
    unit, out, res = first_run["unit"], first_run["out"], first_run["res"]
    ticks, events = [], []
    data = driver.synth_all(preset("tiny"), out, [unit], jobs=2, tick=lambda *t: ticks.append(t),
                            progress=lambda *e: events.append(e))
    assert list(data["units"]) == [unit] and data["roles"] == {unit: unit_role(unit)} != {unit: ""}
    assert ticks[-1][0] == ticks[-1][1] == 1 + len(driver.STAGES), ticks
    assert [t[0] for t in ticks] == list(range(1, len(ticks) + 1))
    assert all(st == "cached" for (_, s, st, _) in events if s != "export" and st != "start"), events
    tot = data["total"]
    assert tot["of"] == "sum of units" and tot["ecp5"]["lut4"] == res["ecp5"]["lut4"]
    assert tot["fmax_mhz"] == res["fmax"]["fmax_mhz"]
    json.dumps(data)


@pytest.mark.synth
def test_cli_prints_table_and_writes_json(first_run, capsys):
    unit, out = first_run["unit"], first_run["out"]
    rc = cli_main(["synth", "--preset", "tiny", "--unit", unit, "-o", str(out), "-q"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert unit in cap.out and "Fmax MHz" in cap.out and "ECP5 LUT4" in cap.out
    data = json.loads((out / "synth.json").read_text())
    assert list(data["units"]) == [unit] and data["roles"][unit] == unit_role(unit)
    assert data["units"][unit]["ecp5"]["lut4"] == first_run["res"]["ecp5"]["lut4"]
    assert data["units"][unit]["ecp5"]["cached"] is True
    assert (out / "synth.md").read_text().startswith("| unit |")
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    row = f"{unit} "
    line = next(ln for ln in cap.out.splitlines() if ln.startswith(row))
    assert str(first_run["res"]["ecp5"]["lut4"]) in line.split()


@pytest.mark.synth
def test_fmax_with_lut_multipliers_when_dsps_do_not_fit(first_run, monkeypatch):
    # runs last among the tool tests: it rewrites the unit's nextpnr report
    build = first_run["out"] / first_run["unit"]
    monkeypatch.setitem(driver.ECP5_DEVICE, "dsp", -1)  # any design "exceeds" the device
    text, script = (build / "design.v").read_text(), driver.script_text("ecp5")
    res = driver._run_pnr_stage(build, 100.0, script, driver.stage_key("ecp5", text, 100.0, script), None)
    assert res["dsp_in_luts"] is True and "synth_ecp5 -nodsp" in res["note"], res
    assert res["fmax_mhz"] > 0 and (build / "ecp5_nodsp_stat.json").exists()
    assert "MULT18X18D" not in driver._read_stat(build / "ecp5_nodsp_stat.json")["num_cells_by_type"]
    assert first_run["res"]["fmax"]["dsp_in_luts"] is False


# a 4 x 4-bit product (8 bits, like the score unit's integer pass) and an 8 x 8-bit one
_TWO_PRODUCTS = """
module two_products(input clk, input [3:0] a, b, input [7:0] c, d,
                    output reg [7:0] narrow, output reg [15:0] wide);
    always @(posedge clk) begin
        narrow <= a * b;
        wide <= c * d;
    end
endmodule
"""


@pytest.mark.synth
def test_ecp5_narrow_products_in_luts_wide_ones_in_dsps():
    out = ROOT / "build" / "pytest-synth" / f"dsp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.mkdir(parents=True)
        src = out / "two_products.v"
        src.write_text(_TWO_PRODUCTS)
        cells = {}
        for width in (None, 1, 17):
            res = driver.synth_verilog(src, out / f"w{width}", targets=("ecp5",), fmax=False,
                                       ecp5_dsp_min_width=width)
            assert "error" not in res["ecp5"], res["ecp5"]
            cells[width] = res["ecp5"]["cells_by_type"]
            assert res["ecp5"]["dsp_min_width"] == (width or driver.ECP5_DSP_MIN_WIDTH)
        assert driver.ECP5_DSP_MIN_WIDTH == 9
        # default: the 8-bit product in LUT logic, the 16-bit one in one MULT18X18D
        assert cells[None].get("MULT18X18D") == 1 and cells[None].get("LUT4", 0) > 0, cells
        # 1 reproduces stock synth_ecp5 (both in DSPs), 17 puts both in LUTs
        assert cells[1].get("MULT18X18D") == 2 and "LUT4" not in cells[1], cells
        assert "MULT18X18D" not in cells[17], cells
        # the soft product is the same function: netlist proven equal to the RTL
        assert "Equivalence successfully proven" in driver.check_ecp5_equivalence(out / "wNone")
        # the proof can fail: a netlist of a different design is refuted
        (out / "wNone" / "design.v").write_text(_TWO_PRODUCTS.replace("a * b", "a * b + 1"))
        with pytest.raises(driver.SynthError, match="unproven"):
            driver.check_ecp5_equivalence(out / "wNone")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_ecp5_dsp_min_width_option():
    assert driver.script_dsp_min_width(driver.script_text("ecp5")) == driver.ECP5_DSP_MIN_WIDTH
    text = driver.script_text("ecp5", 13)
    assert driver.script_dsp_min_width(text) == 13 and "DSP_Y_MINWIDTH=13 " in text
    assert driver.stage_key("ecp5", "x", ecp5_dsp_min_width=13) != driver.stage_key("ecp5", "x")
    assert driver.stage_key("fmax", "x", ecp5_dsp_min_width=13) != driver.stage_key("fmax", "x")
    assert driver.script_text("ice40", 13) == driver.script_text("ice40")
    for bad in (0, -3, 2.5, "9", True):
        with pytest.raises(ValueError, match="ecp5_dsp_min_width must be an integer"):
            driver.script_text("ecp5", bad)


def test_ecp5_fit():
    ok = {"lut4": 82000, "carry": 1000, "ff": 5000, "dsp": 39, "bram": 208, "lutram": 0}
    fit = driver.ecp5_fit(ok)  # a CCU2C takes two LUT4 sites: 84,000 > 83,640
    assert fit["fits"] is False and fit["lut4"] == [84000, 83640] and fit["bram"] == [208, 208]
    assert driver.ecp5_fit(ok | {"lut4": 70000})["fits"] is True
    assert driver.ecp5_fit(ok | {"lut4": 70000, "dsp": 157})["fits"] is False
    assert driver.ecp5_fit(ok | {"lut4": 70000, "lutram": 2000})["fits"] is False  # 6 sites each
    assert driver.ecp5_fit(ok | {"dsp": None}) is None


@pytest.mark.parametrize("argv", [
    ["--unit", "no_such_unit"],
    ["--unit", "head_detector", "--jobs", "0"],
    ["--set", "no_such_field=1"],
])
def test_cli_user_errors_exit_2(tmp_path, capsys, argv):
    rc = cli_main(["synth", "--preset", "tiny", "-o", str(tmp_path), *argv])
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "synth.json").exists()


def test_unknown_target_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="target must be one of generic, ecp5, ice40, not 'vivado'"):
        driver.synth_verilog(tmp_path / "x.v", tmp_path, targets=("vivado",))
    with pytest.raises(ValueError, match="unit must be one of"):
        driver.synth_unit("nope", preset("tiny"), tmp_path)


# ---------------------------------------------------------------------------- report (no tools)
def _fake(lut: int, ff: int, tr: int, fmax: float | None) -> dict:
    return {"generic": {"cells": lut * 3, "transistors": tr, "seconds": 1.0},
            "ecp5": {"lut4": lut, "carry": 1, "ff": ff, "dsp": 1, "bram": 0, "lutram": 0, "seconds": 2.0},
            "ice40": {"lut4": 2 * lut, "carry": 2, "ff": ff, "dsp": 0, "bram": 1, "seconds": 3.0},
            "fmax": {"fmax_mhz": fmax, "seconds": 4.0}}


def test_summary_totals_and_pruning_share():
    data = {"units": {"score_unit": _fake(99, 10, 1000, 150.0), "softmax_unit": _fake(49, 30, 3000, 90.0),
                      "head_detector": _fake(9, 10, 1000, 300.0)},
            "device": {"part": "LFE5U-85F", "speed": 6}, "fmax_target_mhz": 100.0}
    s = summary(data)
    assert s["total"]["ecp5_lut4"] == 157 and s["total"]["fmax_mhz"] == 90.0
    assert s["total"]["seconds"] == 30.0
    sh = s["pruning_share"]
    assert sh["relative_to"] == "total of units"
    assert sh["ecp5_logic"] == pytest.approx((100 + 10) / (100 + 50 + 10))
    assert sh["ecp5_ff"] == pytest.approx(20 / 50) and sh["transistors"] == pytest.approx(2000 / 5000)
    assert sh["missing"] == [u for u in PRUNING_UNITS if u not in ("score_unit", "head_detector")]
    # with the top synthesized, the share is of the top, and the top is not summed into the total
    data["units"]["top"] = _fake(399, 100, 20000, 80.0)
    s = summary(data)
    assert s["pruning_share"]["relative_to"] == "top"
    assert s["pruning_share"]["ecp5_logic"] == pytest.approx(110 / 400)
    assert s["total"]["ecp5_lut4"] == 157 and s["total"]["unit"] == "total (units)"


def test_pruning_share_counts_both_pruners():
    # the default mode's pruner (probability mass) is pruning logic as much as top-k's
    units = {"score_unit": _fake(99, 10, 1000, 150.0), "head_detector": _fake(9, 10, 1000, 300.0),
             "block_pruner": _fake(19, 10, 1000, 120.0), "mass_pruner": _fake(39, 10, 1000, 110.0),
             "top": _fake(399, 100, 20000, 80.0)}
    sh = summary({"units": units})["pruning_share"]
    assert sh["units"] == ["score_unit", "head_detector", "block_pruner", "mass_pruner"]
    assert sh["missing"] == [] and sh["ecp5_logic"] == pytest.approx((100 + 10 + 20 + 40) / 400)
    # a top built without the mass pruner does not miss it
    no_mass = {u: r for u, r in units.items() if u != "mass_pruner"}
    assert summary({"units": no_mass})["pruning_share"]["missing"] == ["mass_pruner"]
    cfg = preset("default").replace(prune_mode="topk", mass_pruner=False).to_dict()
    assert summary({"units": no_mass, "config": cfg})["pruning_share"]["missing"] == []
    # a configuration this version cannot read (an older synth.json) expects every unit
    assert summary({"units": no_mass, "config": {"mass_pruner": False}}
                   )["pruning_share"]["missing"] == ["mass_pruner"]
    # the share unit by unit adds up to it, and the table prints it
    by_unit = sh["ecp5_logic_by_unit"]
    assert by_unit == pytest.approx({"score_unit": 0.25, "head_detector": 0.025,
                                     "block_pruner": 0.05, "mass_pruner": 0.1})
    assert sum(by_unit.values()) == pytest.approx(sh["ecp5_logic"])
    text = format_table({"units": units})
    assert ("Its ECP5 logic by unit: score_unit 25.0%, head_detector 2.5%, block_pruner 5.0%, "
            "mass_pruner 10.0%.") in text


def test_summary_rows_name_the_role():
    """Every row of the JSON summary carries the unit's role in the design; the total has none."""
    data = {"units": {"score_stage": _fake(99, 10, 1000, 150.0), "block_pruner": _fake(9, 1, 10, 200.0),
                      "top": _fake(399, 100, 20000, 80.0)}}
    s = summary(data)
    roles = {r["unit"]: r["role"] for r in s["rows"]}
    assert roles["block_pruner"] == "top-k / threshold pruner"
    assert roles["score_stage"].startswith("approximation unit")
    assert roles["top"] and s["total"]["role"] == ""
    json.dumps(s)


def test_whole_design_prefers_top():
    units = {"score_unit": _fake(99, 10, 1000, 150.0), "softmax_unit": _fake(49, 30, 3000, None)}
    w = driver.whole_design(units)
    assert w["of"] == "sum of units" and w["ecp5"]["lut4"] == 148 and w["ice40"]["bram"] == 2
    assert w["fmax_mhz"] == 150.0  # a unit without a clock does not bound Fmax
    units["systolic_array"] = {"ecp5": {"error": "boom"}, "fmax": {"error": "ECP5 synthesis failed"}}
    w = driver.whole_design(units)
    assert w["ecp5"]["lut4"] is None and w["fmax_mhz"] is None and w["generic"]["cells"] is None
    units["top"] = _fake(399, 100, 20000, 80.0)
    w = driver.whole_design(units)
    assert w["of"] == "top" and w["ecp5"]["ff"] == 100 and w["fmax_mhz"] == 80.0


def test_format_table_text_and_markdown():
    data = {"units": {"score_unit": _fake(99, 10, 1000, 150.25),
                      "systolic_array": {"generic": {"error": "yosys exited with status 1\nboom"}}},
            "device": {"part": "LFE5U-85F", "speed": 6}, "fmax_target_mhz": 100.0}
    text = format_table(data)
    lines = text.splitlines()
    head = next(ln for ln in lines if ln.startswith("unit"))
    assert "Fmax MHz" in head and "ECP5 LUT4" in head and "iCE40 LUT4" in head
    assert head.split()[:3] == ["unit", "role", "cells"]
    row = next(ln for ln in lines if ln.startswith("score_unit"))
    # columns are two or more spaces apart; the role is beside the unit name
    assert re.split(r"\s{2,}", row)[:5] == ["score_unit", "integer score unit", "297", "1000", "99"]
    assert "150.2" in row
    arr = re.split(r"\s{2,}", next(ln for ln in lines if ln.startswith("systolic_array")))
    assert arr[:3] == ["systolic_array", "systolic array", "-"]
    assert "error: systolic_array generic: yosys exited with status 1" in text
    # the array is shared by every pass, not part of the top's pruning logic
    assert "Pruning logic (score_unit" in text and "+ systolic_array" not in text and "nodsp" not in text
    data["units"]["score_unit"]["fmax"]["dsp_in_luts"] = True
    assert "150.2*" in format_table(data) and "synth_ecp5 -nodsp" in format_table(data)
    assert "ECP5 DSP" not in text and "Top on the" not in text
    data["ecp5_dsp_min_width"] = 9
    data["total"] = {"of": "top", "ecp5_fit": driver.ecp5_fit(
        {"lut4": 60000, "carry": 2000, "ff": 30000, "dsp": 39, "bram": 100})}
    text = format_table(data)
    assert "ECP5 DSP: products of at least 9 bits in MULT18X18D, narrower ones in LUT logic." in text
    assert "64,000/83,640 (77%) LUT4 sites" in text and "39/156 (25%) MULT18X18D" in text
    assert "DP16KD: fits." in text
    md = format_table(data, "markdown")
    assert md.startswith("| unit | role | cells |")
    assert "| score_unit | integer score unit | 297 | 1000 | 99 |" in md
    with pytest.raises(ValueError, match="fmt must be one of text, markdown, not 'html'"):
        format_table(data, "html")


def test_format_table_names_only_the_flows_that_ran():
    """ECP5 alone (the main job's default): no transistor share and no iCE40 footnote."""
    ecp5_only = {"ecp5": {"lut4": 99, "carry": 10, "ff": 20, "dsp": 1, "bram": 0},
                 "fmax": {"fmax_mhz": 120.0}}
    data = {"units": {"score_unit": ecp5_only, "softmax_unit": ecp5_only},
            "device": {"part": "LFE5U-85F", "speed": 6}, "fmax_target_mhz": 100.0}
    text = format_table(data)
    assert "of ECP5 flip-flops." in text and "transistors." not in text
    assert "iCE40 MAC16" not in text and "EBR = DP16KD" in text
    full = format_table({**data, "units": {"score_unit": _fake(99, 10, 1000, 150.0)}})
    assert "of transistors." in full and "iCE40 MAC16 assumes an UltraPlus part" in full


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_a_bad_seed_is_refused_before_any_work(tmp_path, seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        driver.synth_verilog(tmp_path / "absent.v", tmp_path / "b", seed=seed)
    assert not (tmp_path / "b").exists()


def test_synth_unit_refuses_a_bad_seed_before_exporting(tmp_path):
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        driver.synth_unit("head_detector", preset("tiny"), tmp_path / "u", seed=-1)
    assert not (tmp_path / "u").exists()


# ---------------------------------------------------------------- place-and-route progress
_PNR_LOG = """Info: Packing IOs..
Info: Creating initial analytic placement for 41737 cells, random placement wirelen = 4198389.
Info:     at iteration #4, type ALL: wirelen solved = 161231, spread = 377948, legal = 456970; time = 5.00s
Info: Running simulated annealing placer for refinement.
Info:   at iteration #15: temp = 0.000000, timing cost = 2155, wirelen = 411287
Info: Routing 180875 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:    IterCnt |  w/ripup   wo/ripup |  w/r  wo/r |      arcs| batch(sec) total(sec)|
Info:      20000 |     4107      15892 |  175   825 |    107926|       0.83      23.46|
"""


def test_pnr_watch_says_where_the_run_is():
    w = driver.PnrWatch()
    notes = []
    for line in _PNR_LOG.splitlines(keepends=True):
        # in two pieces: a line is read only once it is complete
        half = len(line) // 2
        w.feed(line[:half])
        notes.append(w.feed(line[half:]))
    assert notes[0] == "packing"
    assert notes[1] == "placing"
    assert notes[2] == "placing, analytic placer iteration 4"
    assert notes[3] == "placing, refinement"
    assert notes[4] == "placing, refinement iteration 15"
    assert notes[5] == "routing 180,875 arcs"
    assert notes[-1] == "routing, 107,926 of 180,875 arcs left"
    assert w.feed("Info: Router1 time 539.94s\n") == "routed, timing analysis"


# a stand-in for nextpnr: writes the log given with -l line by line, then sleeps or exits
_FAKE_PNR = """import sys, time
log = open(sys.argv[sys.argv.index("-l") + 1], "w")
for line in {lines!r}:
    log.write(line + "\\n"); log.flush(); time.sleep(0.05)
time.sleep({linger})
"""


@pytest.mark.parametrize("linger, timeout", [(1.0, None), (60, 1.5)])
def test_a_running_place_and_route_reports_progress(tmp_path, monkeypatch, linger, timeout):
    lines = _PNR_LOG.splitlines()
    monkeypatch.setitem(driver._RUNNERS, "nextpnr-ecp5", _FAKE_PNR.format(lines=lines, linger=linger))
    monkeypatch.setattr(driver, "PNR_POLL_S", 0.05)
    monkeypatch.setattr(driver, "PNR_REPORT_S", 0.1)
    notes = []
    if timeout is None:
        driver._run_tool("nextpnr-ecp5", ["-l", "pnr.log"], tmp_path, "pnr.log", None, notes.append)
    else:
        with pytest.raises(driver.SynthError) as exc:
            driver._run_tool("nextpnr-ecp5", ["-l", "pnr.log"], tmp_path, "pnr.log", timeout,
                             notes.append)
        # a timed-out run says how far it got, which is the figure a scale sweep reports
        assert "timed out after 1.5 s" in str(exc.value)
        assert str(exc.value).endswith("(routing, 107,926 of 180,875 arcs left)")
    assert notes and all(re.fullmatch(r".+ \(\d+ min\)", n) for n in notes)
    assert notes[-1].startswith("routing, 107,926 of 180,875 arcs left")


def test_hdpgen_run_shows_place_and_route_news_also_in_a_log():
    import io

    from hdpgen.progress import Stages
    out = io.StringIO()
    st = Stages(1, stream=out)
    st.start("synth", "synthesis")
    st.tick(1, 30, "top export done")             # 1 of 30: not a tenth, not shown in a log
    st.tick(1, 30, "top fmax running: routing, 5 of 9 arcs left (3 min)")   # news: shown
    st.tick(2, 30, "top ecp5 done")
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["      synth: 1/30 top fmax running: routing, 5 of 9 arcs left (3 min)"]
