"""Jinja helpers: times are rendered as <time> elements that static/js/microblog.js shows in
the reader's locale and time zone (Intl API, no CDN); counts and sizes are written in the
reader's locale on the server ("300,003", Spanish "300.003")."""

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


def register(app) -> None:
    app.jinja_env.filters["local_time"] = local_time
    app.jinja_env.filters["number"] = number
    app.jinja_env.filters["bytes"] = file_size
