"""``report --plot``: a PNG of the top rows' facility energy and CO2e per hour, with the grid intensity.

matplotlib (the ``plot`` extra) is imported only when a plot is asked for,
with the Agg backend: no display needed.

An hour the agent measured only in part (it started at :54, the report runs
at :06, the window starts mid-hour) is drawn as that part: a hatched bar as
wide as the time measured, labelled with it (``hour_bars``), never as a
whole hour's bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from wattledger.model.units import NS_PER_S
from wattledger.report.model import RESERVED_CATEGORY, Report, ReportError, Row, category
from wattledger.report.numfmt import num
from wattledger.util.timeutil import iso

Stack = tuple[str, list[tuple[str, ...]]]  # legend label, the row keys summed in it
HOUR_S = 3600.0
FULL_BAR_H = 0.9  # a whole hour's bar, leaving a gap between hours
PARTIAL_BELOW = 0.95  # an hour measured for less than this share of it is drawn as the part it is
PARTIAL_HATCH = "////"


@dataclass(frozen=True)
class HourBar:
    """Where one hour's bar goes: its start, its width in hours, and the seconds measured when partial."""

    start: datetime
    width_h: float
    partial_s: float | None = None


def hour_bars(report: Report, measured_s: dict[int, float]) -> list[HourBar]:
    """One bar per hour of ``report.hours``. A whole hour (or one whose measured time is unknown) is a
    bar from the hour's start; a partial one is as wide as the time measured, placed inside the part
    of the hour the window covers: after its start when the hour before had energy (the agent went on
    measuring), else up to its end (it began, or the window ends now)."""
    bars = []
    have = set(report.hours)
    for h in report.hours:
        start = datetime.fromtimestamp(h / NS_PER_S, tz=timezone.utc)
        seconds = measured_s.get(h)
        if seconds is None or seconds >= PARTIAL_BELOW * HOUR_S:
            bars.append(HourBar(start, FULL_BAR_H))
            continue
        lo = max(h, report.since_ns)
        hi = min(h + int(HOUR_S * NS_PER_S), report.until_ns)
        at_ns = lo if h - int(HOUR_S * NS_PER_S) in have else hi - int(seconds * NS_PER_S)
        bars.append(HourBar(datetime.fromtimestamp(max(lo, at_ns) / NS_PER_S, tz=timezone.utc),
                            seconds / HOUR_S, seconds))
    return bars


def plot(report: Report, path: str, *, top: int = 5, measured_s: dict[int, float] | None = None) -> None:
    """A PNG of the top rows' facility energy and CO2e per hour (matplotlib, Agg backend).

    ``measured_s``: seconds measured per hour (``report.ledger_measured_seconds``); partial hours are
    drawn as the part they are. Without it every hour is drawn whole.
    """
    plt, _ = _pyplot()
    fig = draw(report, top=top, measured_s=measured_s)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(report: Report, *, top: int = 5, measured_s: dict[int, float] | None = None) -> Any:
    """The figure ``plot`` saves (its first axes: energy, second: CO2e); the caller closes it."""
    if not report.per_hour:
        raise ReportError("this report sums hours of one intensity together (the ledger's long reads): read it "
                          "per hour to draw it (report.from_ledger(..., hourly=True), as report --plot does)")
    plt, date_formatter = _pyplot()
    if not report.hours:
        raise ReportError("nothing to plot: no wl_job energy in this window")
    xs = [datetime.fromtimestamp(h / NS_PER_S, tz=timezone.utc) for h in report.hours]
    bars = hour_bars(report, measured_s or {})
    stacks, grey_last = _stacks(report, top)
    fig, (ax_e, ax_c) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, constrained_layout=True)
    tab10 = plt.get_cmap("tab10")
    colors = [tab10(i) for i in range(10)]
    for ax, attr, ylabel in ((ax_e, "facility_kwh", "facility kWh per hour"), (ax_c, "g_co2e", "gCO2e per hour")):
        _draw_stacks(ax, report, bars, stacks, attr, colors, grey_last)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    _label_partial(ax_e, report, bars)
    ax_ci = _draw_intensity(ax_c.twinx(), report, xs)
    more_h, more_l = ax_ci.get_legend_handles_labels()
    handles = _legend(stacks, colors, grey_last, any(b.partial_s is not None for b in bars))
    fig.legend(handles + more_h, [h.get_label() for h in handles] + more_l, loc="outside right upper",
               fontsize=8, title=f"top {report.by}s", title_fontsize=9, frameon=False)
    fig.suptitle(f"Energy and CO2e by {report.by}, zone {report.zone}, PUE {report.pue}\n"
                 f"{iso(report.since_ns)} .. {iso(report.until_ns)}: {num(report.total.facility_kwh)} facility kWh, "
                 f"{num(report.total.g_co2e / 1000)} kg CO2e", fontsize=10)
    _utc_time_axis(ax_c, date_formatter)
    return fig


def require_matplotlib() -> None:
    """Fail before anything is printed when --plot cannot be drawn: ReportError names the extra."""
    _pyplot()


def _pyplot() -> tuple[Any, Any]:
    """(matplotlib.pyplot, DateFormatter) on the Agg backend; ReportError says how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.dates import DateFormatter
    except ImportError:
        raise ReportError(
            "--plot needs matplotlib, the 'plot' extra: pip install 'wattledger[plot]' "
            "(in a checkout's venv: pip install -e '.[plot]'); nothing was printed"
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


def _draw_stacks(ax: Any, report: Report, bars: list[HourBar], stacks: list[Stack], attr: str,
                 colors: list[Any], grey_last: bool) -> None:
    """Stacked hourly bars of ``attr`` (facility_kwh or g_co2e), one layer per stack; partial hours hatched."""
    starts = [b.start for b in bars]
    widths = [timedelta(hours=b.width_h) for b in bars]
    bottom = [0.0] * len(report.hours)
    for i, (name, keys) in enumerate(stacks):
        v = _per_hour(report, keys, attr)
        drawn = ax.bar(starts, v, width=widths, bottom=bottom, label=name, color=_color(i, stacks, colors, grey_last),
                       align="edge", edgecolor="white", linewidth=0.3)
        for patch, bar in zip(drawn, bars):
            if bar.partial_s is not None:
                patch.set_hatch(PARTIAL_HATCH)
        bottom = [b + x for b, x in zip(bottom, v)]


def _color(i: int, stacks: list[Stack], colors: list[Any], grey_last: bool) -> Any:
    return "0.75" if grey_last and i == len(stacks) - 1 else colors[i % len(colors)]


def _legend(stacks: list[Stack], colors: list[Any], grey_last: bool, partial: bool) -> list[Any]:
    """One plain swatch per stack, and what a hatched bar means when there is one."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=_color(i, stacks, colors, grey_last), label=name) for i, (name, _) in enumerate(stacks)]
    if partial:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch=PARTIAL_HATCH,
                             label="hour measured in part: as wide as the time measured"))
    return handles


def _label_partial(ax: Any, report: Report, bars: list[HourBar]) -> None:
    """Over each partial hour's bar, how long it was measured."""
    tops = _per_hour(report, [r.key for r in report.rows], "facility_kwh")
    for bar, top in zip(bars, tops):
        if bar.partial_s is not None:
            s = bar.partial_s
            text = f"{s / 60:.0f} min measured" if s >= 60 else f"{s:.0f} s measured"
            ax.annotate(text, (bar.start + timedelta(hours=bar.width_h / 2), top), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)


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
