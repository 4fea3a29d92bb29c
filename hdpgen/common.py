"""Pieces every ``hdpgen`` subcommand shares: configuration options and atomic output."""

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from hw.config import HDPConfig
from hw.presets import preset, preset_names

__all__ = ["CliError", "add_config_args", "config_from_args", "atomic_write", "write_json",
           "check_output_file", "check_output_dir", "write_files_atomically", "settings_listing",
           "same_file"]


class CliError(Exception):
    """A user error: the command prints it on one line and exits with status 2."""


AUTO_NOTE = ("qk_frac=auto / v_frac=auto (hdpgen golden and simulate only): the largest fraction "
             "width at which the valid tokens' Q and K (one F shared by both) / V do not clip")


def settings_listing() -> str:
    """Every configuration key with its type, its value in each preset and its rule, generated
    from :class:`hw.config.HDPConfig` (``--list-settings`` of every command)."""
    from hw.presets import PRESETS

    rows = [(d["name"], d["type"], *(str(getattr(p, d["name"])) for p in PRESETS.values()),
             d["rule"]) for d in HDPConfig.describe()]
    head = ("key", "type", *PRESETS, "rule")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]

    def line(r):
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]

    out = ["Configuration keys, for --set KEY=VALUE and for a --config JSON object (partial or",
           "full; keys it omits come from --preset).  Every value is checked against its rule",
           "after all of --preset, --config and --set are applied, so their order does not matter.",
           f"The columns {', '.join(PRESETS)} give each preset's value (--preset NAME).",
           "", line(head)]
    out += [line(r) for r in rows]
    out += ["", "Meaning:"]
    out += [f"  {d['name']}: {d['doc']}" for d in HDPConfig.describe()]
    out += ["", "Values: integers may be written 0x10; booleans as true/false, 1/0, on/off, yes/no.",
            AUTO_NOTE + "."]
    return "\n".join(out) + "\n"


class _ListSettings(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(settings_listing())
        parser.exit(0)


CONFIG_HELP = ("configuration JSON object: a full one (such as the OUT.json written beside every "
               "output, whose 'config' is used) or a partial one holding only the keys to change; "
               "keys it omits come from --preset. --set applies on top")


def add_config_args(p: argparse.ArgumentParser, default_preset: str = "default") -> None:
    p.add_argument("--preset", default=default_preset, choices=preset_names(),
                   help=f"named configuration (default: {default_preset})")
    p.add_argument("--config", type=Path, metavar="JSON", help=CONFIG_HELP)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration key; repeatable, applied together "
                        "(--list-settings shows every key)")
    p.add_argument("--list-settings", action=_ListSettings,
                   help="list every configuration key with its type, preset values and rule "
                        "(and qk_frac=auto), then exit")
    epilog = ("Configuration keys for --set and --config: see --list-settings (every key, its "
              "type, its value in each preset and its rule).")
    p.epilog = f"{p.epilog}\n\n{epilog}" if p.epilog else epilog


def _read_config_file(path: Path) -> dict:
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise CliError(f"cannot read configuration {path}: it is a directory") from None
    except OSError as exc:
        raise CliError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read configuration {path}: not UTF-8 text (byte "
                       f"0x{raw[exc.start]:02x} at offset {exc.start}); expected a JSON "
                       f"object") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"cannot read configuration {path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # an OUT.json / report written by hdpgen
    if not isinstance(data, dict):
        raise CliError(f"configuration {path} must hold a JSON object, not "
                       f"{type(data).__name__}")
    return data


def config_from_args(args: argparse.Namespace) -> HDPConfig:
    """The configuration of ``--preset``, then the (possibly partial) ``--config`` JSON, then
    every ``--set``: all raw values are merged first and the result is validated once, so the
    order of the options never matters.  Unknown keys name the key and list the valid ones."""
    base = preset(getattr(args, "preset", None) or "default")
    changes: dict = {}
    if getattr(args, "config", None):
        data = _read_config_file(args.config)
        try:
            HDPConfig._check_keys(data, f"configuration {args.config}: ")
        except ValueError as exc:
            raise CliError(str(exc)) from None
        changes.update(data)
    items = getattr(args, "settings", None) or []
    for item in items:
        key, _, value = item.partition("=")
        if key.strip() in ("qk_frac", "v_frac") and value.strip().lower() == "auto":
            raise CliError(f"{key.strip()}=auto works only in hdpgen golden and simulate (it is "
                           f"chosen from the input data); give a number here")
    changes.update(HDPConfig.parse_settings(items))
    return base.merged(changes)


def _final_mode(path: Path) -> int:
    """Mode for a file about to be written at ``path``: an existing file's own mode, else the
    usual ``0o666 & ~umask`` of a newly created file (not mkstemp's 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (no window in which
    another thread would create files with a different mask)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb"):
    """Write to a temporary file beside ``path`` and rename it into place only on success,
    so a failure never leaves a half-written output.  The file gets the usual permissions
    (``0o666 & ~umask``; a replaced file keeps its own mode)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_files_atomically(files: dict) -> None:
    """Write several files (``{path: bytes}``) all or none: every file is first written in full
    to a temporary beside its destination; only then are they renamed into place, and if a
    rename fails the destinations already replaced get their previous contents back (or are
    removed when they did not exist).  An error therefore never removes or changes an
    existing output."""
    staged: list[tuple[Path, str]] = []
    backups: list[tuple[Path, str | None]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((path, tmp))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, _final_mode(path))
        for path, _ in staged:  # keep the old contents reachable until every rename succeeded
            bak = None
            if path.is_file():
                bak = f"{path.parent}/.{path.name}.{os.getpid()}.bak"
                try:
                    os.link(path, bak)
                except OSError:
                    shutil.copy2(path, bak)
            backups.append((path, bak))
        done: list[Path] = []
        try:
            for path, tmp in staged:
                os.replace(tmp, path)
                done.append(path)
        except BaseException:
            for path, bak in backups:
                if path in done:
                    with contextlib.suppress(OSError):
                        if bak is None:
                            os.unlink(path)
                        else:
                            os.replace(bak, path)
            raise
    finally:
        for _, tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for _, bak in backups:
            if bak is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(bak)


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


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (same resolved path, or the same inode
    through a link)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
