"""``hdpgen``: one console command for generate, golden, simulate, synth, eval and run.

Each subcommand lives in its own module ``hdpgen.cmd_<name>`` with ``configure(parser)`` and
``main(args) -> int``; modules load only when their command runs, so ``hdpgen golden``
never imports torch or a simulator.
"""

import argparse
import importlib
import sys

from .common import CliError

__all__ = ["main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "golden": ("hdpgen.cmd_golden", "run the bit-exact golden model on Q, K, V from an .npz"),
    "generate": ("hdpgen.cmd_generate", "write a unit's (or the top's) Verilog and JSON"),
    "simulate": ("hdpgen.cmd_simulate", "run the RTL top in Icarus or Verilator on Q, K, V"),
    "synth": ("hdpgen.cmd_synth", "synthesize units with Yosys, place and route with nextpnr"),
    "run": ("hdpgen.cmd_run", "the main job: generate, simulate, synthesize and report"),
    "dse": ("hdpgen.cmd_dse", "design-space sweep: accuracy, cycles, area, Fmax"),
    "capture": ("hdpgen.cmd_capture", "capture per-layer Q, K, V of all-MiniLM-L6-v2 (extra 'eval')"),
    "eval": ("hdpgen.cmd_eval", "accuracy of the pruned golden model inside all-MiniLM-L6-v2 (extra 'eval')"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in COMMANDS.items()
            if importlib.util.find_spec(spec[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hdpgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (modname, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(modname)
        mod.configure(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except (CliError, ValueError) as exc:
        print(f"hdpgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hdpgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
