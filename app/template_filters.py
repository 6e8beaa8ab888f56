"""Jinja helpers: times are rendered as <time> elements that static/js/microblog.js shows in
the reader's locale and time zone (Intl API, no CDN)."""

from datetime import datetime

from markupsafe import Markup, escape


def local_time(value: datetime | None, style: str = "datetime") -> Markup:
    if value is None:
        return Markup("")
    iso = value.isoformat(timespec="seconds") + "Z"
    return Markup('<time class="local-time" datetime="{0}" data-style="{1}">{2} UTC</time>').format(
        iso, escape(style), value.strftime("%Y-%m-%d %H:%M"))


def register(app) -> None:
    app.jinja_env.filters["local_time"] = local_time
