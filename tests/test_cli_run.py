"""``hdpgen run``: data for every preset, checks before any work, heads, report folders.

Fast: the tiny and odd presets, ``--no-sim --no-synth``; where the Verilog is not the point,
its generation is replaced by a stub."""

import json
from pathlib import Path

import numpy as np
import pytest

from hdpgen import cmd_run
from hdpgen.cli import main as cli_main
from hw.presets import preset

FAST = ["--no-sim", "--no-synth"]


@pytest.fixture
def stub_verilog(monkeypatch):
    """Replace Verilog generation (seconds per run) by a one-line file per unit."""
    import hw.export

    def fake(name, cfg, out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.v").write_text(f"// {name}\n")
    monkeypatch.setattr(hw.export, "export_verilog", fake)


def _qkv(path: Path, h: int, n: int, d: int, seed: int = 1, **extra) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {x: rng.normal(0, 1, (h, n, d)).astype(np.float32) for x in "qkv"}
    np.savez(path, **arrays, **extra)
    return path


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- 3: data for every preset
@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_defect3_run_works_on_presets_the_bundled_data_does_not_fit(name, tmp_path, stub_verilog,
                                                                   capsys):
    assert cli_main(["run", "--preset", name, *FAST, "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / name / "report.json").read_text())
    cfg = preset(name)
    assert rep["data"]["source"] == "synthetic" and rep["data"]["seed"] == 0
    assert rep["data"]["seq_len"] == cfg.seq_len
    assert "SYNTHETIC data, seed 0" in out and "SYNTHETIC data, seed 0" in \
        (tmp_path / name / "report.md").read_text()
    assert (tmp_path / name / "verilog" / "top.v").is_file()


def test_defect3_synthetic_data_follows_the_seed(tmp_path, stub_verilog, capsys):
    assert cli_main(["run", "--preset", "tiny", *FAST, "--seed", "7", "-o", str(tmp_path)]) == 0
    assert "seed 7" in capsys.readouterr().out
    a = cmd_run.synthetic_qkv(preset("tiny"), 7)
    assert np.array_equal(a["q"], cmd_run.synthetic_qkv(preset("tiny"), 7)["q"])
    assert not np.array_equal(a["q"], cmd_run.synthetic_qkv(preset("tiny"), 8)["q"])


def test_defect3_run_reads_qkv(tmp_path, stub_verilog):
    f = _qkv(tmp_path / "in.npz", 3, 6, 4, valid_len=np.int64(5))
    assert cli_main(["run", "--preset", "tiny", *FAST, "--qkv", str(f), "-o", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / "tiny" / "report.json").read_text())
    assert rep["data"]["source"] == "qkv" and rep["data"]["heads"] == 3
    assert rep["registers"]["valid_len"] == 5 and str(f) in rep["data"]["description"]
    # the older spelling --data FILE.npz reads the same file
    assert cli_main(["run", "--preset", "tiny", *FAST, "--data", str(f), "-o", str(tmp_path / "p")]) == 0


@pytest.mark.parametrize("args, message", [
    (["--qkv", "{bad_d}"], "head dimension d = 32 differs from the configuration's head_dim = 4"),
    (["--qkv", "{missing}"], "no such file"),
    (["--data", "long"], "bundled fixture 'long' (N = 30, d = 32) does not fit head_dim = 4"),
    (["--data", "nonesuch"], "--data must be one of"),
])
def test_defect3_run_bad_data_is_one_line_before_any_work(args, message, tmp_path, capsys):
    bad_d = _qkv(tmp_path / "d32.npz", 2, 8, 32)
    args = [a.format(bad_d=bad_d, missing=tmp_path / "none.npz") for a in args]
    out = tmp_path / "o"
    assert cli_main(["run", "--preset", "tiny", *FAST, *args, "-o", str(out)]) == 2
    assert message in _one_line_error(capsys.readouterr().err)
    assert not out.exists(), "work was done before the data was checked"


# ---------------------------------------------------------------- 4: destinations and options
def test_defect4_run_readonly_destination_is_one_line(readonly_dir, capsys):
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(readonly_dir)]) == 2
    assert "not writable" in _one_line_error(capsys.readouterr().err)
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(readonly_dir / "sub")]) == 2


