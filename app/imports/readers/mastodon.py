"""A Mastodon archive (Settings > Import and export > Request your archive): a zip of
outbox.json (an ActivityStreams OrderedCollection of the account's Create and Announce
activities), actor.json (the account, a Person), following_accounts.csv when the account's
follows were exported beside it, likes, bookmarks and media.

A post is a Create of a Note. Its `content` is HTML as Mastodon renders it; the post keeps
the plain text a person wrote (html_to_text). Boosts (Announce), direct messages,
followers-only posts and replies to other people's posts are skipped, each counted by its
reason; a reply to one's own post (a thread) is kept.

OutboxArchive reads the layout, which our own archive.zip shares
(app/imports/readers/microblog.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from html.parser import HTMLParser

from app.imports.readers.items import (
    MISSING_FIELD,
    NOT_A_DATE,
    NOT_A_POST,
    NOT_AN_OBJECT,
    NOT_TEXT,
    OBJECT_NOT_A_NOTE,
    Archive,
    ArchivePost,
    BrokenItem,
    Item,
    SkippedItem,
)
from app.imports.readers.streams import broken_at, json_items, language_of, parse_time
from app.imports.readers.zips import SafeZip, safe_name
from app.models import PostOrigin

PUBLIC = {"https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"}
POST_TYPES = {"Note", "Question", "Article", "Page"}  # Question: a poll, its text the question
OUTBOX, ACTOR, FOLLOWING = "outbox.json", "actor.json", "following_accounts.csv"


class TextOfHtml(HTMLParser):
    """The text a browser shows of a post's HTML: paragraphs apart by a blank line, <br> a
    line break, entities decoded, a link its text (all of it: Mastodon hides the https:// and
    the end of a long URL in invisible spans, and the URL is what the person wrote). What a
    browser would not show as text (a script, a style) is left out, and no markup is kept."""

    HIDDEN = {"script", "style", "template", "head", "title"}

    def __init__(self, mentions: dict[str, str] | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        # A mention's link shows "@bob" only; the Note's tags say it is "@bob@elsewhere":
        # the link's URL -> the name the person wrote.
        self.mentions = mentions or {}
        self.mention: tuple[int, str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")
        elif tag == "a" and (name := self.mentions.get(dict(attrs).get("href") or "")):
            self.mention = (len(self.parts), name)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        elif tag == "a" and self.mention is not None:
            start, name = self.mention
            self.mention = None
            if "".join(self.parts[start:]).strip() and name.startswith("".join(
                    self.parts[start:]).strip()):
                self.parts[start:] = [name]

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_to_text(content: str, mentions: dict[str, str] | None = None) -> str:
    """The plain text a person wrote, from a post's HTML (TextOfHtml); `mentions` the URL and
    full name of each account mentioned (mentions_of)."""
    parser = TextOfHtml(mentions)
    parser.feed(content)
    parser.close()
    return "".join(parser.parts).strip("\n")


def mentions_of(note: dict) -> dict[str, str]:
    """The accounts a Note mentions, from its tags: URL -> "@name@server"."""
    tags = note.get("tag")
    return {tag["href"]: tag["name"] for tag in tags if isinstance(tag, dict)
            and tag.get("type") == "Mention" and isinstance(tag.get("href"), str)
            and isinstance(tag.get("name"), str) and tag["name"].startswith("@")
            } if isinstance(tags, list) else {}


def addresses(value: object) -> list[str]:
    """`to` or `cc`: one address, a list of them, or nothing."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def reference(value: object) -> str | None:
    """An id given as itself or as an object that has one (inReplyTo, object)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


class OutboxArchive(Archive):
    """The layout of a Mastodon archive: outbox.json, actor.json, following_accounts.csv."""

    kind = "mastodon"
    origin = PostOrigin.MASTODON

    def __init__(self, archive: SafeZip) -> None:
        self.zip = archive
        actor = self.read_actor()
        username = actor.get("preferredUsername")
        self.account = username if isinstance(username, str) and username else None
        self.actor = reference(actor.get("id"))
        self.followers = reference(actor.get("followers"))

    def read_actor(self) -> dict:
        """actor.json, or nothing when it is missing or unreadable (it only names the
        account, and whose posts are replies to whom)."""
        if not self.zip.has(ACTOR):
            return {}
        try:
            actor = json.loads(self.zip.read_small(ACTOR, self.zip.budget()))
        except ValueError:  # also a UnicodeDecodeError
            return {}
        return actor if isinstance(actor, dict) else {}

    def items(self) -> Iterator[Item]:
        outbox = self.zip.open(OUTBOX, self.zip.budget())
        try:
            for number, activity in json_items(outbox, "orderedItems.item", member=OUTBOX):
                yield self.item(number, activity)
        finally:
            outbox.close()

    def item(self, number: int, activity: object) -> Item:
        if not isinstance(activity, dict):
            return BrokenItem(number, NOT_AN_OBJECT, None)
        kind = activity.get("type")
        if kind == "Announce":
            return SkippedItem(number, "boost", reference(activity.get("id")))
        if kind != "Create":
            return BrokenItem(number, NOT_A_POST % {"type": safe_name(str(kind))},
                              reference(activity.get("id")))
        note = activity.get("object")
        if not isinstance(note, dict) or note.get("type") not in POST_TYPES:
            return BrokenItem(number, OBJECT_NOT_A_NOTE, reference(activity.get("id")))
        original_id = reference(note.get("id")) or reference(activity.get("id"))
        skipped = self.skip_reason(activity, note)
        if skipped:
            return SkippedItem(number, skipped, original_id)
        published = note.get("published") or activity.get("published")
        if published is None:
            return BrokenItem(number, MISSING_FIELD % {"field": "published"}, original_id)
        timestamp = parse_time(published)
        if timestamp is None:
            return BrokenItem(number, NOT_A_DATE % {"field": "published"}, original_id)
        body = self.text(note)
        if body is None:
            return BrokenItem(number, MISSING_FIELD % {"field": "content"}, original_id)
        if not isinstance(body, str):
            return BrokenItem(number, NOT_TEXT % {"field": "content"}, original_id)
        if not body.strip():
            return SkippedItem(number, "empty", original_id)
        return ArchivePost(number, body, timestamp, self.language(note), original_id)

    def skip_reason(self, activity: dict, note: dict) -> str | None:
        """Why a post is not imported: seen by fewer people than its followers and the public
        (direct, followers-only), or a reply to someone else; None to import it."""
        audience = addresses(note.get("to")) + addresses(note.get("cc"))
        if "to" not in note and "cc" not in note:
            audience = addresses(activity.get("to")) + addresses(activity.get("cc"))
        if not PUBLIC & set(audience):
            followers = any(address == self.followers or address.endswith("/followers")
                            for address in audience)
            return "private" if followers else "direct"
        replied_to = reference(note.get("inReplyTo"))
        if replied_to is not None:
            owner = (self.actor or reference(activity.get("actor"))
                     or reference(note.get("attributedTo")))
            if owner is None or not replied_to.startswith(owner.rstrip("/") + "/"):
                return "reply"
        return None

    @staticmethod
    def text(note: dict) -> object:
        """The post as its author wrote it: the Note's source when it is plain text (ours
        keeps the post exactly there), else its HTML content as text. A content warning
        (`summary`) comes first, as it is part of what they wrote."""
        source = note.get("source")
        if (isinstance(source, dict) and isinstance(source.get("content"), str)
                and source.get("mediaType", "text/plain") == "text/plain"):
            return source["content"]
        content = note.get("content")
        if content is None and isinstance(note.get("contentMap"), dict):
            content = next(iter(note["contentMap"].values()), None)
        if not isinstance(content, str):
            return content
        text = html_to_text(content, mentions_of(note))
        summary = note.get("summary")
        if isinstance(summary, str) and summary.strip() and text.strip():
            return f"CW: {html_to_text(summary)}\n\n{text}"
        return text

    @staticmethod
    def language(note: dict) -> str | None:
        languages = note.get("contentMap")
        if isinstance(languages, dict) and languages:
            return language_of(next(iter(languages)))
        return language_of(note.get("language"))

    def following(self) -> Iterator[tuple[int, str]]:
        """following_accounts.csv: a header line (Mastodon's "Account address,Show
        boosts,..."; none in the oldest archives), then one account a line."""
        if not self.zip.has(FOLLOWING):
            return
        member = self.zip.open(FOLLOWING, self.zip.budget())
        # An undecodable name is not found, and is reported as such, rather than stopping.
        text = io.TextIOWrapper(member, encoding="utf-8-sig", errors="replace", newline="")
        column = 0
        line = 0
        try:
            for line, row in enumerate(csv.reader(text), 1):
                if line == 1 and "Account address" in row:
                    column = row.index("Account address")
                    continue
                if len(row) > column and row[column].strip():
                    yield line, row[column].strip()
        except csv.Error as exc:
            raise broken_at(line + 1, FOLLOWING) from exc
        finally:
            text.close()

    def close(self) -> None:
        self.zip.close()


class MastodonArchive(OutboxArchive):
    kind = "mastodon"
    origin = PostOrigin.MASTODON
