"""``hdpgen dse``: a design-space sweep over array size, block shape and pruning mode and level.

For each point of the grid (the Cartesian product of the axes) it measures

* accuracy: the golden model on the data against float attention
  (mean row cosine and relative RMS error), kept block and head fractions;
* cycles: dense and pruned, from the top's cycle model (:mod:`sim.top_cycles`); with
  ``--validate K`` the model is checked against RTL simulation on K points and the worst
  disagreement is reported;
* area and Fmax: synthesis of every unit (:func:`synth.driver.synth_all`, cached).

Points run in parallel on the local cores (``-j``) or, with ``--scheduler tcp://HOST:PORT``,
on an existing Dask distributed cluster (the ``distributed`` package; a worker that dies has
its points rerun on the others).  Either way each finished point is cached under
``OUT/cache/`` by this process (keyed by the configuration and data), so an interrupted sweep
resumes where it stopped, and a sweep started on one resumes on the other.  Writes
``OUT/dse.csv``, ``OUT/dse.json`` and ``OUT/pareto.png`` (speedup against
ECP5 LUTs; with ``--no-synth``, speedup against the relative RMS error of the output).

Data as for ``hdpgen run``: ``--qkv IN.npz``, ``--data NAME`` (a bundled MiniLM fixture,
d = 32) or, by default, the bundled long sentence when it fits the base configuration, else
seeded synthetic data (``--seed``; said on stderr and in ``dse.json``'s rows).  Options,
data and the output folder are checked before any work.

Axes: any configuration field (``--grid prune_mode=topk,threshold``), plus ``array=RxC``,
``block=RxC`` and ``keep=F`` (top-k keeping a fraction F of every block-row's valid blocks:
``k_frac = F``, rounded up to a multiple of 2**-8). A TOML file takes the same axes as lists::

    preset = "default"
    [grid]
    array = ["2x16", "4x8"]
    block = ["2x2"]
    keep = [0.5, 0.75]
"""

import argparse
import concurrent.futures as cf
import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

from .cmd_run import add_data_args, resolve_data
from .common import CliError, add_config_args, atomic_write, check_output_dir, config_from_args, write_json

__all__ = ["configure", "main", "parse_grid", "expand_grid", "evaluate_point"]

COMPOUND = ("array", "block", "keep")


def configure(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--grid", action="append", default=[], metavar="AXIS=V1,V2,...",
                   help="one axis of the grid; repeatable (axes: config fields, array=RxC, "
                        "block=RxC, keep=FRACTION)")
    p.add_argument("--toml", type=Path, help="grid from a TOML file ([grid] table of lists)")
    add_data_args(p)
    p.add_argument("-o", "--out", type=Path, default=Path("build/dse"),
                   help="output folder (default: build/dse)")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="points evaluated in parallel, at least 1 (default: the cores, "
                        f"{os.cpu_count() or 1} here)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run the points on this Dask distributed scheduler's workers instead of "
                        "local processes (start one with 'dask scheduler' and 'dask worker "
                        "tcp://HOST:PORT --nthreads 1' on each machine; see the README)")
    p.add_argument("--no-synth", action="store_true",
                   help="skip area and Fmax (pareto.png then plots speedup against the "
                        "relative RMS error of the output)")
    p.add_argument("--no-fmax", action="store_true", help="area only, no place and route")
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="check the cycle model against RTL simulation on the first K points "
                        "(first 4 heads; writes validate.json)")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="verilator",
                   help="simulator for --validate (default: verilator)")


def _parse_value(v: str):
    v = v.strip()
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false", "on", "off"):
        return v.lower() in ("true", "on")
    return v


def _pair(axis: str, v) -> tuple[int, int]:
    try:
        r, c = str(v).lower().split("x")
        return int(r), int(c)
    except ValueError:
        raise CliError(f"{axis} values must look like RxC (e.g. 4x8), not {v!r}") from None


