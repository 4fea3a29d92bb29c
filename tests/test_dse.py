"""``hdpgen dse``: grid parsing, point expansion, a small sweep and resuming from the cache."""

import csv
import json

import pytest

from hdpgen.cli import main as cli_main
from hdpgen.cmd_dse import expand_grid, parse_grid
from hdpgen.common import CliError
from hw.presets import preset


def test_grid_from_flags_and_toml(tmp_path):
    t = tmp_path / "g.toml"
    t.write_text('preset = "default"\n[grid]\narray = ["2x8", "4x8"]\nkeep = [0.5]\n')
    grid, pre = parse_grid(["prune_mode=topk,threshold"], t)
    assert pre == "default"
    assert grid == {"array": ["2x8", "4x8"], "keep": [0.5], "prune_mode": ["topk", "threshold"]}


@pytest.mark.parametrize("items, message", [
    (["array"], "--grid takes AXIS=V1,V2"),
    (["colour=red"], "unknown grid axis 'colour'"),
    (["array=8by8"], "array values must look like RxC"),
    (["keep=1.5"], r"keep must be a fraction in \(0, 1\]"),
    (["k_frac=0.3"], r"grid point k_frac=0.3: k_frac must be a multiple of 2\*\*-8"),
])
def test_bad_grids_name_the_problem(items, message):
    with pytest.raises(CliError, match=message):
        grid, _ = parse_grid(items, None)
        expand_grid(preset("default"), grid)


def test_keep_axis_programs_k_frac():
    grid, _ = parse_grid(["keep=0.5,0.75,0.3", "block=2x2,4x4"], None)
    pts = dict(expand_grid(preset("default"), grid))
    assert pts["keep=0.5,block=2x2"].k_frac == 0.5 and pts["keep=0.75,block=2x2"].k_frac == 0.75
    assert pts["keep=0.75,block=4x4"].k_frac == 0.75 and pts["keep=0.75,block=4x4"].block_rows == 4
    # rounded up to the register's 2**-8 grid: ceil(0.3 * 256) = 77
    assert pts["keep=0.3,block=2x2"].k_frac_q == 77 and pts["keep=0.3,block=2x2"].prune_mode == "topk"


def test_small_sweep_writes_csv_and_resumes_from_cache(tmp_path, capsys):
    args = ["dse", "--grid", "array=2x8,4x8", "--grid", "keep=0.5", "--data", "medium",
            "--no-synth", "-j", "1", "-o", str(tmp_path)]
    assert cli_main(args) == 0
    rows = list(csv.DictReader((tmp_path / "dse.csv").open()))
    assert [r["label"] for r in rows] == ["array=2x8,keep=0.5", "array=4x8,keep=0.5"]
    for r in rows:
        assert int(r["cycles_pruned"]) < int(r["cycles_dense"])
        assert 0 < float(r["kept_blocks"]) < 1
    # block rows taller than the array's tile rows share fewer kept columns: less speedup
    assert float(rows[0]["speedup"]) > float(rows[1]["speedup"])
    capsys.readouterr()
    assert cli_main(args) == 0
    assert "2 cached, 0 to run" in capsys.readouterr().err
    cached = json.loads((tmp_path / "dse.json").read_text())
    assert [r["cycles_pruned"] for r in cached] == [int(r["cycles_pruned"]) for r in rows]


# ---------------------------------------------------------------- user-reported defects
def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_defect3_dse_on_tiny_uses_seeded_synthetic_data(tmp_path, capsys):
    args = ["dse", "--preset", "tiny", "--grid", "keep=0.5,1", "--no-synth", "-j", "1",
            "-o", str(tmp_path)]
    assert cli_main(args) == 0
    cap = capsys.readouterr()
    assert "SYNTHETIC data, seed 0" in cap.err and "SYNTHETIC data, seed 0" in cap.out
    rows = json.loads((tmp_path / "dse.json").read_text())
    assert [r["data"] for r in rows] == ["synthetic, seed 0"] * 2
    assert rows[0]["kept_blocks"] < rows[1]["kept_blocks"] == 1


def test_defect3_dse_reads_qkv_and_data_file(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    f = tmp_path / "in.npz"
    np.savez(f, **{x: rng.normal(0, 1, (2, 10, 32)).astype(np.float32) for x in "qkv"})
    for flag in ("--qkv", "--data"):  # --data FILE.npz, as documented before, reads it too
        out = tmp_path / flag.strip("-")
        assert cli_main(["dse", flag, str(f), "--grid", "keep=0.5", "--no-synth", "-j", "1",
                         "-o", str(out)]) == 0
        assert json.loads((out / "dse.json").read_text())[0]["data"] == str(f)


def test_defect3_dse_bad_qkv_is_one_line_before_work(tmp_path, capsys):
    import numpy as np
    f = tmp_path / "in.npz"
    np.savez(f, **{x: np.zeros((2, 10, 32), np.float32) for x in "qkv"})
    out = tmp_path / "o"
    assert cli_main(["dse", "--preset", "tiny", "--qkv", str(f), "--grid", "keep=0.5",
                     "--no-synth", "-o", str(out)]) == 2
    assert "head_dim = 4" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_defect4_dse_readonly_output_is_one_line(readonly_dir, capsys):
    assert cli_main(["dse", "--grid", "keep=0.5", "--no-synth", "-o", str(readonly_dir)]) == 2
    assert "not writable" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_defect12_dse_rejects_jobs_below_one(jobs, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli_main(["dse", "--grid", "keep=0.5", "--no-synth", "-j", jobs, "-o", str(out)]) == 2
    assert f"-j/--jobs must be at least 1, not {jobs}" in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_defect12_dse_sim_has_help_and_no_synth_writes_pareto(tmp_path):
    from hdpgen.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["dse"]
    sim = next(a for a in sub._actions if "--sim" in a.option_strings)
    assert sim.help and "--validate" in sim.help
    assert cli_main(["dse", "--preset", "tiny", "--grid", "keep=0.5,1", "--no-synth", "-j", "1",
                     "-o", str(tmp_path)]) == 0
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
