"""Tables from synthesis results (the dict :func:`synth.driver.synth_all` returns / writes as JSON).

:func:`format_table` gives plain text (for the terminal) or Markdown (for ``report.md``);
:func:`summary` gives the totals and the pruning logic's share as numbers, for the main
job's ``report.json`` and plots.  Every row names the unit and its role in the design
(:data:`hw.units.ROLES`: e.g. ``score_stage`` is the approximation unit).
"""

from collections.abc import Callable
from typing import Any

from hw.units import unit_names, unit_role

__all__ = ["PRUNING_UNITS", "COLUMNS", "unit_row", "ecp5_logic", "summary", "format_table"]

#: the units the top instantiates only for pruning (HDP's integer pass, head decision and
#: both block pruners: top-k / threshold and probability mass, the default mode).  The
#: approximation (exact or drop_ff scores) is the operand choice of the score stage, whose
#: fine scores the array computes for every kept block: not pruning logic.
PRUNING_UNITS = ("score_unit", "head_detector", "block_pruner", "mass_pruner")


def _get(res: dict[str, Any], stage: str, key: str) -> Any:
    part = res.get(stage)
    if not isinstance(part, dict) or "error" in part:
        return None
    return part.get(key)


def _seconds(res: dict[str, Any]) -> float | None:
    parts = [res[s] for s in ("generic", "ecp5", "ice40", "fmax") if isinstance(res.get(s), dict)]
    if not parts:
        return None
    return round(sum(float(p.get("seconds", 0.0)) for p in parts), 1)


#: (header, key in unit_row, how the total is formed: "sum", "min" or None)
COLUMNS: list[tuple[str, str, str | None]] = [
    ("unit", "unit", None),
    ("role", "role", None),
    ("cells", "cells", "sum"),
    ("transistors", "transistors", "sum"),
    ("ECP5 LUT4", "ecp5_lut4", "sum"),
    ("CCU2C", "ecp5_carry", "sum"),
    ("FF", "ecp5_ff", "sum"),
    ("DSP", "ecp5_dsp", "sum"),
    ("EBR", "ecp5_bram", "sum"),
    ("iCE40 LUT4", "ice40_lut4", "sum"),
    ("CARRY", "ice40_carry", "sum"),
    ("FF ", "ice40_ff", "sum"),
    ("MAC16", "ice40_dsp", "sum"),
    ("RAM4K", "ice40_bram", "sum"),
    ("Fmax MHz", "fmax_mhz", "min"),
    ("time s", "seconds", "sum"),
]


