"""The main job's report: one dict (``report.json``) rendered as Markdown (``report.md``)
and as the text ``hdpgen run`` prints.

Sections are optional so that a partial run (say, ``--no-synth``) still gives a readable
report: a missing section is printed as "not run" with the reason.
"""

from pathlib import Path

from .common import atomic_write, write_json

__all__ = ["render_markdown", "write_report"]


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


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[_fmt(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return out


def _skipped(rep: dict, key: str) -> list[str]:
    why = rep.get("skipped", {}).get(key)
    return [f"_not run: {why}_", ""] if why else ["_not run_", ""]


def render_markdown(rep: dict) -> str:
    cfg = rep.get("config", {})
    lines = [f"# hdpgen report: preset `{rep.get('preset', '?')}`", ""]
    lines += [f"N = {cfg.get('seq_len')}, d = {cfg.get('head_dim')}, Q/K {cfg.get('qk_bits')} bits "
              f"({cfg.get('qk_frac')} fraction), V {cfg.get('v_bits')} ({cfg.get('v_frac')}), "
              f"blocks {cfg.get('block_rows')}x{cfg.get('block_cols')} by `{cfg.get('criterion')}`, "
              f"pruning `{cfg.get('prune_mode')}` (k_b = {cfg.get('k_b')}, rho = {cfg.get('rho')}), "
              f"head pruning {'on' if cfg.get('head_prune') else 'off'}, scores `{cfg.get('approx')}`, "
              f"array {cfg.get('array_rows')}x{cfg.get('array_cols')}.", ""]
    data = rep.get("data")
    if data:
        lines += [f"Data: {data.get('description', '')}", ""]
    regs = rep.get("registers")
    if regs:
        kb = f"k_b = {regs['k_b']}"
        if regs.get("k_b_mode") == "scaled" and regs.get("prune_mode") == "topk":
            kb += (f" (the configured {regs['k_b_configured']} of {cfg.get('seq_len')} / "
                   f"{cfg.get('block_cols')} block columns, scaled to valid_len = {regs['valid_len']})")
        lines += [f"Run-time registers: mode `{regs['prune_mode']}`, {kb}, rho = {regs['rho']}, "
                  f"head pruning {'on' if regs['head_prune'] else 'off'} (tau_head = "
                  f"{regs['tau_head']}), scores `{regs['approx']}`, causal "
                  f"{'on' if regs['causal'] else 'off'}.", ""]

    lines += ["## Accuracy against float attention", ""]
    acc = rep.get("accuracy")
    if acc:
        rows = [[name, v.get("max_abs"), v.get("rel_rms"), v.get("mean_cosine")]
                for name, v in acc.items() if isinstance(v, dict)]
        lines += _table(["output", "max abs error", "relative RMS error", "mean row cosine"], rows) + [""]
    else:
        lines += _skipped(rep, "accuracy")

    lines += ["## Pruning", ""]
    pr = rep.get("pruning")
    if pr:
        rows = [["kept score blocks", pr.get("kept_block_fraction")],
                ["kept score entries", pr.get("kept_entry_fraction")],
                ["kept heads", pr.get("kept_head_fraction")],
                ["fine-pass MACs vs dense", pr.get("mac_fine_vs_dense")]]
        lines += _table(["quantity", "fraction"], rows) + [""]
    else:
        lines += _skipped(rep, "pruning")

    lines += ["## RTL simulation", ""]
    rtl = rep.get("rtl")
    if rtl:
        lines += [f"Simulator: {rtl.get('simulator')}; heads simulated: {rtl.get('heads')}; "
                  f"bit-exact against the golden model: **{_fmt(rtl.get('bit_exact'))}** "
                  f"({rtl.get('mismatched_heads', 0)} heads differ).", ""]
        cyc = rtl.get("cycles")
        if cyc:
            lines += _table(["", "dense", "pruned", "speedup"],
                            [["cycles (all heads)", cyc.get("dense"), cyc.get("pruned"),
                              cyc.get("speedup")]]) + [""]
            per = cyc.get("per_layer")
            if per:
                lines += _table(["layer", "dense cycles", "pruned cycles", "speedup"],
                                [[p["layer"], p["dense"], p["pruned"],
                                  p["dense"] / p["pruned"] if p["pruned"] else None] for p in per]) + [""]
    else:
        lines += _skipped(rep, "rtl")

    lines += ["## Area and Fmax", ""]
    syn = rep.get("synth")
    if syn:
        from synth.report import format_table  # the synthesis table is owned by synth/
        lines += [format_table(syn, "markdown"), ""]
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


def write_report(rep: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    jp, mp = out_dir / "report.json", out_dir / "report.md"
    write_json(jp, rep)
    with atomic_write(mp, "w") as f:
        f.write(render_markdown(rep))
    return jp, mp
