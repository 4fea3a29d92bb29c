"""The README's "Measured" table is the rendering of the committed benchmark results.

Fast: nothing is measured here.  ``bench/readme_figures.py`` renders the table from
``bench/results/*.json``; after a new measurement (``python bench/cycles.py --all-heads
--results bench/results/cycles.json``) run ``python bench/readme_figures.py`` to update
README.md.  Also checks that the benchmarks fail loudly.
"""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import readme_figures as rf
from bench.benchutil import require, run_main

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_equals_rendering_of_committed_results():
    text = (ROOT / "README.md").read_text()
    assert rf.current_block(text) == rf.render(rf.load_results()), (
        "README.md's measured table differs from bench/results/*.json: "
        "run python bench/readme_figures.py")


def test_check_mode_agrees(capsys):
    assert rf.main(["--check"]) == 0


def test_results_say_how_and_when_they_were_measured():
    for name in ("cycles", "accuracy"):
        meta = json.loads((ROOT / "bench" / "results" / f"{name}.json").read_text())["meta"]
        assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"]), name
        assert meta["command"] and meta["date"], name


def test_rendering_follows_the_json():
    """Not vacuous: a changed figure changes the table."""
    res = rf.load_results()
    before = rf.render(res)
    changed = copy.deepcopy(res)
    changed["cycles"]["dense_n128"]["utilization"] = 0.5
    after = rf.render(changed)
    assert after != before and "| 50.0 % |" in after


def test_replace_block_keeps_the_rest():
    text = f"head\n{rf.BEGIN}\nold\n{rf.END}\ntail\n"
    assert rf.replace_block(text, f"{rf.BEGIN}\nnew\n{rf.END}") == f"head\n{rf.BEGIN}\nnew\n{rf.END}\ntail\n"
    with pytest.raises(ValueError):
        rf.replace_block("no markers", "x")


# ------------------------------------------------------------------------------ fail loudly
def test_missing_package_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exc:
        require("bench/x", ["numpy", "no_such_package_hdpgen"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench/x: error:") and "no_such_package_hdpgen" in err[0]


def test_exception_is_one_error_line_and_status_1(capsys):
    def main(argv):
        raise ModuleNotFoundError("No module named 'amaranth'", name="amaranth")
    assert run_main("bench/x", main, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ModuleNotFoundError" in err[0] and "amaranth" in err[0]


WORKER_FAILS = """
import sys
sys.path.insert(0, {root!r})
import bench.cycles as c

def broken(cfg_dict, data, dense):
    import no_such_package_hdpgen  # noqa: F401

c.model_job = broken
sys.exit(c.run_main("bench/cycles", c.main, ["--model-only", "--no-scalesim", "-j", "2",
                                              "--out", {out!r}]))
"""


def test_failed_worker_fails_the_benchmark(tmp_path):
    """A worker process that cannot import a package stops bench/cycles.py: exit status 1,
    one error line naming the module, no result file."""
    script = tmp_path / "run.py"
    out = tmp_path / "cycles.json"
    script.write_text(WORKER_FAILS.format(root=str(ROOT), out=str(out)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench/cycles: error: ModuleNotFoundError"), err
    assert "no_such_package_hdpgen" in err[0]
    assert not out.exists()
