"""Run the RTL co-processor top (``hw.top.Top``) in Icarus or Verilator on quantized heads.

:func:`simulate` is the one entry point every caller uses (``hdpgen simulate``, ``hdpgen run``,
``hdpgen dse --validate``, the cycle model's validation and ``bench/cycles.py``).  The build
directory holds the compiled model and, per call, a private job folder, so calls that share a
build directory never read each other's inputs or results.
"""

import threading
from pathlib import Path

__all__ = ["simulate", "split_runtime", "SimulationError", "RUNTIME_FIELDS", "CANONICAL_RUNTIME"]


class SimulationError(RuntimeError):
    """The simulator ran but the bench failed (a cocotb test failed or the build broke)."""


#: Configuration fields that are AXI4-Lite registers of the top, not elaboration constants.
RUNTIME_FIELDS = ("prune_mode", "k_b", "rho", "head_prune", "tau_head", "approx", "causal")
#: The reset values the simulated top is built with (one build serves every run-time setting).
CANONICAL_RUNTIME = {"prune_mode": "topk", "k_b": 1, "rho": 0.5, "head_prune": False,
                     "tau_head": 0, "approx": "drop_ff", "causal": False}


def split_runtime(cfg) -> tuple:
    """``(hardware configuration, run-time settings)``: the hardware one has the canonical
    register reset values, so the Verilog (and its cached build) does not change with the
    run-time settings; the settings are written to the registers before every head."""
    return cfg.replace(**CANONICAL_RUNTIME), {f: getattr(cfg, f) for f in RUNTIME_FIELDS}


def simulate(cfg, q_q, k_q, v_q, valid_len: int, simulator: str, build_dir: Path, *,
             waves: bool = False, progress=None) -> tuple[dict, Path]:
    """Run every head of quantized (H, N, d) inputs through the RTL top.

    Returns the bench's result arrays (:func:`sim.benches.bench_top.read_result`) and the
    build directory.  ``progress(done, total)`` is called while the simulation runs."""
    from sim.benches.bench_top import JOB_VAR, PROGRESS_VAR, RESULT_VAR, read_result, write_job
    from sim.runner import run_cocotb

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    job, result, prog = (build_dir / "job.npz", build_dir / "result.npz",
                         build_dir / "progress.txt")
    for f in (result, prog):
        f.unlink(missing_ok=True)
    heads = q_q.shape[0]
    hw_cfg, settings = split_runtime(cfg)
    write_job(job, k_q, q_q, v_q, valid_len, [settings] * heads, check=False)
    err: list[BaseException] = []
    box: dict = {}

    def work():
        try:
            box["run"] = run_cocotb(
                unit="top", cfg=hw_cfg, test_module="sim.benches.bench_top", simulator=simulator,
                build_dir=build_dir, waves=waves,
                extra_env={JOB_VAR: job, RESULT_VAR: result, PROGRESS_VAR: prog})
        except BaseException as exc:  # re-raised in the caller's thread
            err.append(exc)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    shown = -1
    while th.is_alive():
        th.join(0.5)
        if progress is not None and prog.is_file():
            try:
                done = int(prog.read_text().split("/")[0])
            except (ValueError, OSError):
                continue
            if done != shown:
                shown = done
                progress(done, heads)
    if err:
        if isinstance(err[0], (AssertionError, RuntimeError)):
            raise SimulationError(f"simulation failed: {err[0]}") from None
        raise err[0]
    if progress is not None and shown != heads:
        progress(heads, heads)
    return read_result(result), box["run"].build_dir
