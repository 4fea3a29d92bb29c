"""Wall time of one ``hdpgen dse`` sweep on local worker processes against the same sweep on
a Dask ``LocalCluster`` with as many worker processes, in one process, each run on a fresh
output folder (nothing cached), repeated to show the spread.

    .venv/bin/python bench/dse_cluster.py [--workers 2] [--repeats 3]

The sweep is 12 points (keep 1/4, 1/2, 3/4 x block 2x2, 2x4 x array 2x8, 2x16) on the bundled
MiniLM sentence with ``--no-synth``: golden model and exact cycle model per point.  Prints the
minimum, median and maximum seconds of each and the ratio cluster / local of the medians.
"""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import BenchError, require, run_main  # noqa: E402

require("bench/dse_cluster", ["numpy", "distributed", "hdpgen"])

from distributed import LocalCluster  # noqa: E402

from hdpgen.cli import main as hdpgen  # noqa: E402

GRID = ["--grid", "keep=0.25,0.5,0.75", "--grid", "block=2x2,2x4", "--grid", "array=2x8,2x16"]


def sweep_seconds(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as out:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = hdpgen(["dse", *GRID, "--no-synth", *extra, "-o", out])
        seconds = time.perf_counter() - t0
        if rc != 0:
            raise BenchError(f"hdpgen dse {' '.join(extra)} exited with status {rc}")
        if len(list((Path(out) / "cache").glob("*.json"))) != 12:
            raise BenchError(f"hdpgen dse {' '.join(extra)} did not finish 12 points")
    return seconds


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench/dse_cluster.py", description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.workers < 1 or args.repeats < 1:
        raise BenchError("--workers and --repeats must be at least 1")
    local, cluster = [], []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=40) as c:
        for _ in range(args.repeats):  # interleaved, so machine load hits both alike
            local.append(sweep_seconds(["-j", str(args.workers)]))
            cluster.append(sweep_seconds(["--scheduler", c.scheduler_address]))
    print(f"12-point dse sweep (--no-synth), {args.workers} workers, {args.repeats} runs each")
    print("| executor | min s | median s | max s |")
    print("|---|---:|---:|---:|")
    for name, xs in ((f"local pool (-j {args.workers})", local),
                     (f"Dask LocalCluster ({args.workers} worker processes)", cluster)):
        print(f"| {name} | {min(xs):.2f} | {statistics.median(xs):.2f} | {max(xs):.2f} |")
    print(f"cluster / local (medians): {statistics.median(cluster) / statistics.median(local):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("bench/dse_cluster", main))
