"""PNG plots of the main job's report and of the design-space sweep (matplotlib, Agg backend;
no screen needed)."""

from pathlib import Path

import numpy as np

__all__ = ["plot_keep_mask", "plot_per_head", "plot_area_by_unit", "plot_pareto"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    tmp.replace(path)
    return path


def plot_keep_mask(attn: np.ndarray, block_keep: np.ndarray, block_rows: int, block_cols: int,
                   path: Path, title: str = "", valid: np.ndarray | None = None) -> Path:
    """Float attention probabilities of one head as a heat map where a block was kept; pruned
    blocks are covered in opaque grey with black hatching; blocks outside the valid region
    (padding, or above the diagonal when causal), when ``valid`` says which, in white."""
    plt = _plt()
    from matplotlib.patches import Patch, Rectangle
    n = attn.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(attn, cmap="viridis", interpolation="nearest", vmin=0, vmax=max(1e-9, attn.max()))
    fig.colorbar(im, ax=ax, label="attention probability (float), kept blocks")
    nbr, nbc = block_keep.shape
    valid = np.ones_like(block_keep, bool) if valid is None else np.asarray(valid, bool)
    n_pruned = n_invalid = 0
    for r in range(nbr):
        for c in range(nbc):
            x0, y0 = c * block_cols - 0.5, r * block_rows - 0.5
            w = min(block_cols, n - c * block_cols)
            h = min(block_rows, n - r * block_rows)
            if w <= 0 or h <= 0 or block_keep[r, c]:
                continue
            if not valid[r, c]:
                n_invalid += 1
                ax.add_patch(Rectangle((x0, y0), w, h, facecolor="white", edgecolor="none"))
            else:
                n_pruned += 1
                ax.add_patch(Rectangle((x0, y0), w, h, facecolor="#c8c8c8", edgecolor="black",
                                       hatch="////", lw=0))
    handles = [Patch(facecolor=plt.get_cmap("viridis")(0.6), label="kept block (heat map)"),
               Patch(facecolor="#c8c8c8", edgecolor="black", hatch="////", label="pruned block")]
    if n_invalid:
        handles.append(Patch(facecolor="white", edgecolor="black", label="not computed (masked)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(handles),
              fontsize=8, frameon=False)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    kept = int(block_keep.sum())
    ax.set_title(title or f"{kept} of {int(valid.sum())} blocks kept; pruned blocks grey, hatched",
                 fontsize=10)
    return _save(fig, path)


def plot_per_head(kept: list[float], rel_rms_pruned: list[float], rel_rms_unpruned: list[float],
                  path: Path, heads_per_layer: int | None = None,
                  cycles_dense: list[int] | None = None, cycles_pruned: list[int] | None = None,
                  title: str = "Per head") -> Path:
    """One column per head (layers separated by lines): the kept block fraction (in the title
    when every head keeps the same share, as top-k does), the relative RMS error of the output
    against float attention (pruned and unpruned) and, when the RTL ran, the cycles (dense and
    pruned) of the simulated heads."""
    plt = _plt()
    n = len(kept)
    same_kept = len({round(float(f), 9) for f in kept}) == 1
    if same_kept:  # top-k: one number, not a panel of equal bars
        title += f" (every head keeps {float(kept[0]):.0%} of its blocks)"
    rows = (1 if same_kept else 2) + (1 if cycles_pruned else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(max(7.0, 0.11 * n + 3), 2.3 * rows + 0.6),
                             sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    panels = iter(axes)
    x = np.arange(n)
    axes[0].set_title(title)
    if not same_kept:
        ax = next(panels)
        ax.bar(x, kept, 0.8, color="#1f77b4")
        ax.set_ylabel("kept block\nfraction")
        ax.set_ylim(0, 1.05)
    ax = next(panels)
    ax.plot(x, rel_rms_unpruned, "o-", ms=3, lw=1, color="#888888", label="no pruning, exact scores")
    ax.plot(x, rel_rms_pruned, "o-", ms=3, lw=1, color="#d62728", label="as configured")
    ax.set_ylabel("relative RMS error\nvs float attention")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    if cycles_pruned:
        ax = next(panels)
        m = len(cycles_pruned)
        ax.bar(x[:m], cycles_pruned, 0.8, color="#1f77b4", label="pruned")
        if cycles_dense:
            ax.hlines(cycles_dense[:m], x[:m] - 0.45, x[:m] + 0.45, color="black", lw=2,
                      label="dense")
        ax.set_ylabel("RTL cycles")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        if m < n:
            ax.text(m, 0, f"  heads {m}..{n - 1} not simulated", fontsize=8, va="bottom")
    hpl = heads_per_layer or n
    for ax in axes:
        for b in range(hpl, n, hpl):
            ax.axvline(b - 0.5, color="black", lw=0.5, alpha=0.5)
    if hpl < n:
        ticks = np.arange(0, n, hpl) + (hpl - 1) / 2
        axes[-1].set_xticks(ticks, [f"layer {i}" for i in range(len(ticks))])
        axes[-1].set_xlabel(f"head ({hpl} per layer, in layer order)")
    else:
        axes[-1].set_xlabel("head")
    axes[-1].set_xlim(-0.6, n - 0.4)
    return _save(fig, path)


def plot_area_by_unit(units: list[str], luts: list[int], ffs: list[int], path: Path,
                      title: str = "Area by unit (ECP5)", roles: list[str] | None = None) -> Path:
    """Horizontal bars on a log scale with the count on every bar; the top (the whole design)
    is drawn first and set apart from the units it contains.  Each unit is labelled with its
    name and, below it, its role (``roles``; default :func:`hw.units.unit_role`)."""
    import textwrap

    from hw.units import unit_role
    plt = _plt()
    roles = [unit_role(u) for u in units] if roles is None else list(roles)
    order = sorted(range(len(units)), key=lambda i: (units[i] != "top", -luts[i]))
    units = [units[i] for i in order]
    roles = [roles[i] for i in order]
    luts = [luts[i] for i in order]
    ffs = [ffs[i] for i in order]
    labels = ["top (whole design)" if u == "top" else
              f"{u}\n{textwrap.fill(r, 34)}" if r else u for u, r in zip(units, roles)]
    fig, ax = plt.subplots(figsize=(7.5, 0.75 * len(units) + 1.6))
    y = np.arange(len(units), dtype=float)
    if "top" in units and len(units) > 1:
        y[1:] += 0.6  # a gap between the whole design and its units
    for off, vals, lab, col in ((-0.2, luts, "LUT4", "#1f77b4"), (0.2, ffs, "flip-flops", "#ff7f0e")):
        plotted = [max(v, 0.8) if v else 0.8 for v in vals]  # a 0 still shows as a stub
        bars = ax.barh(y + off, plotted, 0.4, label=lab, color=col)
        for b, v in zip(bars, vals):
            ax.text(b.get_width() * 1.08, b.get_y() + b.get_height() / 2, f"{v:,}",
                    va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(0.8, max([1, *luts, *ffs]) * 6)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    if "top" in units and len(units) > 1:
        ax.axhline(0.8, color="black", lw=0.6)
    ax.set_xlabel("count (log scale)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_pareto(points: list[dict], path: Path, x: str = "area", y: str = "speedup",
                color: str = "cosine", title: str = "Design space: speedup vs area",
                xlabel: str | None = None, ylabel: str | None = None,
                front_label: str = "Pareto front (smallest x for the y)",
                color_label: str | None = None) -> Path:
    """Scatter of design points, coloured by ``color``, with the Pareto front (max y, min x)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = np.array([p[x] for p in points], float)
    ys = np.array([p[y] for p in points], float)
    cs = np.array([p[color] for p in points], float)
    sc = ax.scatter(xs, ys, c=cs, cmap="RdYlGn", s=60, edgecolors="black")
    fig.colorbar(sc, ax=ax, label=color_label or color)
    order = np.lexsort((-ys, xs))
    front, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    ax.plot(xs[front], ys[front], "k--", lw=1)
    ax.scatter(xs[front], ys[front], s=220, facecolors="none", edgecolors="black", lw=1.5,
               label=front_label)
    for p, xi, yi in zip(points, xs, ys):
        ax.annotate(p.get("label", ""), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.margins(x=0.2, y=0.1)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
