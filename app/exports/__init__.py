"""The export centre (/exports): a user's archives of their posts, in several formats.

The parts it is built from, none of which knows about Flask requests or RQ:
  formats.py  one streaming writer per format (json, csv, activitystreams)
  storage.py  where export files live: a folder under instance/, or an S3-compatible store
  centre.py   the Export rows: what may be done (format, cooldown), the file's record,
              keep, expiry
  delivery.py the file written and the mail sent, for the task (app/tasks.py)
and, for the web only:
  routes.py   the blueprint (`bp`, which create_app registers): the pages and the download

Unlike the other blueprint packages, this one keeps its blueprint in routes.py rather than
here: a worker imports the package (for centre, formats, delivery) and must not import the
views, their forms and the rate limiter with it (docs/performance.md §1).
"""