def unit_row(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """One unit's role and numbers, flat (``None`` where a stage did not run or failed)."""
    return {
        "unit": name,
        "role": unit_role(name),
        "cells": _get(res, "generic", "cells"),
        "transistors": _get(res, "generic", "transistors"),
        "ecp5_lut4": _get(res, "ecp5", "lut4"),
        "ecp5_carry": _get(res, "ecp5", "carry"),
        "ecp5_ff": _get(res, "ecp5", "ff"),
        "ecp5_dsp": _get(res, "ecp5", "dsp"),
        "ecp5_bram": _get(res, "ecp5", "bram"),
        "ecp5_lutram": _get(res, "ecp5", "lutram"),
        "ice40_lut4": _get(res, "ice40", "lut4"),
        "ice40_carry": _get(res, "ice40", "carry"),
        "ice40_ff": _get(res, "ice40", "ff"),
        "ice40_dsp": _get(res, "ice40", "dsp"),
        "ice40_bram": _get(res, "ice40", "bram"),
        "fmax_mhz": _get(res, "fmax", "fmax_mhz"),
        "seconds": _seconds(res),
        "fmax_dsp_in_luts": bool(_get(res, "fmax", "dsp_in_luts")),
        "errors": {s: res[s]["error"] for s in ("generic", "ecp5", "ice40", "fmax")
                   if isinstance(res.get(s), dict) and "error" in res[s]}
        | ({"export": res["error"]} if "error" in res else {}),
    }


def _combine(values: list[Any], how: str | None) -> Any:
    vals = [v for v in values if v is not None]
    if how is None or not vals:
        return None
    return min(vals) if how == "min" else sum(vals)


def _share(part: Any, whole: Any) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def ecp5_logic(row: dict[str, Any]) -> int | None:
    """ECP5 logic cells of a :func:`unit_row`: LUT4 + CCU2C, the measure of the pruning share
    (``None`` when ECP5 synthesis did not run or failed)."""
    if row.get("ecp5_lut4") is None:
        return None
    return row["ecp5_lut4"] + (row.get("ecp5_carry") or 0)


def _pruning_units_built(data: dict[str, Any]) -> list[str]:
    """The pruning units the configuration's top instantiates (:func:`hw.units.unit_names`);
    all of them when the data carries no configuration this version can read."""
    from hw.config import HDPConfig
    try:
        built = unit_names(HDPConfig.from_dict(data["config"]))
    except (KeyError, TypeError, ValueError):
        return list(PRUNING_UNITS)
    return [u for u in PRUNING_UNITS if u in built]


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """Rows per unit, their total, and the pruning logic's share of the whole.

    The total sums every unit except ``top`` (Fmax: the minimum).  The share's denominator is
    ``top`` when it was synthesized (it contains the other units) and the total otherwise;
    the share is reported for ECP5 logic (LUT4 + CCU2C), ECP5 flip-flops and transistors,
    and for ECP5 logic also unit by unit (``ecp5_logic_by_unit``).
    """
    units = data.get("units", {})
    rows = [unit_row(n, r) for n, r in units.items()]
    parts = [r for r in rows if r["unit"] != "top"]
    total = {"unit": "total (units)" if any(r["unit"] == "top" for r in rows) else "total",
             "role": ""}
    for _, key, how in COLUMNS[2:]:
        total[key] = _combine([r[key] for r in parts], how)
    top = next((r for r in rows if r["unit"] == "top"), None)
    whole = top if top is not None else total
    prune = [r for r in rows if r["unit"] in PRUNING_UNITS]

    def psum(fn: Callable[[dict[str, Any]], Any]) -> Any:
        vals = [fn(r) for r in prune]
        return None if not vals or any(v is None for v in vals) else sum(vals)

    share = {
        "units": [r["unit"] for r in prune],
        "missing": [u for u in _pruning_units_built(data) if u not in units],
        "relative_to": "top" if top is not None else "total of units",
        "ecp5_logic": _share(psum(ecp5_logic), ecp5_logic(whole)),
        # each pruning unit's own part of the ECP5 logic share (where the share comes from)
        "ecp5_logic_by_unit": {r["unit"]: _share(ecp5_logic(r), ecp5_logic(whole))
                               for r in prune},
        "ecp5_ff": _share(psum(lambda r: r["ecp5_ff"]), whole.get("ecp5_ff")),
        "transistors": _share(psum(lambda r: r["transistors"]), whole.get("transistors")),
    }
    return {"rows": rows, "total": total, "pruning_share": share}


def _fmt(v: Any, key: str) -> str:
    if v is None:
        return "-"
    if key == "fmax_mhz":
        return f"{v:.1f}"
    if key == "seconds":
        return f"{v:.1f}"
    return str(v)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _use(pair: list[int]) -> str:
    used, avail = pair
    return f"{used:,}/{avail:,} ({100 * used / avail:.0f}%)"


def format_table(data: dict[str, Any], fmt: str = "text") -> str:
    """The per-unit table with a total row and a line on the pruning logic's share.

    ``fmt`` is ``"text"`` (aligned columns) or ``"markdown"``.
    """
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be one of text, markdown, not {fmt!r}")
    s = summary(data)
    heads = [h.strip() for h, _, _ in COLUMNS]
    body = [[_fmt(r[k], k) + ("*" if k == "fmax_mhz" and r["fmax_dsp_in_luts"] else "")
             for _, k, _ in COLUMNS] for r in s["rows"]]
    if len(s["rows"]) > 1:
        body.append([_fmt(s["total"][k], k) for _, k, _ in COLUMNS])
    lines: list[str] = []
    if fmt == "markdown":
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "|".join([":---", ":---"] + ["---:"] * (len(heads) - 2)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        group = ("", "", "generic", "", "ECP5", "", "", "", "", "iCE40", "", "", "", "", "ECP5", "")
        widths = [max(len(h), len(g), *(len(row[i]) for row in body))
                  for i, (h, g) in enumerate(zip(heads, group))]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines.append(line(list(group)))
        lines.append(line(heads))
        lines.append("  ".join("-" * w for w in widths))
        for i, row in enumerate(body):
            if i == len(s["rows"]) and len(s["rows"]) > 1:
                lines.append("  ".join("-" * w for w in widths))
            lines.append(line(row))
    lines.append("")
    sh = s["pruning_share"]
    if sh["units"]:
        missing = f"; not synthesized: {', '.join(sh['missing'])}" if sh["missing"] else ""
        parts = [f"{_pct(sh['ecp5_logic'])} of ECP5 logic (LUT4 + CCU2C)",
                 f"{_pct(sh['ecp5_ff'])} of ECP5 flip-flops"]
        if sh["transistors"] is not None:  # only when the generic flow ran
            parts.append(f"{_pct(sh['transistors'])} of transistors")
        lines.append(f"Pruning logic ({' + '.join(sh['units'])}{missing}) relative to "
                     f"{sh['relative_to']}: {', '.join(parts)}.")
        by_unit = sh["ecp5_logic_by_unit"]
        if len(by_unit) > 1 and None not in by_unit.values():
            lines.append("Its ECP5 logic by unit: "
                         + ", ".join(f"{u} {_pct(x)}" for u, x in by_unit.items()) + ".")
    dev = data.get("device") or {}
    if data.get("fmax", True) and dev:
        lines.append(f"Fmax: nextpnr-ecp5, {dev.get('part')} speed {dev.get('speed')}, out of context, "
                     f"clock constrained to {data.get('fmax_target_mhz', 0):g} MHz; total = slowest unit.")
    if any(r["fmax_dsp_in_luts"] for r in s["rows"]):
        lines.append(f"* more multipliers than the {dev.get('part', 'device')}'s DSP blocks: Fmax measured "
                     "with multipliers in LUTs (synth_ecp5 -nodsp).")
    if data.get("ecp5_dsp_min_width") is not None:
        lines.append(f"ECP5 DSP: products of at least {data['ecp5_dsp_min_width']} bits in "
                     "MULT18X18D, narrower ones in LUT logic.")
    fit = (data.get("total") or {}).get("ecp5_fit")
    if fit and (data.get("total") or {}).get("of") == "top":
        lines.append(f"Top on the {fit.get('part', 'device')}: {_use(fit['lut4'])} LUT4 sites "
                     f"(LUT4 + 2 per CCU2C + 6 per DPR16X4), {_use(fit['ff'])} FF, "
                     f"{_use(fit['dsp'])} MULT18X18D, {_use(fit['bram'])} DP16KD: "
                     f"{'fits' if fit['fits'] else 'does not fit'}.")
    if any(r[k] is not None for r in s["rows"] for _, k, _ in COLUMNS if k.startswith("ice40")):
        lines.append("iCE40 MAC16 assumes an UltraPlus part (synth_ice40 -dsp); RAM4K = "
                     "SB_RAM40_4K.")
    lines.append("EBR = DP16KD; time = tool seconds when first measured.")
    errs = [(r["unit"], st, msg) for r in s["rows"] for st, msg in r["errors"].items()]
    for unit, st, msg in errs:
        lines.append(f"error: {unit} {st}: {msg.splitlines()[0] if msg else ''}")
    if fmt == "markdown":
        lines = [ln if ln.startswith("|") or not ln else ln + "  " for ln in lines]
    return "\n".join(lines).rstrip() + "\n"