def test_defect4_run_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(tmp_path / "f")]) == 2
    assert "not a directory" in _one_line_error(capsys.readouterr().err)


def test_defect4_run_rejects_bogus_synth_targets_before_work(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli_main(["run", "--preset", "tiny", "--no-sim", "--synth-targets", "ecp5,bogus",
                     "-o", str(out)]) == 2
    assert "target must be one of generic, ecp5, ice40, not 'bogus'" in \
        _one_line_error(capsys.readouterr().err)
    assert not out.exists()


# ---------------------------------------------------------------- 6: --heads
@pytest.mark.parametrize("heads, message", [
    ("0", "--heads must be at least 1, not 0"),
    ("-1", "--heads must be at least 1, not -1"),
    ("9", "--heads must be in [1, 8] (the data has 8 heads), not 9"),
])
def test_defect6_run_rejects_zero_negative_and_too_many_heads(heads, message, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli_main(["run", "--preset", "tiny", "--no-synth", "--heads", heads, "-o", str(out)]) == 2
    assert message in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_defect6_simulate_and_compare_rejects_bad_heads(tmp_path):
    d = cmd_run.synthetic_qkv(preset("tiny"), 0)
    for heads in (0, -1, 9):
        with pytest.raises(ValueError, match=r"heads must be in \[1, 8\]"):
            cmd_run.simulate_and_compare(d["q"], d["k"], d["v"], preset("tiny"), None,
                                         simulator="icarus", build_dir=tmp_path, heads=heads)


# ---------------------------------------------------------------- 8: report folders
def test_defect8_set_variants_get_their_own_folders(tmp_path, stub_verilog, capsys):
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(tmp_path)]) == 0
    assert f"report in {tmp_path / 'tiny'}" in capsys.readouterr().out
    assert cli_main(["run", "--preset", "tiny", *FAST, "--set", "k_frac=0.25", "-o", str(tmp_path)]) == 0
    cfg = preset("tiny").replace(k_frac=0.25)
    variant = tmp_path / f"tiny-{cmd_run.config_hash(cfg)}"
    assert f"report in {variant}" in capsys.readouterr().out
    assert json.loads((tmp_path / "tiny" / "report.json").read_text())["config"]["k_frac"] == 0.5
    rep = json.loads((variant / "report.json").read_text())
    assert rep["config"] == cfg.to_dict() and rep["folder"] == variant.name
    # a --set that restates the preset is the preset
    assert cmd_run.report_folder_name(preset("tiny").replace(k_frac=0.5), "tiny") == "tiny"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == \
        sorted(["tiny", variant.name])


def test_defect8_a_crashed_run_leaves_the_previous_report_untouched(tmp_path, stub_verilog,
                                                                     monkeypatch):
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(tmp_path)]) == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "tiny").rglob("*")
              if p.is_file()}
    import hdpgen.accuracy

    def boom(*a, **k):
        raise RuntimeError("crash in the golden stage")
    monkeypatch.setattr(hdpgen.accuracy, "golden_accuracy", boom)
    with pytest.raises(RuntimeError, match="crash"):
        cli_main(["run", "--preset", "tiny", *FAST, "--seed", "3", "-o", str(tmp_path)])
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "tiny").rglob("*")
             if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name], "temporary folder left"


