"""Turning runs into figures: medians, ratios to the references, targets, tables and plots.

Each (stack, dataset, strategy) cell keeps its runs; its figures are the medians of each
quantity over them. Throughput is the dataset's content (10**6 bytes per MB) over the total
time, so a deflating strategy that sends fewer bytes is not credited for it twice. Every
figure is also given as a ratio to the references measured in the same run: the block
reader, the memory ceiling, ``FileResponse`` and zipstream-ng (store for strategies that
store, deflate for those that compress). For throughput a ratio above 1 is better; for times,
bytes and memory, below 1.
"""

from __future__ import annotations

import math
import pathlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .strategies import BLOCK, BY_NAME, CEILING, FILE, ZS_DEFLATE, ZS_STORE

MB = 1_000_000  # bytes, for throughput
MIB = 1 << 20  # bytes, for memory
REFERENCES = (BLOCK, CEILING, FILE, "zipstream-ng")
RSS_FLOOR = MIB // 2  # bytes: a reference growing less than this gives no meaningful ratio

TRANSFER_KEYS = ("ttfb_s", "headers_s", "total_s", "body_bytes", "wire_bytes", "rss_growth",
                 "server_cpu_s")  # fmt: skip
DISK_KEYS = ("curl_s", "unzip_s", "curl_unzip_s", "download_s", "download_rss")
# figure -> (how to read it from a summary, True when higher is better)
FIGURES: dict[str, tuple[Callable[[dict[str, Any]], float | None], bool]] = {
    "throughput": (lambda s: s.get("throughput_mbs"), True),
    "ttfb": (lambda s: s.get("ttfb_s"), False),
    "total": (lambda s: s.get("total_s"), False),
    "wire_bytes": (lambda s: s.get("wire_bytes"), False),
    "rss_growth": (lambda s: s.get("rss_growth"), False),
    "to_disk": (lambda s: s.get("to_disk_s"), False),
}


