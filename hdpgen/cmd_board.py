"""``hdpgen board``: the self-test harness (:mod:`hw.board`) for an FPGA board.

First the harness runs in cocotb (the UART line must be the golden report: PASS, the golden
checksum, the cycle model's count); only then is the bitstream built with amaranth-boards'
platform and the Yosys / nextpnr-ecp5 / ecppack tools (the YoWASP ones of the virtual
environment when ``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK`` are not set).  ``report.json`` and
``report.md`` in the output folder give the simulated line, resources and Fmax.
"""

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

from .common import CliError, add_config_args, atomic_write, check_output_dir, config_from_args, write_json

__all__ = ["configure", "main", "parse_nextpnr_log", "head_vectors", "simulate_harness"]

SIM_BAUD_DIV = 4
BAUD = 115200


def configure(p: argparse.ArgumentParser) -> None:
    from hw.board.ulx3s import BOARDS
    add_config_args(p, default_preset="tiny")
    p.add_argument("--board", required=True, choices=list(BOARDS), help="target board")
    p.add_argument("-o", "--out", type=Path, metavar="DIR",
                   help="output folder (default: build/<preset>/board-<board>)")
    p.add_argument("--fixture", default="medium", metavar="NAME",
                   help="captured MiniLM fixture (tests/data) whose head the ROM holds, when its "
                        "head_dim matches the configuration (default: medium); otherwise a "
                        "seeded random head")
    p.add_argument("--head", type=int, default=0, metavar="H",
                   help="head index in the fixture (layer-major, default 0)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random head (default 1)")
    p.add_argument("--period", type=float, default=1.0, metavar="SECONDS",
                   help="repeat the self-test this often on the board; 0 = only on button F1 "
                        "(default 1)")
    p.add_argument("--sim", default="verilator", choices=["icarus", "verilator"],
                   help="simulator of the pre-build check (default verilator)")
    p.add_argument("--no-build", dest="build", action="store_false",
                   help="simulate only, build no bitstream")


def head_vectors(cfg, fixture: str, head: int, seed: int):
    """The fixture head when its shape fits ``cfg``, else a seeded random head."""
    from hw.board.vectors import fixture_vectors, random_vectors
    from sim.fixtures import load_fixture
    fx = load_fixture(fixture)
    n, d = fx["q"].shape[1:]
    if d == cfg.head_dim and n <= cfg.seq_len and fx["valid_len"] <= cfg.seq_len:
        return fixture_vectors(cfg, fixture, head), f"fixture {fixture} head {head}"
    return random_vectors(cfg, seed), f"random head (seed {seed})"


def simulate_harness(cfg, vec, simulator: str, build_dir: Path) -> dict:
    """Run the harness in cocotb; the expected line is the golden report.  Returns the lines,
    the expected line, and the cycles; raises ``AssertionError`` on a mismatch."""
    import json

    from hw.board.selftest import LINE_LEN, SelfTest
    from hw.board.vectors import report_line
    from sim.benches.bench_board import JOB_VAR, RESULT_VAR, write_job
    from sim.runner import run_cocotb
    from sim.top_cycles import head_cycles
    cycles = head_cycles(cfg, vec.head, vec.dense)
    line = report_line(True, cycles, vec.checksum)
    build_dir.mkdir(parents=True, exist_ok=True)
    job, result = build_dir / "job.json", build_dir / "result.json"
    budget = (8 * cycles + 20 * len(vec.writes) + 4 * len(vec.rows) * cfg.head_dim + 2000
              + 2 * LINE_LEN * 10 * SIM_BAUD_DIV)
    write_job(job, baud_div=SIM_BAUD_DIV, line=line, timeout_cycles=budget)
    harness = SelfTest(cfg, vec, baud_div=SIM_BAUD_DIV, heartbeat_bit=4)
    run_cocotb(unit=harness, name="board", cfg=cfg, test_module="sim.benches.bench_board",
               simulator=simulator, build_dir=build_dir,
               extra_env={JOB_VAR: job, RESULT_VAR: result})
    return {"expected_line": line, "cycles_model": cycles,
            **json.loads(result.read_text())}


_UTIL = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)")
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz")


def parse_nextpnr_log(text: str) -> dict:
    """Resources (the last "Device utilisation" block) and Fmax per clock (the last report)
    from a nextpnr-ecp5 log."""
    util, fmax = {}, {}
    blocks = text.split("Device utilisation:")
    if len(blocks) > 1:
        for line in blocks[-1].splitlines()[1:]:
            mt = _UTIL.match(line.strip()) or _UTIL.match("Info: " + line.strip())
            if not mt:
                if util:
                    break
                continue
            util[mt.group(1)] = {"used": int(mt.group(2)), "available": int(mt.group(3))}
    for name, mhz in _FMAX.findall(text):
        fmax[name] = float(mhz)
    return {"utilization": util, "fmax_mhz": fmax}


