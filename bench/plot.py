"""Draw the hand-over picture (bench/handover.png) from bench/run.py's timelines.

matplotlib is a bench-only dependency (bench/requirements.txt, installed by `make bench`).
Two columns, one per scenario (a redeploy, `make stop && make start`), under the same load;
the top row counts answered and failed requests per 100 ms, the bottom row shows the worst
latency of the requests that ended in each 100 ms. Rows share their y-scale across the
columns, so the two scenarios compare at a glance. Shaded spans mark the steps, from the
step lines make printed as each one finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BIN = 0.1  # seconds


@dataclass
class Timeline:
    """One scenario: requests as (began, ended, ok) and steps as (name, start, end), in
    seconds since the scenario's first command started (negative: the load ran before it)."""

    title: str
    requests: list[tuple[float, float, bool]]
    steps: list[tuple[str, float, float]] = field(default_factory=list)

    def bins(self) -> tuple[list[float], list[int], list[int], list[float]]:
        """Left edges, answered, failed, worst latency in ms, per BIN of end time."""
        if not self.requests:
            return [], [], [], []
        first = min(ended for _, ended, _ in self.requests)
        last = max(ended for _, ended, _ in self.requests)
        start = int(first // BIN)
        count = int(last // BIN) - start + 1
        answered, failed, worst = [0] * count, [0] * count, [0.0] * count
        for began, ended, ok in self.requests:
            i = int(ended // BIN) - start
            if ok:
                answered[i] += 1
            else:
                failed[i] += 1
            worst[i] = max(worst[i], (ended - began) * 1000)
        return [(start + i) * BIN for i in range(count)], answered, failed, worst


STEP_COLOURS = {
    "check-config": "#d9d9d9", "test": "#bdbdbd", "pack": "#d9d9d9", "upload": "#c6dbef",
    "install": "#9ecae1", "smoke_boot": "#fdd0a2", "switch": "#fc8d59", "handover": "#ef6548",
    "prune": "#c7e9c0", "make stop": "#ef6548", "make start": "#fdd0a2",
}


def draw(timelines: list[Timeline], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(timelines), figsize=(6.2 * len(timelines), 6.8),
                             sharex="col", sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for col, timeline in enumerate(timelines):
        edges, answered, failed, worst = timeline.bins()
        counts, latency = axes[0][col], axes[1][col]
        for ax in (counts, latency):
            for name, start, end in timeline.steps:
                ax.axvspan(start, max(end, start + 0.03), color=STEP_COLOURS.get(name, "#eeeeee"),
                           alpha=0.6, lw=0)
            ax.grid(axis="y", color="#e0e0e0", lw=0.6)
            ax.set_axisbelow(True)
        counts.step(edges, answered, where="post", color="#2b8cbe", lw=1.4, label="answered (HTTP 200)")
        counts.step(edges, failed, where="post", color="#d7301f", lw=1.4, label="failed (refused, reset, not 200)")
        latency.step(edges, worst, where="post", color="#54278f", lw=1.2, label="worst latency")
        counts.set_title(f"{timeline.title}\n{sum(answered)} answered, {sum(failed)} failed", fontsize=10)
        latency.set_xlabel("seconds since the command started")
        # the step names, staggered so that short neighbouring steps stay readable
        for k, (name, start, end) in enumerate(timeline.steps):
            counts.annotate(name, xy=((start + end) / 2, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(0, -10 - 11 * (k % 3)), textcoords="offset points",
                            ha="center", fontsize=7.5, color="#333333")
    axes[0][0].set_ylabel(f"requests per {int(BIN * 1000)} ms")
    axes[1][0].set_ylabel(f"worst latency per {int(BIN * 1000)} ms (ms)")
    handles = [*axes[0][0].get_lines(), *axes[1][0].get_lines()]
    fig.legend(handles, ["answered (HTTP 200)", "failed (refused, reset, not 200)", "worst latency"],
               loc="lower center", ncol=3, fontsize=8.5, frameon=False)
    axes[0][0].set_ylim(0, axes[0][0].get_ylim()[1] * 1.35)  # shared by the row; room for the step names
    axes[1][0].set_ylim(0, None)
    fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
