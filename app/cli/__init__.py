"""Flask CLI commands, one module per group; their output helpers in app/cli/output.py.

- `flask translate update|compile|init LANG` (translate.py): the translations.
- `flask tasks reconcile|list|show|retry|cancel|purge|stats ...` (tasks.py): background tasks.
- `flask users promote|demote|list` (users.py): the admin role.
- `flask posts import FILE --user NAME [--yes]` (posts.py): an archive imported.
"""

from app.cli import posts, tasks, translate, users


def register(app) -> None:
    translate.register(app)
    tasks.register(app)
    users.register(app)
    posts.register(app)
