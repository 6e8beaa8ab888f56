"""An archive's items in batches, read ahead: a thread of its own reads (and parses: a
Mastodon toot's HTML costs as much as inserting it) the next batches while the importer
writes the one before. Both overlap where either waits outside Python (the database's
round trips, its disk, zlib), so an import takes about the longer of the two, not their
sum. At most `depth` batches wait, so memory stays flat whatever the archive's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# How often the reading thread looks whether its reader has stopped listening (seconds).
POLL = 0.1


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, max(size, 1))):
        yield batch


class _End:
    """What the reading thread puts last: nothing more (error None), or what it raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def read_ahead(items: Iterable[T], size: int, depth: int = 2) -> Iterator[list[T]]:
    """batches(items, size), read by a thread while the caller works on the batch it was
    given. An error of the reading (an archive refused mid-way) is raised here, where the
    caller takes the batch that would have followed. When the caller stops early (a cancel,
    an error of its own, the generator closed), the thread stops after the batch it is
    reading, and is waited for: the archive is never read after this generator is done."""
    waiting: queue.Queue[list[T] | _End] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def put(value: list[T] | _End) -> bool:
        while not stop.is_set():
            try:
                waiting.put(value, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches(items, size):
                if not put(batch):
                    return
        except BaseException as exc:  # handed to the caller, raised in its thread
            put(_End(exc))
            return
        put(_End(None))

    reader = threading.Thread(target=read, name="import-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            value = waiting.get()
            if isinstance(value, _End):
                if value.error is not None:
                    raise value.error
                return
            yield value
    finally:
        stop.set()
        reader.join()
