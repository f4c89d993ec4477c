"""PNG figures of the evaluation: the ExAccErr curve and the reliability diagram (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_exaccerr(curves: dict[str, dict], path: str | Path) -> Path:
    """ExAccErr(l) (%) against the step l, one line per model; ``curves`` maps names to exposure dicts.

    Each line stops at its ``reliable_steps`` (enough rows still going); 0 is no excess error.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, curve in curves.items():
        n = curve.get("reliable_steps") or len(curve["steps"])
        points = [
            (s, v) for s, v in zip(curve["steps"][:n], curve["exaccerr"][:n], strict=True) if v is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), label=name)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("generation step l")
    ax.set_ylabel("ExAccErr(l) (%)")
    ax.set_title("Exposure bias: excess accumulated error")
    if curves:
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reliability(bins: list[dict], path: str | Path, *, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per equal-width bin (bars), the diagonal being perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    filled = [b for b in bins if b["n"]]
    ax.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in filled],
        [b["confidence"] for b in filled],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    for b in filled:
        ax.annotate(str(b["n"]), (b["low"] + width / 2, 0.02), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
