"""What every benchmark script shares: fail loudly, and say where a figure comes from.

* :func:`require` checks, before any work, that the packages a benchmark needs are importable,
  and stops with one ``<script>: error:`` line otherwise (a benchmark run with a Python that
  lacks the project's packages must not limp on or exit 0).
* :func:`run_main` runs a script's ``main`` and turns any exception -- including one raised in
  a worker process or a simulation -- into one ``<script>: error:`` line and exit status 1
  (``--traceback`` prints the whole traceback as well).
* :func:`provenance` records the command line, the git commit and the date of a measurement,
  so that a committed result file (``bench/results/*.json``) says how it was produced.

Standard library only: it must work before the checks it performs.
"""

import datetime
import importlib.util
import platform
import shlex
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["ROOT", "BenchError", "require", "run_main", "provenance", "git_commit"]

ROOT = Path(__file__).resolve().parent.parent
VENV_HINT = "run it with the project's virtual environment: .venv/bin/python"


class BenchError(RuntimeError):
    """A benchmark cannot produce its figures (bad option, failed measurement)."""


def _say_error(name: str, message: str) -> None:
    print(f"{name}: error: {message}", file=sys.stderr, flush=True)


def require(name: str, modules: Iterable[str]) -> None:
    """Exit with status 1 and one line naming the first of ``modules`` that cannot be imported."""
    for mod in modules:
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            _say_error(name, f"Python package {mod!r} is missing ({sys.executable}); {VENV_HINT}")
            raise SystemExit(1)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"ModuleNotFoundError: No module named {exc.name!r}; {VENV_HINT}"
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def run_main(name: str, main: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """``main(argv)``'s exit status; any exception is one error line and status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        _say_error(name, "interrupted")
        return 130
    except Exception as exc:  # every failure, also one re-raised from a worker process
        if show_tb:
            traceback.print_exc()
        _say_error(name, _one_line(exc) + ("" if show_tb else " (--traceback for details)"))
        return 1


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit() -> str | None:
    """The checked-out commit (full hash), or None outside a git checkout."""
    sha = _git("rev-parse", "HEAD")
    return sha.strip() if sha else None


def provenance(script: str, argv: list[str], runtime_s: float | None = None,
               inputs: Iterable[str] = ("hw", "golden", "sim", "bench")) -> dict:
    """How a result was produced: the command, the commit, the date, the Python, and the
    tracked files under ``inputs`` that differed from that commit (empty when the tree was
    clean there; untracked files and the results folder itself do not count)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *inputs,
                  ":(exclude)bench/results")
    return {
        "command": " ".join(["python", script, *map(shlex.quote, argv)]),
        "commit": git_commit(),
        "uncommitted_changes": sorted(line[3:] for line in status.splitlines() if line.strip())
                                if status else [],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "runtime_s": None if runtime_s is None else round(runtime_s, 1),
    }
