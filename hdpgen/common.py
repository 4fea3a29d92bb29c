"""Pieces every ``hdpgen`` subcommand shares: configuration options and atomic output."""

import argparse
import contextlib
import json
import os
import tempfile
from pathlib import Path

from hw.config import HDPConfig
from hw.presets import preset, preset_names

__all__ = ["CliError", "add_config_args", "config_from_args", "atomic_write", "write_json",
           "check_output_file", "check_output_dir"]


class CliError(Exception):
    """A user error: the command prints it on one line and exits with status 2."""


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset, choices=preset_names(),
                   help=f"named configuration (default: {default_preset})")
    p.add_argument("--config", type=Path, metavar="JSON",
                   help="configuration JSON (as written beside every output); overrides --preset")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration field; repeatable")


def config_from_args(args: argparse.Namespace) -> HDPConfig:
    if getattr(args, "config", None):
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read configuration {args.config}: {exc}") from None
        cfg = HDPConfig.from_dict(data.get("config", data) if isinstance(data, dict) else data)
    else:
        cfg = preset(args.preset)
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--set takes KEY=VALUE, not {item!r}")
        cfg = cfg.with_setting(key.strip(), value.strip())
    return cfg


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb"):
    """Write to a temporary file beside ``path`` and rename it into place only on success,
    so a failure never leaves a half-written output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.write("\n")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _probe_dir(d: Path) -> str | None:
    """Why files cannot be created in the existing directory ``d`` (None when they can).

    Creates and removes a probe file: ``os.access`` says yes to root on a read-only folder."""
    try:
        fd, name = tempfile.mkstemp(dir=d, prefix=".hdpgen-probe-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as a writable directory; None when it can."""
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"{base} is not a directory"
    reason = _probe_dir(base)
    if reason is not None:
        return f"{base} is not writable ({reason})"
    return None


def check_output_dir(path: Path, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` is (or can be made as) a writable directory.

    Raises :class:`CliError` naming ``what``, the path and the reason; creates nothing."""
    path = Path(path)
    problem = _dir_problem(path)
    if problem is not None:
        raise CliError(f"cannot use {what} {path}: {problem}")
    return path


def check_output_file(path: Path, what: str = "output") -> Path:
    """Check, before any work, that the file ``path`` can be written (created or replaced).

    An existing directory at ``path`` or an unwritable folder is a :class:`CliError`."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"cannot write {what} {path}: it is a directory")
    problem = _dir_problem(path.parent)
    if problem is not None:
        raise CliError(f"cannot write {what} {path}: {problem}")
    return path
