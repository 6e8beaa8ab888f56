"""A job that does nothing: what the dispatch benchmark enqueues with plain `queue.enqueue`
to measure RQ and the worker alone."""


def noop() -> None:
    """Return at once."""
