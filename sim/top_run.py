"""Run the RTL co-processor top (``hw.top.Top``) in Icarus or Verilator on quantized heads.

:func:`simulate` is the one entry point every caller uses (``hdpgen simulate``, ``hdpgen run``,
``hdpgen dse --validate``, the cycle model's validation and ``bench/cycles.py``).

Isolation: the build directory holds the compiled model, shared by every call that uses the
same directory (built once, under a lock: :func:`sim.runner.run_cocotb`), and each call gets a
private folder ``<build_dir>/runs/<pid>-<random>/`` for its job, result, progress, results.xml,
simulator log and waveform, so concurrent calls never read each other's files.  The folder is
removed when the call ends (kept, and named in the error, when the simulation fails).

Interruption: the simulation runs in a worker process (``python -m sim.top_run``) that leads
its own process group; whatever ends the caller (``KeyboardInterrupt``, any exception) kills
that group, simulator included, and the worker kills its group when its parent dies without
cleaning up (Linux ``PR_SET_PDEATHSIG``: SIGTERM or SIGKILL of the caller).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["simulate", "split_runtime", "SimulationError", "RUNTIME_FIELDS", "CANONICAL_RUNTIME",
           "RUNTIME_FIELDS_LEOPARD", "CANONICAL_RUNTIME_LEOPARD"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_POLL_SECONDS = 0.25
_LOG_TAIL = 40


class SimulationError(RuntimeError):
    """The simulator ran but the bench failed (a cocotb test failed or the build broke).

    ``details`` is the kept run folder (job, logs, ``error.txt``) or None."""

    def __init__(self, message: str, details: Path | None = None):
        super().__init__(message)
        self.details = details


#: Configuration fields that are AXI4-Lite registers of the top, not elaboration constants.
RUNTIME_FIELDS = ("prune_mode", "k_frac", "rho", "eps", "head_prune", "tau_head", "approx",
                  "causal")
#: The reset values the simulated top is built with (one build serves every run-time setting).
CANONICAL_RUNTIME = {"prune_mode": "topk", "k_frac": 0.5, "rho": 0.5, "eps": 0.0625,
                     "head_prune": False,
                     "tau_head": 0, "approx": "drop_ff", "causal": False}


#: The same for a top generated with the LeOPArd front end (``front_end = "leopard"``).
RUNTIME_FIELDS_LEOPARD = ("leopard_th", "causal")
CANONICAL_RUNTIME_LEOPARD = {"leopard_th": 0.0, "causal": False}


def split_runtime(cfg) -> tuple:
    """``(hardware configuration, run-time settings)``: the hardware one has the canonical
    register reset values, so the Verilog (and its cached build) does not change with the
    run-time settings; the settings are written to the registers before every head."""
    if cfg.front_end == "leopard":
        return (cfg.replace(**CANONICAL_RUNTIME_LEOPARD),
                {f: getattr(cfg, f) for f in RUNTIME_FIELDS_LEOPARD})
    return cfg.replace(**CANONICAL_RUNTIME), {f: getattr(cfg, f) for f in RUNTIME_FIELDS}


def simulate(cfg, q_q, k_q, v_q, valid_len: int, simulator: str, build_dir: Path, *,
             waves: bool = False, progress=None, waves_to: Path | None = None,
             head_cfgs: list | None = None, no_et: bool = False) -> tuple[dict, Path]:
    """Run every head of quantized (H, N, d) inputs through the RTL top.

    Returns the bench's result arrays (:func:`sim.benches.bench_top.read_result`) and the
    folder of the (shared) simulator build.  ``progress(done, total)`` is called while the
    simulation runs.  With ``waves`` the waveform is moved out of the private run folder to
    ``waves_to`` with the simulator's suffix (``.fst`` Icarus, ``.vcd`` Verilator; default
    ``<build_dir>/top``) and its path is returned in the dict under ``"waves"``.

    ``head_cfgs`` (one configuration per head, differing from ``cfg`` only in run-time fields)
    gives each head its own register values, e.g. a per-layer calibration.  ``no_et`` (LeOPArd
    front end only): every entry reads all its bits, the cycle baseline of early termination.

    Raises :class:`SimulationError` when the build or the bench fails."""
    from sim.benches.bench_top import read_result, write_job

    build_dir = Path(build_dir).resolve()
    runs = build_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(dir=runs, prefix=f"{os.getpid()}-"))
    keep = False
    try:
        heads = q_q.shape[0]
        hw_cfg, settings = split_runtime(cfg)
        per_head = [settings] * heads
        if head_cfgs is not None:
            if len(head_cfgs) != heads:
                raise ValueError(f"head_cfgs must have one entry per head ({heads}), not "
                                 f"{len(head_cfgs)}")
            split = [split_runtime(c) for c in head_cfgs]
            if any(hw != hw_cfg for hw, _ in split):
                raise ValueError("head_cfgs may differ from cfg only in run-time fields "
                                 f"({', '.join(RUNTIME_FIELDS)})")
            per_head = [s for _, s in split]
        if no_et:
            if cfg.front_end != "leopard":
                raise ValueError("no_et applies to the leopard front end only")
            per_head = [{**s, "no_et": 1} for s in per_head]
        write_job(run_dir / "job.npz", k_q, q_q, v_q, valid_len, per_head, check=False)
        (run_dir / "spec.json").write_text(json.dumps({
            "cfg": hw_cfg.to_json(), "simulator": simulator, "build_dir": str(build_dir),
            "waves": bool(waves)}))
        code = _run_worker(run_dir, heads, progress)
        if code != 0:
            keep = True
            raise SimulationError(f"simulation failed: {_failure(run_dir, code)}", run_dir)
        res = read_result(run_dir / "result.npz")
        if waves:
            moved = _move_waves(run_dir, Path(waves_to) if waves_to else build_dir / "top")
            if moved is not None:
                res["waves"] = moved
        return res, build_dir / f"top-{simulator}"
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_worker(run_dir: Path, heads: int, progress) -> int:
    """Run the worker in its own session; kill its whole process group if we leave early."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT)] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    prog = run_dir / "progress.txt"
    shown = -1
    proc = None
    try:
        with open(run_dir / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sim.top_run", str(run_dir), str(os.getpid())],
                cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            try:
                code = proc.wait(_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                code = None
            if progress is not None:
                try:
                    done = int(prog.read_text().split("/")[0])
                except (ValueError, OSError):
                    done = shown
                if done != shown and (code is None or code == 0):
                    shown = done
                    progress(done, heads)
            if code is not None:
                break
    finally:
        if proc is not None and proc.returncode is None:  # unreaped: its group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if code == 0 and progress is not None and shown != heads:
        progress(heads, heads)
    return code


def _failure(run_dir: Path, code: int) -> str:
    err = run_dir / "error.txt"
    if err.is_file():
        return err.read_text(errors="replace").strip()
    try:
        tail = "\n".join((run_dir / "worker.log").read_text(errors="replace").splitlines()[-_LOG_TAIL:])
    except OSError:
        tail = ""
    return f"simulation worker ended with status {code}" + (f"; its log:\n{tail}" if tail else "")


def _move_waves(run_dir: Path, dest: Path) -> str | None:
    for f in sorted(run_dir.glob("*.fst")) + sorted(run_dir.glob("*.vcd")):
        target = dest.with_suffix(f.suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)
        return str(target)
    return None


def _die_with_parent(parent: int) -> None:
    """In the worker (its own process group): on SIGTERM, SIGINT or the parent's death, kill
    the whole group (the simulator with it)."""
    if os.getpgrp() != os.getpid():
        return  # not started by simulate(): never kill a group we do not lead

    def kill_group(*_):
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, kill_group)
    signal.signal(signal.SIGINT, kill_group)
    signal.signal(signal.SIGHUP, kill_group)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the death signal was armed
        kill_group()


def _worker(argv: list[str]) -> int:
    """``python -m sim.top_run RUN_DIR PARENT_PID``: build (or reuse) the top and run the
    job in ``RUN_DIR``; a failure's message goes to ``RUN_DIR/error.txt``."""
    run_dir, parent = Path(argv[0]), int(argv[1])
    _die_with_parent(parent)
    from hw.config import HDPConfig
    from sim.benches.bench_top import JOB_VAR, PROGRESS_VAR, RESULT_VAR
    from sim.runner import run_cocotb

    spec = json.loads((run_dir / "spec.json").read_text())
    try:
        run_cocotb(unit="top", cfg=HDPConfig.from_json(spec["cfg"]),
                   test_module="sim.benches.bench_top", simulator=spec["simulator"],
                   build_dir=spec["build_dir"], waves=spec["waves"], run_dir=run_dir,
                   extra_env={JOB_VAR: run_dir / "job.npz", RESULT_VAR: run_dir / "result.npz",
                              PROGRESS_VAR: run_dir / "progress.txt"})
    except (AssertionError, RuntimeError) as exc:
        (run_dir / "error.txt").write_text(f"{exc}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
