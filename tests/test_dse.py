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
    (["k_b=999"], "grid point k_b=999: k_b must be in"),
])
def test_bad_grids_name_the_problem(items, message):
    with pytest.raises(CliError, match=message):
        grid, _ = parse_grid(items, None)
        expand_grid(preset("default"), grid, 30)


def test_keep_axis_programs_k_b_for_the_data_length():
    grid, _ = parse_grid(["keep=0.5,0.75", "block=2x2,4x4"], None)
    pts = dict(expand_grid(preset("default"), grid, 30))
    assert pts["keep=0.5,block=2x2"].k_b == 8 and pts["keep=0.75,block=2x2"].k_b == 12
    assert pts["keep=0.75,block=4x4"].k_b == 6 and pts["keep=0.75,block=4x4"].block_rows == 4


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
