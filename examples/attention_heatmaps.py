"""Attention weights as per-head heatmaps: what a causal and a padding mask do.

One self-attention problem (one sequence of 10 tokens, 4 heads, 3 of the tokens padding) is
run through :func:`attnspec.scaled_dot_product_attention` with ``return_weights=True`` four
times: no mask, ``causal=True``, a padding mask (``kv_lengths=7``: keys 7, 8, 9 are
padding) and both. Each row of the figure is one masking, each column one head; a cell is
the weight query ``i`` (vertical axis) gives key ``j`` (horizontal axis). Masked cells are
exactly 0 (drawn with a hatched grey background) and every row of weights sums to 1.

    python examples/attention_heatmaps.py docs/images/attention_heatmaps.png
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import attnspec

LENGTH, HEADS, HEAD_DIM, VALID = 10, 4, 16, 7

#: (title, keyword arguments of scaled_dot_product_attention)
MASKINGS: list[tuple[str, dict[str, Any]]] = [
    ("no mask", {}),
    ("causal=True", {"causal": True}),
    (f"padding: kv_lengths={VALID}", {"kv_lengths": VALID}),
    ("causal + padding", {"causal": True, "kv_lengths": VALID}),
]


def attention_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Title -> weights of shape ``(HEADS, LENGTH, LENGTH)`` for each masking."""
    rng = np.random.default_rng(seed)
    # Larger-than-unit queries and keys give peaked, head-specific patterns worth looking at.
    q = 2.0 * rng.standard_normal((HEADS, LENGTH, HEAD_DIM))
    k = 2.0 * rng.standard_normal((HEADS, LENGTH, HEAD_DIM))
    v = rng.standard_normal((HEADS, LENGTH, HEAD_DIM))
    weights = {}
    for title, options in MASKINGS:
        _, w = attnspec.scaled_dot_product_attention(q, k, v, return_weights=True, **options)
        weights[title] = np.asarray(w)
    return weights


def draw(weights: dict[str, np.ndarray], path: str) -> Any:
    """Draw the heatmaps into ``path`` (PNG); returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(weights), HEADS
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols + 1.0, 2.2 * rows),
                             squeeze=False, constrained_layout=True)
    image = None
    for r, (title, w) in enumerate(weights.items()):
        for h in range(cols):
            ax = axes[r][h]
            # Masked cells (weight exactly 0) are transparent over a hatched background.
            shown = np.ma.masked_equal(w[h], 0.0)
            ax.set_facecolor("0.85")
            ax.add_patch(matplotlib.patches.Rectangle(
                (-0.5, -0.5), LENGTH, LENGTH, hatch="///", fill=False, edgecolor="0.6",
                linewidth=0, zorder=0))
            image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis", zorder=1)
            ax.set_xticks(range(0, LENGTH, 3))
            ax.set_yticks(range(0, LENGTH, 3))
            if r == 0:
                ax.set_title(f"head {h}", fontsize=10)
            if h == 0:
                ax.set_ylabel(f"{title}\nquery i", fontsize=9)
            if r == rows - 1:
                ax.set_xlabel("key j", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6, label="weight")
    fig.savefig(path, dpi=80)
    return fig


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/attention_heatmaps.py OUTPUT.png", file=sys.stderr)
        return 2
    weights = attention_weights()
    draw(weights, argv[0])
    for title, w in weights.items():
        print(f"{title:<24} masked cells: {int(np.sum(w == 0.0)):>3} of {w.size}")
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
