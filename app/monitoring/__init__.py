"""GET /metrics: the Prometheus endpoint (figures in app/jobs/metrics.py)."""

from flask import Blueprint

from app.security import hide_area

bp = Blueprint("monitoring", __name__)

from app.monitoring import routes  # noqa: E402

hide_area(bp, "/metrics", routes.may_read_metrics)


@bp.record_once
def _check_settings(state) -> None:
    # A mistyped METRICS_ALLOW stops the app at start, not at the first scrape.
    routes.parse_allow_list(state.app.config["METRICS_ALLOW"])
