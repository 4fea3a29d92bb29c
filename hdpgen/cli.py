"""The ``hdpgen`` console command.

Each subcommand lives in its own module ``hdpgen.cmd_<name>`` with ``configure(parser)`` and
``main(args) -> int``; modules load only when their command runs, so ``hdpgen golden``
never imports torch or a simulator.  A user error (:class:`hdpgen.common.CliError` or a
``ValueError`` from the configuration) prints one line and exits with status 2; an
interruption exits with status 130.
"""

import argparse
import importlib
import sys

from . import __version__
from .common import CliError

__all__ = ["main", "build_parser", "COMMANDS"]

#: name -> (module, one-line help), in the order a new user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("hdpgen.cmd_run", "the main job: generate, simulate, synthesize and report"),
    "generate": ("hdpgen.cmd_generate", "write a unit's (or the top's) Verilog and JSON"),
    "golden": ("hdpgen.cmd_golden", "run the bit-exact golden model on Q, K, V from an .npz"),
    "simulate": ("hdpgen.cmd_simulate", "run the RTL top in Icarus or Verilator on Q, K, V"),
    "synth": ("hdpgen.cmd_synth", "synthesize units with Yosys, place and route with nextpnr"),
    "board": ("hdpgen.cmd_board",
              "FPGA self-test: simulate the harness, then build its bitstream (needs: board extra)"),
    "dse": ("hdpgen.cmd_dse", "design-space sweep: accuracy, cycles, area, Fmax, Pareto front"),
    "capture": ("hdpgen.cmd_capture",
                "capture per-layer Q, K, V of all-MiniLM-L6-v2 (needs: make setup-eval)"),
    "eval": ("hdpgen.cmd_eval",
             "accuracy of the pruned model inside all-MiniLM-L6-v2 (needs: make setup-eval)"),
    "calibrate": ("hdpgen.cmd_calibrate",
                  "per-layer pruning values for a target embedding cosine (needs: make setup-eval)"),
    "capture-decoder": ("hdpgen.cmd_capture_decoder",
                        "capture decode-step q and KV caches of SmolLM2-135M "
                        "(needs: make setup-decoder)"),
    "decode": ("hdpgen.cmd_decode",
               "Token-Picker decode steps (golden, optionally the RTL engine) on a capture"),
    "eval-decoder": ("hdpgen.cmd_eval_decoder",
                     "perplexity of SmolLM2-135M, dense vs Token-Picker pruned "
                     "(needs: make setup-decoder)"),
}

DESCRIPTION = """\
Generate verified RTL for transformer-attention accelerators that prune attention
dynamically (HDP: integer score estimates, block and head pruning), check it bit for bit
against the NumPy golden model in Icarus or Verilator, and measure cycles, area and Fmax."""

EPILOG = """\
Every command takes --preset tiny|odd|default, --config FILE.json and repeated
--set KEY=VALUE; 'hdpgen COMMAND --help' lists its options and every configuration key.

examples:
  hdpgen run                                    the main job on the default configuration
  hdpgen golden --qkv in.npz --out out.npz      golden model on your Q, K, V
  hdpgen simulate --qkv in.npz --sim verilator --out rtl.npz --compare
  hdpgen generate --unit top --preset tiny -o verilog/"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Command names up to 15 characters (capture-decoder) keep their help on the same line."""

    def _format_action(self, action):
        self._action_max_length = max(self._action_max_length, 19)
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hdpgen", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"hdpgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    for name, (modname, help_) in COMMANDS.items():
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
