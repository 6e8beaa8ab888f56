"""The export centre (/exports): a user's archives of their posts, in several formats.

Blueprint here; the parts it is built from, none of which knows about Flask requests or RQ:
  formats.py  one streaming writer per format (json, csv, activitystreams)
  storage.py  where export files live: a folder under instance/, or an S3-compatible store
  centre.py   the export's life: start (cooldown, keep), cancel, retry, delete, expire
  routes.py   the pages and the download
"""

from flask import Blueprint

bp = Blueprint("exports", __name__)

from app.exports import routes  # noqa: E402,F401
