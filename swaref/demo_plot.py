"""The figures of ``swaref demo --plot DIR``: PNG files drawn with matplotlib (Agg backend).

``swaref.demo`` computes every number and prints the walkthrough; this module
only draws what ``demo.compute`` returned, the same sections as pictures plus
the window family side by side.  It is imported only when --plot is given, so
the demo runs without matplotlib.
"""
import os

import numpy as np

from .demo import PROMPT, SENTENCE, _fmt_score, _fmt_weight
from .errors import SwarefError


class PlotUnavailable(SwarefError):
    """matplotlib is not installed (kind "dependency")."""

    def __init__(self, message):
        super().__init__("dependency", message)


def pyplot():
    """matplotlib.pyplot on the Agg backend (PlotUnavailable when matplotlib is not installed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(
            "swaref demo --plot needs matplotlib, which is not installed "
            f"({e}).\nInstall it with:  pip install 'swaref[plot]'   (or: pip install matplotlib)"
        ) from None
    return plt


def _heatmap(ax, values, rows, cols, title, text, cmap="viridis", **imshow):
    """values [R, C] with -inf drawn grey; text [R][C] written in the cells."""
    shown = np.ma.masked_invalid(np.where(np.isneginf(values), np.nan, values))
    cm = __import__("matplotlib").colormaps[cmap].with_extremes(bad="#dddddd")
    ax.imshow(shown, cmap=cm, **imshow)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=10)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7)


def plot_all(r, outdir, plt):
    """Write the five figures into ``outdir``; return their paths."""
    os.makedirs(outdir, exist_ok=True)
    paths = []

    def save(fig, name, top=1.0):
        path = os.path.join(outdir, name)
        fig.tight_layout(rect=(0, 0, 1, top))         # top < 1 leaves room for a suptitle
        fig.savefig(path, dpi=110, bbox_inches="tight")      # rotated tick labels stay inside
        plt.close(fig)
        paths.append(path)

    words = SENTENCE
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for row, (name, m) in enumerate((("causal", r["causal"]),
                                     (f"sliding window W = {r['attention_window']}", r["swa"]))):
        _heatmap(axes[row, 0], m["scores"], words, words, f"{name}: q.k/sqrt(D) before softmax",
                 [[_fmt_score(x) for x in rr] for rr in m["scores"]], cmap="coolwarm")
        w = np.where(m["mask"], m["weights"], -np.inf)
        _heatmap(axes[row, 1], w, words, words, f"{name}: after softmax (rows sum to 1)",
                 [[_fmt_weight(x, vis) for x, vis in zip(rr, mr)]
                  for rr, mr in zip(m["weights"], m["mask"])])
    save(fig, "1_attention_scores.png")

    f = r["field"]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(f["reach"]) + 1.5))
    ax.imshow(f["reach"], cmap="Blues", vmin=0, vmax=1.5)
    ax.set_xticks(range(f["length"]))
    ax.set_yticks(range(len(f["reach"])), [f"layer {L}" for L in range(len(f["reach"]))])
    ax.set_xlabel("input position")
    ax.set_title(f"Receptive field of the last position, W = {f['window']}: "
                 f"grows by W - 1 = {f['window'] - 1} per layer")
    save(fig, "2_receptive_field.png")

    steps, W = r["steps"], r["cache_window"]
    fig, ax = plt.subplots(figsize=(1.3 * W + 2, 0.5 * len(steps) + 1.5))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(len(steps) - 0.5, -0.5)
    for i, st in enumerate(steps):
        for s, pos in enumerate(st["slots"]):
            hit = s == st["slot"]
            ax.add_patch(plt.Rectangle((s - 0.45, i - 0.4), 0.9, 0.8,
                                       color="#ffcc66" if hit else "#e8eef7"))
            ax.text(s, i, words[pos] if pos >= 0 else "", ha="center", va="center")
        ax.add_patch(plt.Rectangle((st["next_slot"] - 0.45, i - 0.4), 0.9, 0.8, fill=False,
                                   edgecolor="red", linestyle="--", linewidth=1.5))
    ax.set_xticks(range(W), [f"slot {s}" for s in range(W)])
    ax.set_yticks(range(len(steps)), [f"+ {st['word']} (p={st['position']})" for st in steps])
    ax.set_title(f"Rolling buffer, W = {W}: position p goes to slot p mod W\n"
                 "orange = just written, dashed red = write pointer (next slot)")
    save(fig, "3_rolling_buffer.png")

    chunks, pw = r["chunks"], PROMPT
    fig, axes = plt.subplots(1, len(chunks), figsize=(4.2 * len(chunks), 4), squeeze=False)
    for ax, (n, c) in zip(axes[0], enumerate(chunks, 1)):
        cols = [("[cache] " if j < c["n_cache"] else "") + pw[p] for j, p in enumerate(c["k_pos"])]
        _heatmap(ax, c["mask"].astype(float), [pw[p] for p in c["q_pos"]], cols,
                 f"chunk {n}: keys = cache + chunk",
                 [["x" if m else "" for m in row] for row in c["mask"]], cmap="Greens",
                 vmin=0, vmax=2.5)
        if c["n_cache"]:
            ax.axvline(c["n_cache"] - 0.5, color="black")
    fig.suptitle(f"Chunked prefill, W = {W}; chunked == one-shot: "
                 f"max |diff| = {r['prefill_diff']:.1e}")
    save(fig, "4_chunked_prefill.png")

    fam = r["family"]
    fig, axes = plt.subplots(1, len(fam), figsize=(4.2 * len(fam), 5.0), squeeze=False)
    for ax, f in zip(axes[0], fam):
        _heatmap(ax, f["mask"].astype(float), words, words, f"{f['name']}: {f['spelled']}\n{f['engine']}",
                 [["x" if m else "" for m in row] for row in f["mask"]], cmap="Greens", vmin=0, vmax=2.5)
    agree = "yes" if all(f["agree"] for f in fam) else "NO"
    fig.suptitle(f"The window family on \"{' '.join(words)}\" (row = query, x = visible key); "
                 f"window_mask == the kernel's rule: {agree}")
    save(fig, "5_window_family.png", top=0.9)
    return paths