def test_defect8_a_failed_stage_goes_beside_the_previous_report(tmp_path, stub_verilog,
                                                                 monkeypatch, capsys):
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(tmp_path)]) == 0
    before = (tmp_path / "tiny" / "report.json").read_bytes()

    def no_simulator(choice):
        raise cmd_run.CliError("no HDL simulator can run: test")
    monkeypatch.setattr(cmd_run, "_pick_simulator", no_simulator)
    assert cli_main(["run", "--preset", "tiny", "--no-synth", "-o", str(tmp_path)]) == 1
    assert (tmp_path / "tiny" / "report.json").read_bytes() == before
    failed = json.loads((tmp_path / "tiny.failed" / "report.json").read_text())
    assert "no HDL simulator" in failed["skipped"]["rtl"]
    assert f"report in {tmp_path / 'tiny.failed'}" in capsys.readouterr().out
    # the next good run clears the failed one
    assert cli_main(["run", "--preset", "tiny", *FAST, "-o", str(tmp_path)]) == 0
    assert not (tmp_path / "tiny.failed").exists()


def test_defect8_folder_name_for_a_config_file(tmp_path):
    cfg = preset("odd").replace(rho=0.25)
    assert cmd_run.report_folder_name(preset("odd"), "default", tmp_path / "mine.json") == "odd"
    assert cmd_run.report_folder_name(cfg, "default", tmp_path / "my cfg.json") == \
        f"my_cfg-{cmd_run.config_hash(cfg)}"
    assert cmd_run.report_folder_name(cfg, "odd") == f"odd-{cmd_run.config_hash(cfg)}"


def test_run_default_data_is_the_128_token_paragraph_and_dse_keeps_the_long_sentence():
    cfg = preset("default")
    d = cmd_run.resolve_data(cfg, fallback=cmd_run.RUN_FIXTURES)
    assert d["source"] == "fixture" and "'para128'" in d["description"]
    assert d["q"].shape == (72, 128, 32) and d["q"].dtype == np.float32 and d["valid_len"] == 128
    # a configuration too short for it falls back to the long sentence (N = 30)
    d = cmd_run.resolve_data(cfg.replace(seq_len=64), fallback=cmd_run.RUN_FIXTURES)
    assert "'long'" in d["description"] and d["q"].shape[1] == 30
    assert "'long'" in cmd_run.resolve_data(cfg)["description"]  # dse's default search


# ---------------------------------------------------------------- the LeOPArd front end
def test_run_leopard_preset_golden_report(tmp_path, stub_verilog, capsys):
    """``run --preset leopard`` (golden only): the report has the LeOPArd section with kept
    entries and bits, HDP's cycles on the same heads, and no HDP-only sections."""
    assert cli_main(["run", "--preset", "leopard", "--data", "medium", *FAST,
                     "-o", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "leopard" / "report.json").read_text())
    le = rep["leopard"]
    assert 0 < le["golden"]["kept_fraction"] < 1 and 0 < le["golden"]["bits_ratio"] < 1
    assert len(le["hdp"]["cycles"]) == rep["data"]["heads"] == 72
    md = (tmp_path / "leopard" / "report.md").read_text()
    assert "## LeOPArd front end" in md and "## Pruning" not in md
    assert "threshold logit >= -1.0625" in md


@pytest.mark.cocotb
def test_run_leopard_rtl_three_ways(tmp_path, stub_verilog):
    """The RTL stage of ``run --preset leopard``: as run, without early termination and
    dense, bit-exact on the head simulated (Icarus, one head of the 12-token capture)."""
    from sim.runner import simulator_missing
    if simulator_missing("icarus"):
        pytest.skip("icarus is not installed")
    assert cli_main(["run", "--preset", "leopard", "--data", "medium", "--heads", "1",
                     "--sim", "icarus", "--no-synth", "-o", str(tmp_path)]) == 0
    rtl = json.loads((tmp_path / "leopard" / "report.json").read_text())["leopard"]["rtl"]
    assert rtl["bit_exact"] and rtl["heads"] == 1
    # the same kept entries with and without early termination; no more bits with it
    assert rtl["as_run"]["kept_entries"] == rtl["no_et"]["kept_entries"]
    assert sum(rtl["as_run"]["bits_read"]) < sum(rtl["no_et"]["bits_read"])
    assert sum(rtl["dense"]["kept_entries"]) == 12 * 12
