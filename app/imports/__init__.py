"""The import: archives brought in (ours, Mastodon's, X's), previewed, then imported in the
background, each post exactly once.

- readers/: which kind an archive is (from its content) and its items, read as a stream;
  one module per kind.
- identity.py: what makes two posts the same post (the unique key an import relies on).
- centre.py: the Import rows: upload, preview recorded, confirm, cancel, expiry; the only
  code that changes them. Knows nothing of the job system, as app/exports/centre.py.
- importer.py: the worker's part: the preview, and the import in batches, each committed
  with its place in the archive, so that a retried import goes on where it stopped; the
  mail when it is done.
- report.py: the summary as CSV.
- routes.py: the /imports pages (the blueprint is made there, as the export centre's).
"""