def _tool_env() -> dict:
    env = {}
    venv_bin = Path(sys.executable).parent
    for var, tool in (("YOSYS", "yosys"), ("NEXTPNR_ECP5", "nextpnr-ecp5"),
                      ("ECPPACK", "ecppack")):
        if var in os.environ:
            continue
        for cand in (venv_bin / f"yowasp-{tool}", shutil.which(f"yowasp-{tool}"),
                     shutil.which(tool)):
            if cand and Path(cand).exists():
                env[var] = str(cand)
                break
        else:
            raise CliError(f"{tool} not found: install yowasp-{tool} (pip) or set {var}")
    return env


def build_bitstream(cfg, vec, board: str, period_s: float, out: Path) -> dict:
    from hw.board.selftest import SelfTest
    from hw.board.ulx3s import CLOCK_HZ, BoardTop, board_platform
    try:
        platform_cls = board_platform(board)
    except ImportError as exc:
        raise CliError(str(exc)) from None
    env = _tool_env()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    period = int(period_s * CLOCK_HZ)
    harness = SelfTest(cfg, vec, baud_div=round(CLOCK_HZ / BAUD), period=period)
    t0 = time.monotonic()
    try:
        # prepare, then run the script: build() would also require the board's programmer
        # LUT mapping with ABC instead of synth_ecp5's ABC9: the YoWASP Yosys's ABC9 fails an
        # internal assertion (rtlil.cc, count_id) on this design when it re-integrates the
        # mapped netlist.  synth_ecp5 runs up to its map_luts label, then ABC, then the rest.
        plan = platform_cls(toolchain="Trellis").build(
            BoardTop(harness), name="selftest", do_build=False,
            synth_opts="-run begin:map_luts",
            script_after_synth="abc -lut 4\nclean\nsynth_ecp5 -top selftest -run map_cells:")
        plan.execute_local(str(out / "build"))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    log = (out / "build" / "selftest.tim").read_text(errors="replace")
    bit = out / "build" / "selftest.bit"
    return {"seconds": round(time.monotonic() - t0, 1), "bitstream": str(bit),
            "bitstream_bytes": bit.stat().st_size, "baud": BAUD, "clock_hz": CLOCK_HZ,
            "period_cycles": period, **parse_nextpnr_log(log)}


def _markdown(rep: dict) -> str:
    sim = rep["simulation"]
    lines = [f"# hdpgen board: {rep['board']}, preset {rep['preset']}", "",
             f"Head: {rep['head']}, L = {rep['valid_len']}; golden checksum "
             f"`{rep['checksum']:08X}`, cycle model {sim['cycles_model']}.", "",
             f"Simulated ({sim['simulator']}) UART line: `{sim['lines'][0].strip()}`", ""]
    b = rep.get("build")
    if b:
        lines += [f"Bitstream: `{b['bitstream']}` ({b['bitstream_bytes']} bytes, "
                  f"{b['seconds']} s)", "", "| resource | used | available |", "|---|---|---|"]
        lines += [f"| {k} | {v['used']} | {v['available']} |"
                  for k, v in b["utilization"].items() if v["used"]]
        lines += ["", "| clock | Fmax (MHz) |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in b["fmax_mhz"].items()]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.period < 0:
        raise CliError(f"--period must be >= 0 seconds, not {args.period}")
    out = check_output_dir(args.out or Path("build") / args.preset / f"board-{args.board}")
    vec, head_desc = head_vectors(cfg, args.fixture, args.head, args.seed)
    print(f"simulating the self-test ({args.sim}, {head_desc}) ...", file=sys.stderr)
    try:
        sim = simulate_harness(cfg, vec, args.sim, out / "sim")
    except AssertionError as exc:
        raise CliError(f"self-test simulation failed, no bitstream built:\n{exc}") from None
    sim["simulator"] = args.sim
    print(f"simulated UART line: {sim['lines'][0].strip()}", file=sys.stderr)
    rep = {"board": args.board, "preset": args.preset, "config": cfg.to_dict(),
           "head": head_desc, "valid_len": vec.valid_len, "checksum": vec.checksum,
           "simulation": sim}
    if args.build:
        print("building the bitstream (Yosys, nextpnr-ecp5, ecppack) ...", file=sys.stderr)
        rep["build"] = build_bitstream(cfg, vec, args.board, args.period, out)
    write_json(out / "report.json", rep)
    with atomic_write(out / "report.md", "w") as f:
        f.write(_markdown(rep))
    print(_markdown(rep))
    return 0
