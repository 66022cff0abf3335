"""ECharts options built on the server from query results (the page only draws them).

Each function returns a plain dict, embedded in the page as JSON and given to
``echarts.init(...).setOption``; tests read the numbers back with ``getOption()``.
"""

from __future__ import annotations

__all__ = ["bars", "finish", "funnel", "hbars", "heatmap", "lines", "pie"]

#: the page's own fonts, so ECharts measures CJK labels as they are drawn
FONTS = '-apple-system, "PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif'
_GRID = {"left": 8, "right": 16, "top": 36, "bottom": 8, "containLabel": True}


def lines(labels: list[str], series: dict[str, list], *, area: bool = False) -> dict:
    """One line per named series over ``labels`` (days or hours)."""
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"type": "scroll", "top": 0, "itemGap": 16},
        "grid": _GRID,
        "xAxis": {"type": "category", "data": labels, "boundaryGap": False},
        "yAxis": {"type": "value", "minInterval": 1},
        "series": [
            {"name": name, "type": "line", "data": data, "smooth": True}
            | ({"areaStyle": {}} if area else {})
            for name, data in series.items()
        ],
    }


def bars(categories: list[str], series: dict[str, list], *, stack: bool = False) -> dict:
    """Vertical bars: one group per category, one bar per named series."""
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"type": "scroll", "top": 0, "itemGap": 16},
        "grid": _GRID,
        "xAxis": {"type": "category", "data": categories, "axisLabel": {"interval": 0}},
        "yAxis": {"type": "value", "minInterval": 1},
        "series": [
            {"name": name, "type": "bar", "data": data, "barMaxWidth": 40}
            | ({"stack": "all"} if stack else {})
            for name, data in series.items()
        ],
    }


def hbars(pairs: list[list], name: str) -> dict:
    """Horizontal bars for ranked ``[label, value]`` pairs (largest on top)."""
    ordered = list(reversed(pairs))
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "grid": {**_GRID, "top": 8},
        "xAxis": {"type": "value", "minInterval": 1},
        "yAxis": {"type": "category", "data": [str(p[0]) for p in ordered]},
        "series": [
            {"name": name, "type": "bar", "data": [p[-1] for p in ordered], "barMaxWidth": 28}
        ],
    }


def pie(pairs: list[list], name: str) -> dict:
    """A ring of ``[label, value]`` pairs."""
    return {
        "tooltip": {"trigger": "item"},
        "legend": {"type": "scroll", "bottom": 0},
        "series": [
            {
                "name": name,
                "type": "pie",
                "radius": ["35%", "65%"],
                "center": ["50%", "45%"],
                "data": [{"name": str(label), "value": value} for label, value in pairs],
            }
        ],
    }


def heatmap(columns: list[str], rows: list[str], cells: list[list], name: str) -> dict:
    """A grid of ``[column index, row index, value]`` cells, coloured by value (0-100)."""
    return {
        "tooltip": {"position": "top"},
        "grid": {**_GRID, "top": 8, "bottom": 48},
        "xAxis": {"type": "category", "data": columns, "axisLabel": {"interval": 0}},
        "yAxis": {"type": "category", "data": rows, "inverse": True},
        "visualMap": {
            "min": 0,
            "max": 100,
            "calculable": False,
            "orient": "horizontal",
            "left": "center",
            "bottom": 0,
            "itemHeight": 120,
            "inRange": {"color": ["#f0fdf4", "#34d399", "#065f46"]},
        },
        "series": [
            {
                "name": name,
                "type": "heatmap",
                "data": cells,
                "label": {"show": True, "formatter": "{@[2]}%"},
            }
        ],
    }


def funnel(pairs: list[list], name: str) -> dict:
    """A funnel of ``[label, value]`` steps, in the given order (largest first)."""
    return {
        "tooltip": {"trigger": "item"},
        "series": [
            {
                "name": name,
                "type": "funnel",
                "sort": "none",
                "left": "10%",
                "width": "80%",
                "top": 8,
                "bottom": 8,
                "minSize": "4%",
                "gap": 2,
                "label": {"show": True, "position": "inside", "formatter": "{b}: {c}"},
                "data": [{"name": str(label), "value": value} for label, value in pairs],
            }
        ],
    }


def _has_data(option: dict) -> bool:
    for series in option.get("series", []):
        for point in series.get("data", []):
            value = point.get("value") if isinstance(point, dict) else point
            if value:
                return True
    return False


def finish(option: dict, empty_text: str) -> dict:
    """Set the page's fonts and, for a chart with nothing to show, say so on it."""
    option = {**option, "textStyle": {"fontFamily": FONTS}, "animationDuration": 300}
    if not _has_data(option):
        option["title"] = {
            "text": empty_text,
            "left": "center",
            "top": "middle",
            "textStyle": {"color": "#9ca3af", "fontSize": 14, "fontWeight": "normal"},
        }
    return option
