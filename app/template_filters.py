"""Display text for figures, in one place: every Jinja filter, and the plain-text forms that
`flask ...` commands print. Times are rendered as <time> elements that static/js/microblog.js
shows in the reader's locale and time zone (Intl API, no CDN); counts and sizes on pages are
written in the reader's locale on the server ("300,003", Spanish "300.003"); durations and
rates read the same on a page and in a terminal ("2.0 s", "50%")."""

from datetime import datetime

from flask_babel import format_decimal
from markupsafe import Markup, escape

BYTE_UNITS = ("B", "KiB", "MiB", "GiB")


def local_time(value: datetime | None, style: str = "datetime") -> Markup:
    if value is None:
        return Markup("")
    iso = value.isoformat(timespec="seconds") + "Z"
    return Markup('<time class="local-time" datetime="{0}" data-style="{1}">{2} UTC</time>').format(
        iso, escape(style), value.strftime("%Y-%m-%d %H:%M"))


def number(value: object) -> object:
    """A count (or any number) with the locale's grouping and decimal sign; anything else (a
    figure formatted already, "-") as it is, so that a table of mixed figures takes one
    filter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return format_decimal(value)


def scaled_bytes(value: int) -> tuple[float, str]:
    """A size as an amount of the largest binary unit it reaches (up to GiB): (1.5, "KiB")."""
    size = float(value)
    for unit in BYTE_UNITS[:-1]:
        if size < 1024:
            return size, unit
        size /= 1024
    return size, BYTE_UNITS[-1]


def file_size(value: int | None) -> str:
    """"1.5 KiB" ("1,5 KiB" in Spanish), "-" for none."""
    if value is None:
        return "-"
    size, unit = scaled_bytes(value)
    return f"{format_decimal(size, format='#,##0' if unit == 'B' else '#,##0.0')} {unit}"


def format_bytes(value: int | None) -> str:
    """A size for the CLI's tables ("1.5 KiB"); pages use `file_size` (the `bytes` filter), in
    the reader's locale."""
    if value is None:
        return "-"
    size, unit = scaled_bytes(value)
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def format_seconds(value: float | None) -> str:
    """A duration for people: 0.04 s, 12.0 s, 3 min 4 s, 2 h 5 min; "-" for none."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_rate(value: float | None) -> str:
    """A fraction as a whole percentage ("50%"); "-" for none."""
    return "-" if value is None else f"{100 * value:.0f}%"


def register(app) -> None:
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["bytes"] = file_size
    app.jinja_env.filters["seconds"] = format_seconds
    app.jinja_env.filters["rate"] = format_rate
