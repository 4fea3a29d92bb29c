"""PNG plots of the main job's report (matplotlib, Agg backend; no screen needed)."""

from pathlib import Path

import numpy as np

__all__ = ["plot_keep_mask", "plot_cycles_per_layer", "plot_area_by_unit", "plot_pareto"]


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
    tmp.replace(path)
    return path


def plot_keep_mask(attn: np.ndarray, block_keep: np.ndarray, block_rows: int, block_cols: int,
                   path: Path, title: str = "") -> Path:
    """Float attention probabilities of one head as a heat map, pruned blocks greyed out and
    kept blocks outlined."""
    plt = _plt()
    from matplotlib.patches import Rectangle
    n = attn.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.4))
    im = ax.imshow(attn, cmap="viridis", interpolation="nearest", vmin=0, vmax=max(1e-9, attn.max()))
    fig.colorbar(im, ax=ax, label="attention probability (float)")
    nbr, nbc = block_keep.shape
    for r in range(nbr):
        for c in range(nbc):
            x0, y0 = c * block_cols - 0.5, r * block_rows - 0.5
            w = min(block_cols, n - c * block_cols)
            h = min(block_rows, n - r * block_rows)
            if w <= 0 or h <= 0:
                continue
            if block_keep[r, c]:
                ax.add_patch(Rectangle((x0, y0), w, h, fill=False, edgecolor="white", lw=0.6))
            else:
                ax.add_patch(Rectangle((x0, y0), w, h, facecolor="#ff3030", alpha=0.45, lw=0,
                                       hatch="///", edgecolor="#ff9090"))
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    kept = block_keep.sum() / max(1, block_keep.size)
    ax.set_title(title or f"kept blocks (outlined): {kept:.0%}; pruned: red", fontsize=10)
    return _save(fig, path)


def plot_cycles_per_layer(layers: list[int], dense: list[int], pruned: list[int], path: Path,
                          title: str = "Cycles per layer, dense vs pruned") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(layers))
    ax.bar(x - 0.2, dense, 0.4, label="dense", color="#888888")
    ax.bar(x + 0.2, pruned, 0.4, label="pruned", color="#1f77b4")
    for xi, d, p in zip(x, dense, pruned):
        if p:
            ax.annotate(f"{d / p:.2f}x", (xi + 0.2, p), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [str(layer) for layer in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("cycles (all heads of the layer)")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_area_by_unit(units: list[str], luts: list[int], ffs: list[int], path: Path,
                      title: str = "Area by unit (ECP5)") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(units) + 1.5))
    y = np.arange(len(units))
    ax.barh(y - 0.2, luts, 0.4, label="LUT4")
    ax.barh(y + 0.2, ffs, 0.4, label="flip-flops")
    ax.set_yticks(y, units)
    ax.invert_yaxis()
    ax.set_xlabel("count")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_pareto(points: list[dict], path: Path, x: str = "area", y: str = "speedup",
                color: str = "cosine", title: str = "Design space: speedup vs area",
                xlabel: str | None = None, ylabel: str | None = None) -> Path:
    """Scatter of design points, coloured by accuracy, the Pareto front (max y, min x) drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = np.array([p[x] for p in points], float)
    ys = np.array([p[y] for p in points], float)
    cs = np.array([p[color] for p in points], float)
    sc = ax.scatter(xs, ys, c=cs, cmap="RdYlGn", s=60, edgecolors="black")
    fig.colorbar(sc, ax=ax, label=color)
    order = np.lexsort((-ys, xs))
    front, best = [], -np.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    ax.plot(xs[front], ys[front], "k--", lw=1)
    ax.scatter(xs[front], ys[front], s=220, facecolors="none", edgecolors="black", lw=1.5,
               label="Pareto front (fewest LUTs for the speedup)")
    for p, xi, yi in zip(points, xs, ys):
        ax.annotate(p.get("label", ""), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.margins(x=0.2, y=0.1)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
