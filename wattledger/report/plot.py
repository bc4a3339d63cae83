"""``report --plot``: a PNG of the top rows' facility energy and CO2e per hour, with the grid intensity.

matplotlib (the ``plot`` extra) is imported only when a plot is asked for,
with the Agg backend: no display needed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from wattledger.model.units import NS_PER_S
from wattledger.report.model import RESERVED_CATEGORY, Report, ReportError, Row, category
from wattledger.report.numfmt import num
from wattledger.util.timeutil import iso

Stack = tuple[str, list[tuple[str, ...]]]  # legend label, the row keys summed in it


def plot(report: Report, path: str, *, top: int = 5) -> None:
    """A PNG of the top rows' facility energy and CO2e per hour (matplotlib, Agg backend)."""
    plt, date_formatter = _pyplot()
    if not report.hours:
        raise ReportError("nothing to plot: no wl_job energy in this window")
    xs = [datetime.fromtimestamp(h / NS_PER_S, tz=timezone.utc) for h in report.hours]
    stacks, grey_last = _stacks(report, top)
    fig, (ax_e, ax_c) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, constrained_layout=True)
    tab10 = plt.get_cmap("tab10")
    colors = [tab10(i) for i in range(10)]
    for ax, attr, ylabel in ((ax_e, "facility_kwh", "facility kWh per hour"), (ax_c, "g_co2e", "gCO2e per hour")):
        _draw_stacks(ax, report, xs, stacks, attr, colors, grey_last)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    ax_ci = _draw_intensity(ax_c.twinx(), report, xs)
    handles, labels = ax_e.get_legend_handles_labels()
    more_h, more_l = ax_ci.get_legend_handles_labels()
    fig.legend(handles + more_h, labels + more_l, loc="outside right upper", fontsize=8,
               title=f"top {report.by}s", title_fontsize=9, frameon=False)
    fig.suptitle(f"Energy and CO2e by {report.by}, zone {report.zone}, PUE {report.pue}\n"
                 f"{iso(report.since_ns)} .. {iso(report.until_ns)}: {num(report.total.facility_kwh)} facility kWh, "
                 f"{num(report.total.g_co2e / 1000)} kg CO2e", fontsize=10)
    _utc_time_axis(ax_c, date_formatter)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pyplot() -> tuple[Any, Any]:
    """(matplotlib.pyplot, DateFormatter) on the Agg backend; ReportError says how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.dates import DateFormatter
    except ImportError:
        raise ReportError(
            "--plot needs matplotlib: pip install 'wattledger[plot]' (or pip install matplotlib)"
        ) from None
    return plt, DateFormatter


def _label(report: Report, r: Row) -> str:
    # Matplotlib hides legend labels that start with "_": name reserved jobs by what they are.
    head = f"{category(r.key[0])} ({r.key[0]})" if report.by == "job" and r.key[0] in RESERVED_CATEGORY else None
    parts = [head or r.key[0] or "(none)", *(v for v in r.key[1:] if v)]
    return " / ".join(parts)


def _stacks(report: Report, top: int) -> tuple[list[Stack], bool]:
    """The top rows one stack each, then the rest as one "N others" stack (drawn grey: the bool)."""
    rest = report.rows[top:]
    stacks = [(_label(report, r), [r.key]) for r in report.rows[:top]]
    if rest:
        stacks.append((f"{len(rest)} others", [r.key for r in rest]))
    return stacks, bool(rest)


def _per_hour(report: Report, keys: list[tuple[str, ...]], attr: str) -> list[float]:
    return [sum(getattr(report.series[k][h], attr) for k in keys if h in report.series.get(k, {}))
            for h in report.hours]


def _draw_stacks(ax: Any, report: Report, xs: list[datetime], stacks: list[Stack], attr: str,
                 colors: list[Any], grey_last: bool) -> None:
    """Stacked hourly bars of ``attr`` (facility_kwh or g_co2e), one layer per stack."""
    width = timedelta(hours=0.9)
    bottom = [0.0] * len(report.hours)
    for i, (name, keys) in enumerate(stacks):
        v = _per_hour(report, keys, attr)
        color = "0.75" if grey_last and i == len(stacks) - 1 else colors[i % len(colors)]
        ax.bar(xs, v, width=width, bottom=bottom, label=name, color=color, align="edge")
        bottom = [b + x for b, x in zip(bottom, v)]


def _draw_intensity(ax_ci: Any, report: Report, xs: list[datetime]) -> Any:
    """The grid intensity as a step per hour on the right axis; hours at the static figure marked x."""
    ci = [report.intensity_by_hour[h].g_per_kwh for h in report.hours]
    # A step per hour, drawn across the whole hour (the last one too).
    ax_ci.step([*xs, xs[-1] + timedelta(hours=1)], [*ci, ci[-1]], where="post", color="black", linewidth=1.3,
               label="grid intensity, g/kWh (right axis)")
    fallback = [(x + timedelta(minutes=30), c) for x, h, c in zip(xs, report.hours, ci)
                if report.intensity_by_hour[h].fallback]
    if fallback:
        ax_ci.scatter([x for x, _ in fallback], [c for _, c in fallback], marker="x", color="red", zorder=5,
                      label="hour at the static figure (no wl_carbon)")
    ax_ci.set_ylabel("grid intensity g/kWh")
    ax_ci.set_ylim(bottom=0, top=max(ci) * 1.15)
    return ax_ci


def _utc_time_axis(ax: Any, date_formatter: Any) -> None:
    ax.xaxis.set_major_formatter(date_formatter("%m-%d %H:%M", tz=timezone.utc))
    ax.set_xlabel("UTC")
    for lbl in ax.get_xticklabels():
        lbl.set_rotation(30)
        lbl.set_horizontalalignment("right")
