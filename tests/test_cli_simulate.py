"""``hdpgen simulate``: input validation (exit 2, nothing written), a real run on the tiny
preset (bit-exact, cycles in OUT.json, waveform), --compare's exit 1 on a difference, and
regression tests of reported defects: concurrent runs sharing a build folder, simulators
outliving an interrupted run, unusable destinations found only after the simulation."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hdpgen.cmd_simulate as cmd
from golden.model import attention
from hdpgen.cli import main
from hw.presets import preset
from sim.top_run import SimulationError


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
               "--set", "prune_mode=topk", "--set", "k_frac=0.25", "--sim", simulator, "--out", str(out),
               "--compare", "--waves", "--build-dir", str(tmp_path / "b")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "bit-exact against the golden model" in text
    assert "head 3/3" in text
    cfg = preset("tiny").replace(prune_mode="topk", k_frac=0.25)
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
    assert report["config"]["k_frac"] == 0.25
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


# --- regression tests of user-reported defects -------------------------------------------

def _hdpgen(*argv: str) -> list[str]:
    return [sys.executable, "-m", "hdpgen.cli", *argv]


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)],
                         indirect=True)
def test_defect1_concurrent_runs_are_isolated(simulator, tmp_path):
    """Two --compare runs on different data (different head counts), started together in one
    working directory with the default build folder: both bit-exact, each OUT.npz is the
    golden model of its own input, and nothing of either run is left in the build folder
    (it used to hold one shared job.npz/result.npz/progress.txt that the runs overwrote)."""
    heads = (3, 2)
    inputs = [write_qkv(tmp_path / f"in{i}.npz", h=h, seed=10 + i) for i, h in enumerate(heads)]
    procs = [subprocess.Popen(_hdpgen("simulate", "--qkv", f"in{i}.npz", "--preset", "tiny",
                                      "--sim", simulator, "--out", f"out{i}.npz", "--compare"),
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for i in range(2)]
    texts = [p.communicate(timeout=900) for p in procs]
    cfg = preset("tiny")
    for i, (p, (out, err)) in enumerate(zip(procs, texts)):
        assert p.returncode == 0, out + err
        assert "bit-exact against the golden model" in out, out
        gold = attention(inputs[i]["q"], inputs[i]["k"], inputs[i]["v"], cfg)
        with np.load(tmp_path / f"out{i}.npz") as z:
            assert z["out_int"].shape[0] == heads[i]
            assert np.array_equal(z["out_int"], gold["out_int"])
            assert np.array_equal(z["block_keep"], gold["block_keep"])
    build = tmp_path / "build" / "simulate"
    assert sorted(f.name for f in build.iterdir()) == ["runs", f"top-{simulator}"]
    assert not any((build / "runs").iterdir()), "run folders must be removed after the run"
    left = [f.name for f in build.rglob("*") if f.suffix in (".npz", ".xml")
            or f.name in ("progress.txt", "sim.log")]
    assert not left, f"per-run files left in the shared build folder: {left}"


def _survivors(build) -> list[str]:
    """Processes whose command line or working directory points into ``build``."""
    found = []
    root = str(build)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if root in cmd or cwd.startswith(root):
            found.append(f"{entry.name}: {cmd.strip()} (cwd {cwd})")
    return found


@pytest.mark.cocotb
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)],
                         indirect=True)
def test_defect2_interrupt_ends_the_simulator(simulator, sig, tmp_path):
    """A signal to ``hdpgen simulate`` while it simulates ends the simulator too (vvp used to
    run on for seconds, writing into the build folder); SIGINT prints ``interrupted`` and
    exits 130."""
    write_qkv(tmp_path / "in.npz", h=400 if simulator == "icarus" else 4000)
    build = tmp_path / "b"
    # as from a terminal: SIGINT at its default disposition in the child, whatever the test
    # runner inherited (a shell's background job starts with SIGINT ignored, and Python then
    # keeps ignoring it, so the test would measure how it was launched, not hdpgen)
    proc = subprocess.Popen(_hdpgen("simulate", "--qkv", "in.npz", "--preset", "tiny", "--sim",
                                    simulator, "--out", "out.npz", "--build-dir", str(build)),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stdout:  # the first progress line: the simulator is running
            seen.append(line)
            if " head " in line:
                break
        assert proc.poll() is None, "".join(seen) + proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out + err
        assert "interrupted" in err
    else:
        assert proc.returncode == -signal.SIGTERM, out + err
    time.sleep(1.0)  # grace period
    left = _survivors(build)
    for entry in left:  # do not leave them running even when the test fails
        with contextlib.suppress(OSError):
            os.kill(int(entry.split(":")[0]), signal.SIGKILL)
    assert not left, f"simulator processes outlived hdpgen: {left}"
    assert not (tmp_path / "out.npz").exists()
    if sig == signal.SIGINT:
        assert not any((build / "runs").iterdir()), "the interrupted run's folder must be removed"


def _no_simulation(*a, **kw):
    raise AssertionError("simulate() must not be called when a destination is unusable")


@pytest.mark.parametrize("case", ["build_dir_readonly", "build_dir_is_file", "out_readonly",
                                  "waves_is_dir"])
def test_defect4_unusable_destinations_exit_2_before_building(case, tmp_path, capsys, monkeypatch,
                                                              readonly_dir):
    write_qkv(tmp_path / "in.npz")
    monkeypatch.setattr(cmd, "simulate", _no_simulation)
    monkeypatch.setattr("sim.runner.simulator_missing", lambda s: None)
    out, build = tmp_path / "out.npz", tmp_path / "b"
    if case == "build_dir_readonly":
        build = readonly_dir / "b"
    elif case == "build_dir_is_file":
        build = tmp_path / "afile"
        build.write_text("x")
    elif case == "out_readonly":
        out = readonly_dir / "out.npz"
    else:
        (tmp_path / "out.fst").mkdir()
    rc = main(["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny", "--sim",
               "icarus", "--out", str(out), "--build-dir", str(build), "--waves"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("hdpgen simulate: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert ("build folder" in err) == case.startswith("build_dir"), err
    assert not out.exists() and not list(readonly_dir.iterdir())


def test_simulation_error_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    """A failed build or bench (SimulationError) exits 2 with one line naming the first
    failed test's message and the kept run folder, not a traceback."""
    write_qkv(tmp_path / "in.npz")

    def failing(*a, **kw):
        raise SimulationError("simulation failed: sim.benches.bench_top on icarus: 1 of 1 cocotb "
                              "tests failed:\n  test_job: top mismatch row=1\nlog tail:\nmore",
                              tmp_path / "runs" / "x")

    monkeypatch.setattr(cmd, "simulate", failing)
    monkeypatch.setattr("sim.runner.simulator_missing", lambda s: None)
    rc = main(["simulate", "--qkv", str(tmp_path / "in.npz"), "--preset", "tiny", "--sim",
               "icarus", "--out", str(tmp_path / "out.npz"), "--build-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "test_job: top mismatch row=1" in err and str(tmp_path / "runs" / "x") in err
    assert not (tmp_path / "out.npz").exists()