def median_of(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The median of each key over the runs that have it."""
    out: dict[str, float] = {}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    return out


def summarize(cell: dict[str, Any], content_bytes: int) -> dict[str, Any]:
    """The medians of a cell's runs, plus throughput and the best time to disk."""
    summary: dict[str, Any] = median_of(cell["transfer"], TRANSFER_KEYS)
    summary.update(median_of(cell["disk"], DISK_KEYS))
    if summary.get("total_s"):
        summary["throughput_mbs"] = content_bytes / summary["total_s"] / MB
    # Files on the client's disk: multiresp's client when it ran, else curl + unzip; for the
    # raw references (one blob, no files to unpack) the time until the blob is on disk.
    for key in ("download_s", "curl_unzip_s", "curl_s"):
        if key in summary:
            summary["to_disk_s"] = summary[key]
            break
    return summary


def zipstream_for(name: str) -> str:
    """The zipstream-ng baseline a strategy is compared with."""
    return ZS_DEFLATE if BY_NAME[name].compressed else ZS_STORE


def _ratio(value: float | None, reference: float | None, figure: str) -> float | None:
    if value is None or not reference:
        return None
    if figure == "rss_growth" and reference < RSS_FLOOR:
        return None
    return value / reference


def add_ratios(cells: list[dict[str, Any]]) -> None:
    """Give every cell ``ratios[figure][reference]`` against the same stack and dataset."""
    index = {(c["stack"], c["dataset"], c["strategy"]): c for c in cells}
    for cell in cells:
        ratios: dict[str, dict[str, float | None]] = {}
        for figure, (read, _) in FIGURES.items():
            ratios[figure] = {}
            for reference in REFERENCES:
                ref_name = reference
                if reference == "zipstream-ng":
                    ref_name = zipstream_for(cell["strategy"])
                other = index.get((cell["stack"], cell["dataset"], ref_name))
                ref_value = None
                if other is not None:
                    # the references have no files to unpack: compare with their curl -o
                    key = "curl_s" if figure == "to_disk" else None
                    ref_value = other["summary"].get(key) if key else read(other["summary"])
                ratios[figure][reference] = _ratio(read(cell["summary"]), ref_value, figure)
        cell["ratios"] = ratios


# -- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A bound a figure must meet."""

    text: str
    strategy: str
    dataset: str
    read: Callable[[dict[str, Any]], float | None]
    limit: float
    at_least: bool  # True: value >= limit; False: value <= limit
    unit: str = ""


def _ratio_of(figure: str, reference: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda cell: cell["ratios"][figure][reference]


def _summary(key: str, scale: float) -> Callable[[dict[str, Any]], float | None]:
    def read(cell: dict[str, Any]) -> float | None:
        value = cell["summary"].get(key)
        return None if value is None else value * scale

    return read


def _download_vs_curl(cell: dict[str, Any]) -> float | None:
    summary = cell["summary"]
    if "download_s" not in summary or not summary.get("curl_s"):
        return None
    return float(summary["download_s"] / summary["curl_s"])


TARGETS = (
    Target("ZipStreamResponse store, large: throughput / block reader", "mr-store", "large",
           _ratio_of("throughput", BLOCK), 0.9, True),
    Target("ZipStreamResponse store, large: throughput / memory ceiling", "mr-store", "large",
           _ratio_of("throughput", CEILING), 0.5, True),
    Target("ZipStreamResponse store, large: time to first byte", "mr-store", "large",
           _summary("ttfb_s", 1000), 50, False, " ms"),
    Target("ZipStreamResponse store, large: server peak RSS growth", "mr-store", "large",
           _summary("rss_growth", 1 / MIB), 64, False, " MiB"),
    Target("ZipStreamResponse store, small: throughput / FileResponse", "mr-store", "small",
           _ratio_of("throughput", FILE), 1.2, True),
    Target("ZipStreamResponse store, small: throughput / zipstream-ng store", "mr-store",
           "small", _ratio_of("throughput", "zipstream-ng"), 8, True),
    Target("MultipartResponse, large: throughput / block reader", "mr-multipart", "large",
           _ratio_of("throughput", BLOCK), 0.9, True),
    Target("ZipStreamResponse auto, large: throughput / zipstream-ng deflate", "mr-auto",
           "large", _ratio_of("throughput", "zipstream-ng"), 10, True),
    Target("ZipStreamResponse deflate, large: throughput / zipstream-ng deflate", "mr-deflate",
           "large", _ratio_of("throughput", "zipstream-ng"), 8, True),
    Target("client download+unpack (store zip, large) / curl -o", "mr-store", "large",
           _download_vs_curl, 1.3, False),
)  # fmt: skip


def check_targets(cells: list[dict[str, Any]], stacks: Sequence[str]) -> list[dict[str, Any]]:
    """Every target on every stack: PASS, FAIL, or SKIP when its figures were not measured."""
    index = {(c["stack"], c["dataset"], c["strategy"]): c for c in cells}
    out = []
    for stack in stacks:
        for target in TARGETS:
            cell = index.get((stack, target.dataset, target.strategy))
            value = target.read(cell) if cell is not None else None
            if value is None:
                verdict = "SKIP"
            elif target.at_least:
                verdict = "PASS" if value >= target.limit else "FAIL"
            else:
                verdict = "PASS" if value <= target.limit else "FAIL"
            out.append({
                "stack": stack, "target": target.text, "value": value, "unit": target.unit,
                "limit": target.limit, "op": ">=" if target.at_least else "<=",
                "verdict": verdict,
            })  # fmt: skip
    return out


def target_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        value = "not measured" if r["value"] is None else f"{r['value']:.3g}{r['unit']}"
        lines.append(
            f"{r['verdict']}  [{r['stack']}] {r['target']}: {value} "
            f"(target {r['op']} {r['limit']:g}{r['unit']})"
        )
    return lines


# -- tables ---------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def figure_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    """The absolute figures, one row per strategy."""
    rows = []
    for cell in cells:
        s = cell["summary"]
        if cell["error"] and not s:
            rows.append([BY_NAME[cell["strategy"]].label, f"error: {cell['error'][:60]}"]
                        + [""] * 9)  # fmt: skip
            continue
        rows.append([
            BY_NAME[cell["strategy"]].label,
            _fmt(s.get("ttfb_s", math.nan) * 1000),
            _fmt(s.get("total_s")),
            _fmt(s.get("throughput_mbs")),
            _fmt(s.get("wire_bytes", math.nan) / MB),
            _fmt(s.get("rss_growth", math.nan) / MIB),
            _fmt(s.get("server_cpu_s")),
            _fmt(s.get("curl_s")),
            _fmt(s.get("curl_unzip_s")),
            _fmt(s.get("download_s")),
            str(len(cell["transfer"])),
        ])  # fmt: skip
    return rows


FIGURE_HEADER = (
    "strategy", "TTFB ms", "total s", "MB/s", "wire MB", "server RSS +MiB", "server CPU s",
    "curl -o s", "curl+unzip s", "download s", "runs",
)  # fmt: skip
RATIO_HEADER = ("strategy", "MB/s", "TTFB", "total", "wire bytes", "server RSS", "to disk")


def ratio_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    """Each figure as ``÷block · ÷ceiling · ÷FileResponse · ÷zipstream-ng``."""
    rows = []
    for cell in cells:
        ratios = cell.get("ratios", {})
        row = [BY_NAME[cell["strategy"]].label]
        for figure in FIGURES:
            values = ratios.get(figure, {})
            row.append(" · ".join(_fmt(values.get(ref), 2) for ref in REFERENCES))
        rows.append(row)
    return rows


def markdown(
    cells: list[dict[str, Any]], datasets: dict[str, dict[str, Any]], stacks: Sequence[str]
) -> list[str]:
    """Per stack and dataset: the figures, then the ratios to the references."""
    lines: list[str] = []
    for stack in stacks:
        for name, info in datasets.items():
            chosen = [c for c in cells if c["stack"] == stack and c["dataset"] == name]
            if not chosen:
                continue
            lines += [
                f"### {stack}: {name} ({info['description']}; {info['files']:,} files, "
                f"{info['size'] / MIB:,.0f} MiB)",
                "",
            ]
            lines += _table(FIGURE_HEADER, figure_rows(chosen))
            lines += [
                "",
                "Ratios, each cell ÷ block reader · ÷ memory ceiling · ÷ FileResponse · "
                "÷ zipstream-ng (deflate for compressing strategies, else store); MB/s: higher "
                "is better, the others lower; to disk compares with the reference's curl -o:",
                "",
            ]
            lines += _table(RATIO_HEADER, ratio_rows(chosen))
            lines.append("")
    return lines


# -- plots ----------------------------------------------------------------------------------

# plot -> (summary key, scale, smallest value drawn, title)
PLOTS = {
    "throughput": ("throughput_mbs", 1.0, 1.0, "throughput, MB/s of content (log scale)"),
    "memory": ("rss_growth", 1 / MIB, 0.1, "server peak RSS growth, MiB (log scale)"),
    "ttfb": ("ttfb_s", 1000.0, 0.1, "time to first content byte, ms (log scale)"),
}


def plot(
    cells: list[dict[str, Any]], stacks: Sequence[str], datasets: Sequence[str],
    out: pathlib.Path,
) -> list[pathlib.Path]:  # fmt: skip
    """One PNG per figure: a panel per stack, strategies down, one bar per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    strategies = [s for s in BY_NAME if any(c["strategy"] == s for c in cells)]
    index = {(c["stack"], c["dataset"], c["strategy"]): c for c in cells}
    written = []
    height = 0.8 / max(1, len(datasets))
    for plot_name, (key, scale, floor, title) in PLOTS.items():
        fig, axes = plt.subplots(
            1, len(stacks), figsize=(7.5 * len(stacks), 0.5 * len(strategies) * len(datasets)
                                     / 2 + 2), sharey=True, squeeze=False,
        )  # fmt: skip
        for ax, stack in zip(axes[0], stacks, strict=True):
            for d, dataset in enumerate(datasets):
                ys, xs = [], []
                for i, strategy in enumerate(strategies):
                    cell = index.get((stack, dataset, strategy))
                    value = cell["summary"].get(key) if cell is not None else None
                    if value is None:
                        continue
                    ys.append(i + (d - (len(datasets) - 1) / 2) * height)
                    xs.append(value * scale)
                bars = ax.barh(ys, [max(x, floor) for x in xs], height=height, label=dataset)
                labels = [_fmt(x, 2) if x >= floor else f"<{floor:g}" for x in xs]
                ax.bar_label(bars, labels=labels, fontsize=6, padding=2)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.set_title(f"{title}\n{stack}", fontsize=10)
            ax.set_yticks(range(len(strategies)))
            ax.set_yticklabels([BY_NAME[s].label for s in strategies], fontsize=8)
            ax.invert_yaxis()
            ax.grid(axis="x", which="both", alpha=0.3)
            ax.margins(x=0.15)
        axes[0][-1].legend(title="dataset", fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out / f"{plot_name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