def parse_grid(items: list[str], toml_path: Path | None) -> tuple[dict, str | None]:
    """Axes from ``--grid`` strings and/or a TOML file: ``{axis: [values]}`` and its preset."""
    grid: dict[str, list] = {}
    preset = None
    if toml_path:
        import tomllib
        try:
            doc = tomllib.loads(Path(toml_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"cannot read grid {toml_path}: {exc}") from None
        preset = doc.get("preset")
        g = doc.get("grid")
        if not isinstance(g, dict) or not g:
            raise CliError(f"{toml_path}: needs a non-empty [grid] table of lists")
        for k, vals in g.items():
            grid[k] = vals if isinstance(vals, list) else [vals]
    for item in items:
        axis, sep, vals = item.partition("=")
        if not sep or not vals:
            raise CliError(f"--grid takes AXIS=V1,V2,..., not {item!r}")
        grid[axis.strip()] = [_parse_value(v) for v in vals.split(",")]
    if not grid:
        raise CliError("give at least one axis with --grid or --toml")
    return grid, preset


def expand_grid(base, grid: dict) -> list[tuple[str, object]]:
    """All points as ``(label, config)``; an invalid combination is a ``CliError`` naming it."""
    from hw.config import K_FRAC_BITS, HDPConfig
    axes = list(grid)
    points = []
    for values in itertools.product(*(grid[a] for a in axes)):
        changes: dict = {}
        keep = None
        for a, v in zip(axes, values):
            if a == "array":
                changes["array_rows"], changes["array_cols"] = _pair(a, v)
            elif a == "block":
                changes["block_rows"], changes["block_cols"] = _pair(a, v)
            elif a == "keep":
                keep = float(v)
                if not 0 < keep <= 1:
                    raise CliError(f"keep must be a fraction in (0, 1], not {v!r}")
            elif a in HDPConfig.field_names():
                changes[a] = v
            else:
                raise CliError(f"unknown grid axis {a!r}; axes are configuration fields and "
                               f"{', '.join(COMPOUND)}")
        label = ",".join(f"{a}={v}" for a, v in zip(axes, values))
        try:
            if keep is not None:
                changes.setdefault("prune_mode", "topk")
                changes["k_frac"] = math.ceil(keep * (1 << K_FRAC_BITS)) / (1 << K_FRAC_BITS)
            cfg = base.replace(**changes)
        except ValueError as exc:
            raise CliError(f"grid point {label}: {exc}") from None
        points.append((label, cfg))
    return points


def _key(cfg, data_tag: str, opts: dict) -> str:
    blob = json.dumps({"cfg": cfg.to_dict(), "data": data_tag, "opts": opts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def evaluate_point(label: str, cfg_dict: dict, data: dict, out: str, synth: bool, fmax: bool) -> dict:
    """One design point (runs in a worker process); ``data`` has float ``q``, ``k``, ``v``,
    ``valid_len`` (int or None) and ``name`` (what the data is, for the row)."""
    from hw.config import HDPConfig
    from sim.top_cycles import head_cycles

    from .accuracy import golden_accuracy
    cfg = HDPConfig.from_dict(cfg_dict)
    vl = data.get("valid_len")
    t0 = time.monotonic()
    ga = golden_accuracy(data["q"], data["k"], data["v"], cfg, vl)
    st = ga["result"]["stats"]
    dense = sum(head_cycles(cfg, h, dense=True) for h in ga["dense_result"]["heads"])
    pruned = sum(head_cycles(cfg, h, dense=False) for h in ga["result"]["heads"])
    row = {"label": label, "array": f"{cfg.array_rows}x{cfg.array_cols}",
           "block": f"{cfg.block_rows}x{cfg.block_cols}", "prune_mode": cfg.prune_mode,
           "k_frac": cfg.k_frac, "rho": cfg.rho, "criterion": cfg.criterion,
           # accuracy of the attention output against float attention (the MiniLM sentence-
           # embedding cosine needs torch: hdpgen eval)
           "attn_cosine": ga["pruned_vs_float"]["mean_cosine"],
           "rel_rms": ga["pruned_vs_float"]["rel_rms"],
           "kept_blocks": st["kept_block_fraction"], "kept_heads": st["kept_head_fraction"],
           "cycles_dense": int(dense), "cycles_pruned": int(pruned),
           "speedup": dense / pruned if pruned else None, "data": data.get("name"),
           "t_golden_s": round(time.monotonic() - t0, 2)}
    if synth:
        from sim.top_run import split_runtime

        from .cmd_run import synthesize_design
        t1 = time.monotonic()
        # one shared cache: points with identical Verilog (run-time settings differ) synthesize
        # once; one job per worker, the sweep already runs a worker per core
        # register reset values are the only difference between points that differ in run-time
        # settings: synthesize all with the canonical ones so such points share one synthesis
        hw_cfg, _ = split_runtime(cfg)
        syn = synthesize_design(hw_cfg, Path(out) / "synth" / _key(hw_cfg, "", {}), ("ecp5",), fmax,
                                jobs=1, cache_dir=Path(out) / "synth-cache")
        tot = syn.get("total", {})
        row.update({"lut": tot.get("ecp5", {}).get("lut"), "ff": tot.get("ecp5", {}).get("ff"),
                    "dsp": tot.get("ecp5", {}).get("dsp"), "bram": tot.get("ecp5", {}).get("bram"),
                    "fmax_mhz": tot.get("fmax_mhz"), "t_synth_s": round(time.monotonic() - t1, 1)})
    return row


def _data_name(data: dict) -> str:
    if data["source"] == "synthetic":
        return f"synthetic, seed {data['seed']}"
    return data["description"]


def main(args: argparse.Namespace) -> int:
    # every option, the data and the output folder are checked before any work
    if args.jobs < 1:
        raise CliError(f"-j/--jobs must be at least 1, not {args.jobs}")
    if args.validate < 0:
        raise CliError(f"--validate must be 0 or more, not {args.validate}")
    check_output_dir(args.out, "output folder (-o)")
    if args.scheduler:
        _check_scheduler_address(args.scheduler)
    return _sweep(args)


SCHEDULER_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://")


def _check_scheduler_address(address: str) -> None:
    if not address.startswith(SCHEDULER_SCHEMES) or not address.split("://", 1)[1]:
        raise CliError(f"--scheduler must look like tcp://HOST:PORT, not {address!r}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CliError("--scheduler needs the 'distributed' package: make setup installs it "
                       "(or pip install 'distributed>=2024.1')") from None


def connect_scheduler(address: str, timeout: float = 10.0):
    """A ``distributed.Client`` of the scheduler at ``address``, or a :class:`CliError`
    naming the address and the reason (bad form, package missing, unreachable, no worker)."""
    _check_scheduler_address(address)
    from distributed import Client
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CliError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    n = len(client.scheduler_info().get("workers", {}))
    if n == 0:
        client.close()
        raise CliError(f"the Dask scheduler at {address} has no workers")
    return client


@contextlib.contextmanager
def _executor(args, client):
    """Local worker processes, or the cluster behind ``client`` (as a concurrent.futures
    executor whose tasks may run anywhere and are rerun when their worker dies)."""
    if client is None:
        with cf.ProcessPoolExecutor(max_workers=args.jobs) as pool:
            yield pool
    else:
        with client.get_executor(pure=False) as pool:
            yield pool


@contextlib.contextmanager
def _client(args, needed: bool):
    client = connect_scheduler(args.scheduler) if args.scheduler and needed else None
    try:
        yield client
    finally:
        if client is not None:
            client.close()


def _sweep(args) -> int:
    if args.validate:
        from sim.runner import simulator_missing
        reason = simulator_missing(args.sim)
        if reason:
            raise CliError(f"--validate needs {args.sim}: {reason}")
    base = config_from_args(args)
    grid, toml_preset = parse_grid(args.grid, args.toml)
    if toml_preset and not args.config and "--preset" not in sys.argv:
        from hw.presets import preset
        try:
            base = preset(toml_preset)
        except ValueError as exc:
            raise CliError(f"{args.toml}: {exc}") from None
    data = resolve_data(base, args.qkv, args.data, args.seed)
    if data["source"] == "synthetic":
        print(f"hdpgen dse: using {data['description']}", file=sys.stderr)
    points = expand_grid(base, grid)
    work_data = {"q": data["q"], "k": data["k"], "v": data["v"], "valid_len": data["valid_len"],
                 "name": _data_name(data)}
    out = args.out
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    opts = {"synth": not args.no_synth, "fmax": not args.no_fmax}
    rows: dict[str, dict] = {}
    todo = []
    for label, cfg in points:
        cp = cache / f"{_key(cfg, data['tag'], opts)}.json"
        if cp.exists():
            rows[label] = json.loads(cp.read_text())
        else:
            todo.append((label, cfg, cp))
    with _client(args, bool(todo)) as client:
        where = (f"{args.jobs} local workers" if client is None else
                 f"{len(client.scheduler_info()['workers'])} workers of {args.scheduler}")
        print(f"hdpgen dse: {len(points)} points, {len(rows)} cached, {len(todo)} to run on {where}",
              file=sys.stderr)
        failures = 0
        with _executor(args, client) as pool:
            futs = {pool.submit(evaluate_point, label, cfg.to_dict(), work_data, str(out),
                                opts["synth"], opts["fmax"]): (label, cp) for label, cfg, cp in todo}
            for i, fut in enumerate(cf.as_completed(futs), 1):
                label, cp = futs[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # a failed point is reported, the sweep goes on
                    failures += 1
                    print(f"  [{i}/{len(todo)}] {label}: FAILED: {exc}", file=sys.stderr)
                    continue
                write_json(cp, row)
                rows[label] = row
                print(f"  [{i}/{len(todo)}] {label}: attention cosine {row['attn_cosine']:.4f}, "
                      f"speedup {row['speedup']:.2f}x", file=sys.stderr)
    ordered = [rows[label] for label, _ in points if label in rows]
    if args.validate:
        from sim.top_cycles import validate_against_rtl
        worst = validate_against_rtl([cfg for label, cfg in points if label in rows][:args.validate],
                                     data, out / "validate", simulator=args.sim)
        print(f"cycle model vs RTL on {args.validate} points: worst disagreement {worst:.2%}")
        write_json(out / "validate.json", {"points": args.validate, "worst_relative_error": worst})
    _write_outputs(ordered, out, synth=opts["synth"])
    _print_table(ordered)
    if data["source"] == "synthetic":
        print(f"Note: these points are measured on {data['description']}.")
    return 1 if failures else 0


def _write_outputs(rows: list[dict], out: Path, synth: bool = True) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_write(out / "dse.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    write_json(out / "dse.json", rows)
    from .plots import plot_pareto
    pts = [dict(r, area=r.get("lut") or 0, label=r["label"]) for r in rows if r.get("speedup")]
    if not pts:
        return
    if synth and any(p["area"] for p in pts):
        plot_pareto(pts, out / "pareto.png", x="area", y="speedup", color="attn_cosine",
                    xlabel="ECP5 LUT4 (whole top)", ylabel="speedup (dense / pruned cycles)",
                    title="Speedup (pruned vs dense cycles) vs ECP5 LUTs,\ncoloured by attention-"
                          "output cosine against float",
                    front_label="Pareto front (fewest LUTs for the speedup)",
                    color_label="attention-output mean row cosine")
    else:
        plot_pareto(pts, out / "pareto.png", x="rel_rms", y="speedup", color="kept_blocks",
                    xlabel="relative RMS error of the attention output against float",
                    ylabel="speedup (dense / pruned cycles)",
                    title="Speedup vs error (no synthesis: --no-synth),\ncoloured by kept "
                          "block fraction",
                    front_label="Pareto front (least error for the speedup)",
                    color_label="kept block fraction")


def _print_table(rows: list[dict]) -> None:
    cols = ["label", "attn_cosine", "kept_blocks", "cycles_dense", "cycles_pruned", "speedup", "lut",
            "ff", "dsp", "fmax_mhz"]
    cols = [c for c in cols if any(c in r for r in rows)]

    def f(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)
    table = [cols] + [[f(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for j, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
