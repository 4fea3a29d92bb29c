"""The main job's report: one dict (``report.json``) rendered as Markdown (``report.md``)
and as the text ``hdpgen run`` prints.

Sections are optional so that a partial run (say, ``--no-synth``) still gives a readable
report: a missing section is printed as "not run" with the reason.  Table columns with no
value in any row are left out.
"""

from pathlib import Path

from .common import atomic_write, write_json

__all__ = ["render_markdown", "write_report", "drop_empty_columns"]


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{digits}e}"
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _empty(cell: str) -> bool:
    return cell.strip().rstrip("*") in ("-", "")


def drop_empty_columns(lines: list[str]) -> list[str]:
    """Remove the columns of a Markdown table (``| a | b |`` rows, the second the rule) whose
    body cells are all empty or "-"; other lines pass through unchanged."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        rows = [[c for c in ln.strip().strip("|").split("|")] for ln in lines[i:j]]
        body = rows[2:]
        keep = [c for c in range(len(rows[0]))
                if c == 0 or not body or not all(c < len(r) and _empty(r[c]) for r in body)]
        out += ["|" + "|".join(r[c] for c in keep if c < len(r)) + "|" for r in rows]
        i = j
    return out


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[_fmt(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return drop_empty_columns(out)


def _synth_text(syn: dict) -> list[str]:
    """The synthesis table (owned by :mod:`synth.report`, a role beside every unit) without
    empty columns, then which synthesized unit is each unit of the design card."""
    from hw.units import DESIGN_CARD, DESIGN_CARD_LEOPARD
    from synth.report import format_table
    lines = drop_empty_columns(format_table(syn, "markdown").splitlines())
    units = syn.get("units", {})
    leopard = "leopard_engine" in units
    card = [f"{role} = `{unit}`" for role, unit in
            (DESIGN_CARD_LEOPARD if leopard else DESIGN_CARD).items() if unit in units]
    if leopard:
        card.append("head-pruning detector: none (LeOPArd prunes entries, not heads)")
    if card:
        why = (" (the approximation, exact or drop_ff scores, is the score stage's choice of "
               "operands)" if "score_stage" in units else "")
        lines += ["", "Design-card units: " + ", ".join(card) + why + "."]
    return lines


def _skipped(rep: dict, key: str) -> list[str]:
    why = rep.get("skipped", {}).get(key)
    return [f"_not run: {why}_", ""] if why else ["_not run_", ""]


def _config_changes(rep: dict) -> str:
    from hw.presets import PRESETS
    cfg = rep.get("config") or {}
    base = PRESETS.get(rep.get("preset", ""))
    if base is None or not cfg:
        return ""
    diff = [f"{k} = {v}" for k, v in cfg.items() if base.to_dict().get(k) != v]
    return ("with " + ", ".join(diff)) if diff else ""


def _budget_sentence(regs: dict, cfg: dict) -> str:
    if regs.get("prune_mode") == "mass":
        eps = regs.get("eps")
        return ("each block row keeps the fewest blocks holding 1 - eps of its estimated "
                "softmax mass" + (f", eps = {eps:g}" if eps is not None else " (eps per layer)"))
    if regs.get("prune_mode") != "topk":
        return f"rho = {regs['rho']} (threshold pruning; k_frac is not used)" \
            if regs.get("prune_mode") == "threshold" else "no block pruning"
    kf = regs["k_frac"]
    sentence = (f"top-k keeps k_frac = {kf:g} of the valid blocks of every block row (rounded "
                f"up, the diagonal block included)")
    cols = regs.get("block_cols_of_data")
    if cols and not regs.get("causal"):
        from golden.pruner import row_budget
        from hw.config import K_FRAC_BITS
        k_row = row_budget(round(kf * (1 << K_FRAC_BITS)), cols)
        sentence += f": {k_row} of the {cols} block columns of the data's {regs['valid_len']} tokens"
    return sentence


def render_markdown(rep: dict) -> str:
    cfg = rep.get("config", {})
    folder = rep.get("folder")
    title = f"# hdpgen report: preset `{rep.get('preset', '?')}`"
    changes = _config_changes(rep)
    if changes:
        title += f" {changes}"
    lines = [title, ""]
    if folder and folder != rep.get("preset"):
        lines += [f"Folder `{folder}` (configuration hash {rep.get('config_hash')}; the full "
                  f"configuration is in report.json).", ""]
    lines += [f"N = {cfg.get('seq_len')}, d = {cfg.get('head_dim')}, Q/K {cfg.get('qk_bits')} bits "
              f"({cfg.get('qk_frac')} fraction), V {cfg.get('v_bits')} ({cfg.get('v_frac')}), "
              f"blocks {cfg.get('block_rows')}x{cfg.get('block_cols')} ranked by "
              f"`{cfg.get('criterion')}`, array {cfg.get('array_rows')}x{cfg.get('array_cols')}.", ""]
    data = rep.get("data")
    if data:
        if data.get("source") == "synthetic":
            lines += [f"**Data: {data.get('description', '')}**", ""]
        else:
            lines += [f"Data: {data.get('description', '')}", ""]
    regs = rep.get("registers")
    if regs and regs.get("front_end") == "leopard":
        th = regs.get("leopard_th")
        lines += [f"Front end: LeOPArd (bit-serial scores, early termination); threshold "
                  f"{'per layer (calibration)' if th is None else f'logit >= {th:g}'}; causal "
                  f"{'on' if regs.get('causal') else 'off'}.", ""]
    elif regs:
        lines += [f"Run-time registers: pruning `{regs['prune_mode']}`: {_budget_sentence(regs, cfg)}; "
                  f"head pruning {'on' if regs['head_prune'] else 'off'} (tau_head = "
                  f"{regs['tau_head']}); scores `{regs['approx']}`; causal "
                  f"{'on' if regs['causal'] else 'off'}.", ""]

    lines += ["## Accuracy against float attention", ""]
    steps = rep.get("accuracy_steps")
    acc = rep.get("accuracy")
    if steps:
        lines += ["Each row changes one setting against the row above; the last row is the "
                  "configuration as run.", ""]
        rows = [[s["name"], s["change"], s["metrics"].get("max_abs"), s["metrics"].get("rel_rms"),
                 s["metrics"].get("mean_cosine")] for s in steps]
        lines += _table(["model", "change against the row above", "max abs error",
                         "relative RMS error", "mean row cosine"], rows) + [""]
    elif acc:
        rows = [[name, v.get("max_abs"), v.get("rel_rms"), v.get("mean_cosine")]
                for name, v in acc.items() if isinstance(v, dict)]
        lines += _table(["output", "max abs error", "relative RMS error", "mean row cosine"], rows) + [""]
    else:
        lines += _skipped(rep, "accuracy")

    if rep.get("leopard"):
        lines += leopard_markdown(rep)
        if not (rep["leopard"].get("rtl")):
            lines += ["## RTL simulation", ""] + _skipped(rep, "rtl")
        return _tail(rep, lines)

    lines += ["## Pruning", ""]
    pr = rep.get("pruning")
    if pr:
        rows = [["kept score blocks", pr.get("kept_block_fraction")],
                ["kept score entries", pr.get("kept_entry_fraction")],
                ["kept heads", pr.get("kept_head_fraction")],
                ["fine-pass MACs vs dense", pr.get("mac_fine_vs_dense")]]
        lines += _table(["quantity", "fraction"], rows) + [""]
        lines += _per_layer_accuracy(rep)
    else:
        lines += _skipped(rep, "pruning")

    lines += ["## RTL simulation", ""]
    rtl = rep.get("rtl")
    if rtl:
        lines += [f"Simulator: {rtl.get('simulator')}; heads simulated: {rtl.get('heads')}; "
                  f"bit-exact against the golden model: **{_fmt(rtl.get('bit_exact'))}** "
                  f"({rtl.get('mismatched_heads', 0)} heads differ"
                  + (f", first: {rtl['first_mismatch']}" if rtl.get("first_mismatch") else "")
                  + ").", ""]
        cyc = rtl.get("cycles")
        if cyc:
            lines += _table(["", "dense", "pruned", "speedup"],
                            [["cycles (all simulated heads)", cyc.get("dense"), cyc.get("pruned"),
                              cyc.get("speedup")]]) + [""]
            lines += _per_layer_cycles(cyc.get("per_layer") or [])
    else:
        lines += _skipped(rep, "rtl")
    return _tail(rep, lines)


def _tail(rep: dict, lines: list[str]) -> str:
    """Area and Fmax, plots, stage times and tool versions."""
    lines += ["## Area and Fmax", ""]
    syn = rep.get("synth")
    if syn:
        lines += _synth_text(syn) + [""]
    else:
        lines += _skipped(rep, "synth")

    plots = rep.get("plots")
    if plots:
        lines += ["## Plots", ""] + [f"- `{p}`" for p in plots] + [""]
    t = rep.get("timings")
    if t:
        lines += ["## Stage times", ""]
        lines += _table(["stage", "seconds"], [[k, v] for k, v in t.items()]) + [""]
    v = rep.get("versions")
    if v:
        lines += ["Tools: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)


def _per_layer_accuracy(rep: dict) -> list[str]:
    ph = rep.get("per_head")
    hpl = (rep.get("data") or {}).get("heads_per_layer")
    if not ph or not hpl or len(ph.get("kept_block_fraction", [])) <= hpl:
        return []
    kept, err, err0 = ph["kept_block_fraction"], ph["rel_rms_pruned"], ph["rel_rms_unpruned"]
    rows = []
    for layer in range(-(-len(kept) // hpl)):
        sl = slice(layer * hpl, (layer + 1) * hpl)
        n = len(kept[sl])
        rows.append([layer, sum(kept[sl]) / n, sum(err0[sl]) / n, sum(err[sl]) / n])
    heads = ["layer", "kept blocks", "relative RMS error, no pruning, exact scores",
             "relative RMS error, as configured"]
    intro = "Per layer (golden model, every head; means over the layer's heads)"
    if len({round(r[1], 9) for r in rows}) == 1:  # top-k keeps the same share everywhere
        intro += f"; every layer keeps {_fmt(rows[0][1])} of its blocks"
        heads.pop(1)
        rows = [[r[0], *r[2:]] for r in rows]
    return [intro + ":", ""] + _table(heads, rows) + [""]


def _per_layer_cycles(per: list[dict]) -> list[str]:
    if len(per) <= 1:
        return []
    same = {(p["dense"], p["pruned"]) for p in per}
    if len(same) == 1 and len({p.get("heads") for p in per}) == 1:
        d, p = next(iter(same))
        return [f"Every one of the {len(per)} layers takes the same cycles ({d:,} dense, "
                f"{p:,} pruned): top-k keeps the same number of blocks whatever the data, so "
                f"its work does not depend on it (per-head numbers: per_head.png).", ""]
    return _table(["layer", "heads", "dense cycles", "pruned cycles", "speedup"],
                  [[p["layer"], p.get("heads"), p["dense"], p["pruned"],
                    p["dense"] / p["pruned"] if p["pruned"] else None] for p in per]) + [""]


def write_report(rep: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    jp, mp = out_dir / "report.json", out_dir / "report.md"
    write_json(jp, rep)
    with atomic_write(mp, "w") as f:
        f.write(render_markdown(rep))
    return jp, mp


def leopard_markdown(rep: dict) -> list[str]:
    """The report's LeOPArd section (``rep["leopard"]``): entries, bits, cycles."""
    le = rep.get("leopard")
    if not le:
        return []
    st = le["golden"]
    lines = ["## LeOPArd front end", "",
             f"Threshold: {le['threshold']}. Kept entries {st['kept_fraction']:.3f} of the "
             f"valid ones; bits of k read {st['bits_ratio']:.3f} of all "
             f"({st['bits_per_valid_entry']:.2f} of {le['qk_bits']} per entry; "
             f"{st['early_fraction']:.3f} of the entries stop early).", ""]
    rtl = le.get("rtl")
    if rtl:
        tot = {k: sum(rtl[k]["cycles"]) for k in ("as_run", "no_et", "dense")}
        fe = {k: sum(rtl[k]["fe_cycles"]) for k in ("as_run", "no_et", "dense")}
        rows = [["engine cycles (bit-serial front end)", fe["dense"], fe["no_et"], fe["as_run"],
                 _ratio(fe["no_et"], fe["as_run"])],
                ["top cycles (first input to last output)", tot["dense"], tot["no_et"],
                 tot["as_run"], _ratio(tot["no_et"], tot["as_run"])]]
        hdp = le.get("hdp")
        lines += [f"RTL ({rtl['simulator']}, {rtl['heads']} heads), bit-exact against golden: "
                  f"**{'yes' if rtl['bit_exact'] else 'no'}** ({rtl['mismatched_heads']} heads "
                  f"differ).", ""]
        lines += _table(["cycles, all heads", "dense", "no early termination",
                            "as run", "saved by early termination"], rows) + [""]
        if hdp:
            h_p, h_d = sum(hdp["cycles"]), sum(hdp["cycles_dense"])
            lines += [f"HDP front end on the same heads (same sizes, `{hdp['config']['prune_mode']}`"
                      f" pruning as the default preset; exact cycle model): {h_p} cycles "
                      f"({_ratio(h_d, h_p)} against its dense {h_d}), kept entries "
                      f"{hdp['kept_entry_fraction']:.3f}. LeOPArd as run takes "
                      f"{_ratio(tot['as_run'], h_p)} of HDP's cycles.", ""]
    return lines


def _ratio(a, b) -> str:
    """``a / b`` as ``1.23x``."""
    return f"{a / b:.2f}x" if b else "n/a"
