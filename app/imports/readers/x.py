"""An X (Twitter) archive (Settings > Your account > Download an archive of your data): a zip
whose data/ folder holds one JavaScript file per kind of data, each an assignment of a JSON
array: `window.YTD.tweets.part0 = [ {"tweet": {...}}, ... ]`.

The posts are in data/tweets.js (data/tweet.js in older archives; a large archive adds
data/tweets-part1.js, -part2.js, ...), and the account in data/account.js. A tweet keeps its
`full_text` with `&amp;`, `&lt;` and `&gt;` decoded and its t.co links replaced by the links
they stand for, and its `created_at` ("Wed Oct 10 20:19:24 +0000 2018"). Retweets and replies
to other people are skipped, each counted by its reason; a reply to oneself (a thread) is
kept.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

from app.imports.readers.items import (
    BAD_PREFIX,
    MISSING_FIELD,
    NOT_A_DATE,
    NOT_AN_OBJECT,
    NOT_TEXT,
    Archive,
    ArchivePost,
    ArchiveRefused,
    BrokenItem,
    Item,
    SkippedItem,
)
from app.imports.readers.streams import HeadedStream, json_items, language_of
from app.imports.readers.zips import ReadBudget, SafeZip
from app.models import PostOrigin

ACCOUNT = "data/account.js"
# The files of tweets, in the order they are read: tweets.js (or tweet.js), then its parts.
TWEETS = re.compile(r"data/tweets?(?:-part(\d+))?\.js")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Where `window.YTD.tweets.part0 = ` must have ended.
PREFIX_LIMIT = 1024
# X's languages for "no language": undefined, no linguistic content, and its q* codes (a
# tweet of only media, hashtags, mentions, a tweet too short to tell).
NO_LANGUAGE = re.compile(r"und|zxx|q[a-z]{2}")


def tweet_files(names: set[str]) -> list[str]:
    """The members that hold tweets, in reading order."""
    found = [(int(match[1] or 0), name) for name in names if (match := TWEETS.fullmatch(name))]
    return [name for _, name in sorted(found)]


def after_assignment(stream, member: str) -> HeadedStream:
    """The JSON of a data/*.js file: what follows its `window.YTD.<kind>.partN = `."""
    head = stream.read(PREFIX_LIMIT)
    start = head.find(b"=")
    if start < 0 or not head[:start].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"window."):
        raise ArchiveRefused(BAD_PREFIX, member=member)
    return HeadedStream(head[start + 1:], stream)


def parse_created_at(value: object) -> datetime | None:
    """`created_at` ("Wed Oct 10 20:19:24 +0000 2018") as naive UTC; None when it is not
    one. Read by hand: strptime's %a and %b follow the process's locale."""
    if not isinstance(value, str):
        return None
    try:
        _, month, day, clock, offset, year = value.split()
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        moment = datetime(int(year), MONTHS.index(month) + 1, int(day), hours, minutes, seconds)
        if len(offset) != 5 or offset[0] not in "+-":
            return None
        shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    except ValueError:  # also a month not in MONTHS, a wrong number of parts
        return None
    return moment - shift if offset[0] == "+" else moment + shift


def expand_links(text: str, tweet: dict) -> str:
    """t.co links replaced by the links they stand for (entities.urls), and a photo's or a
    video's by its page (entities.media)."""
    entities = tweet.get("entities") if isinstance(tweet.get("entities"), dict) else {}
    extended = (tweet.get("extended_entities")
                if isinstance(tweet.get("extended_entities"), dict) else {})
    links = [*(entities.get("urls") or ()), *(entities.get("media") or ()),
             *(extended.get("media") or ())]
    for link in links:
        if not isinstance(link, dict):
            continue
        short, expanded = link.get("url"), link.get("expanded_url")
        if isinstance(short, str) and short and isinstance(expanded, str) and expanded:
            text = text.replace(short, expanded)
    return text


class XArchive(Archive):
    kind = "x"
    origin = PostOrigin.X

    def __init__(self, archive: SafeZip) -> None:
        self.zip = archive
        self.parts = tweet_files(archive.names_under_root())
        account = self.read_account()
        username = account.get("username")
        self.account = username if isinstance(username, str) and username else None
        account_id = account.get("accountId")
        self.account_id = str(account_id) if isinstance(account_id, str | int) else None

    def read_account(self) -> dict:
        """data/account.js's account, or nothing when it is missing or unreadable (it only
        names the account, and whose tweets are replies to whom)."""
        if not self.zip.has(ACCOUNT):
            return {}
        budget = self.zip.budget()
        member = self.zip.open(ACCOUNT, budget)
        try:
            accounts = json.loads(after_assignment(member, ACCOUNT).read(1024 * 1024))
            return accounts[0]["account"] if isinstance(accounts[0]["account"], dict) else {}
        except ArchiveRefused as exc:
            if exc.template != BAD_PREFIX:  # damaged: the archive is
                raise
            return {}
        except (ValueError, LookupError, TypeError):
            return {}
        finally:
            member.close()

    def items(self) -> Iterator[Item]:
        budget: ReadBudget = self.zip.budget()
        read = 0  # items of the parts before: numbering goes on across parts
        for name in self.parts:
            member = self.zip.open(name, budget)
            try:
                for number, value in json_items(after_assignment(member, name), "item",
                                                member=name, first=read + 1):
                    read = number
                    yield self.item(number, value)
            finally:
                member.close()

    def item(self, number: int, value: object) -> Item:
        tweet = value.get("tweet", value) if isinstance(value, dict) else None
        if not isinstance(tweet, dict):
            return BrokenItem(number, NOT_AN_OBJECT, None)
        tweet_id = tweet.get("id_str") or tweet.get("id")
        original_id = str(tweet_id) if isinstance(tweet_id, str | int) and tweet_id else None
        text = tweet.get("full_text", tweet.get("text"))
        if "retweeted_status" in tweet or (isinstance(text, str) and text.startswith("RT @")):
            return SkippedItem(number, "boost", original_id)
        if self.replies_to_someone_else(tweet):
            return SkippedItem(number, "reply", original_id)
        if tweet.get("created_at") is None:
            return BrokenItem(number, MISSING_FIELD % {"field": "created_at"}, original_id)
        timestamp = parse_created_at(tweet["created_at"])
        if timestamp is None:
            return BrokenItem(number, NOT_A_DATE % {"field": "created_at"}, original_id)
        if text is None:
            return BrokenItem(number, MISSING_FIELD % {"field": "full_text"}, original_id)
        if not isinstance(text, str):
            return BrokenItem(number, NOT_TEXT % {"field": "full_text"}, original_id)
        # Unescaped before the links go in: a link's own `&` is not an escape.
        body = expand_links(html.unescape(text), tweet)
        if not body.strip():
            return SkippedItem(number, "empty", original_id)
        lang = tweet.get("lang")
        language = None if isinstance(lang, str) and NO_LANGUAGE.fullmatch(lang) else lang
        return ArchivePost(number, body, timestamp, language_of(language), original_id)

    def replies_to_someone_else(self, tweet: dict) -> bool:
        replied_to = tweet.get("in_reply_to_user_id_str") or tweet.get("in_reply_to_user_id")
        if not replied_to:
            return False
        if self.account_id is not None:
            return str(replied_to) != self.account_id
        # No account.js: the name the tweet replies to, else a reply to anyone.
        name = tweet.get("in_reply_to_screen_name")
        return not (isinstance(name, str) and self.account
                    and name.lower() == self.account.lower())

    def close(self) -> None:
        self.zip.close()
