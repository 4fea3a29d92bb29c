"""``hdpgen dse --scheduler``: the sweep on a Dask distributed cluster (an in-process
``LocalCluster`` of worker processes) gives the local run's results, resumes from the same
cache, and loses no point when a worker is killed in the middle."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from hdpgen import cmd_dse
from hdpgen.cli import main

#: the bundled short fixture (N = 30): about a second per point, as the runs compare results
#: and scheduling, not the measurement (the default 'long' data takes about 15 s a point)
GRID = ["--grid", "keep=0.25,0.5,0.75", "--grid", "block=2x2,2x4", "--data", "short"]
#: fields that measure the run itself, not the design point
TIMING = ("t_golden_s", "t_synth_s")


def _rows(out: Path) -> dict:
    rows = json.loads((out / "dse.json").read_text())
    return {r["label"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=40) as c:
        yield c


def test_cluster_sweep_equals_the_local_sweep_and_shares_its_cache(cluster, tmp_path, capsys):
    assert main(["dse", *GRID, "--no-synth", "-j", "2", "-o", str(tmp_path / "local")]) == 0
    assert main(["dse", *GRID, "--no-synth", "--scheduler", cluster.scheduler_address,
                 "-o", str(tmp_path / "cluster")]) == 0
    err = capsys.readouterr().err
    assert f"6 to run on 2 workers of {cluster.scheduler_address}" in err
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "cluster")
    assert len(local) == 6 and remote == local
    # resuming: a sweep cached locally has nothing left to run on the cluster, and back
    assert main(["dse", *GRID, "--no-synth", "--scheduler", cluster.scheduler_address,
                 "-o", str(tmp_path / "local")]) == 0
    assert main(["dse", *GRID, "--no-synth", "-j", "1", "-o", str(tmp_path / "cluster")]) == 0
    err = capsys.readouterr().err
    assert err.count("6 points, 6 cached, 0 to run") == 2


def test_a_worker_killed_mid_sweep_loses_no_point(tmp_path):
    grid = [*GRID, "--grid", "array=2x8,2x16"]  # 12 points
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=40) as c, Client(c) as client:
        pids = client.run(os.getpid)
        exe = Path(sys.executable).with_name("hdpgen")
        cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "hdpgen.cli"]) + [
            "dse", *grid, "--no-synth", "--scheduler", c.scheduler_address,
            "-o", str(tmp_path / "out")]
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        lines = []
        try:
            for line in proc.stderr:  # wait until the sweep is under way
                lines.append(line)
                if "[1/12]" in line:
                    break
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            lines += proc.stderr.readlines()
            assert proc.wait(timeout=300) == 0, "".join(lines)
        finally:
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 30  # the nanny restarts the killed worker
        while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert "FAILED" not in "".join(lines)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 12
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 12


@pytest.mark.parametrize("address, words", [
    ("localhost:8786", "must look like tcp://HOST:PORT"),
    ("tcp://", "must look like tcp://HOST:PORT"),
    ("tcp://127.0.0.1:9", "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    ("tcp://127.0.0.1", "cannot reach the Dask scheduler at tcp://127.0.0.1"),
])
def test_bad_scheduler_is_one_line(tmp_path, capsys, monkeypatch, address, words):
    # refused connections are retried until the client's timeout: 1 s here, not 10
    monkeypatch.setattr(cmd_dse.connect_scheduler, "__defaults__", (1.0,))
    rc = main(["dse", "--grid", "keep=0.5", "--no-synth", "--scheduler", address,
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "dse.json").exists()
