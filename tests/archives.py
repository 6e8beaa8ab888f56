"""Archives for the import tests, built the way each service writes them, and hostile files.

Every builder writes one file at `path` and returns `path` (a str), so that a test reads:

    archive = mastodon_archive(tmp_path / "archive.zip", posts=["hello", "second post"],
                               boosts=2, replies_to_others=1)

Posts are given as plain text, as their author wrote it; the builder turns each into what the
service stores (Mastodon: HTML as it renders a toot; X: `full_text` with its `&amp;`
escapes), so that a test can compare what a reader gives back with the very text given here.
A post may also be a dict, for what plain text cannot say (its time, language, raw HTML);
see each builder. Times default to BASE, one minute apart, in the order given.

- mastodon_archive: a Mastodon archive (zip): outbox.json as Mastodon's BackupService writes
  it (ActivityPub::ActivitySerializer: Create of Note, Announce), actor.json,
  following_accounts.csv (Mastodon's follow export layout), likes.json, bookmarks.json.
- x_archive: an X (Twitter) archive (zip): data/tweets.js (`window.YTD.tweets.part0 = [...]`,
  each item {"tweet": {...}}), data/account.js, and a few of the other data/*.js files.
- posts_json, posts_csv: our own posts.json and posts.csv for posts given here (for a real
  export of a user's posts, use app.exports.formats.write_export).
- Hostile: zip_bomb, zip_with_many_members (with_directory_count: its end record lying
  about it), zip_with_traversal_names, truncated_zip, encrypted_zip, pdf_file,
  image_file, malformed_posts_json, malformed_outbox_archive,
  hostile_mastodon_archive and hostile_x_archive (HOSTILE_TEXTS as their posts' text).
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import json
import os
import re
import struct
import zipfile
from collections.abc import Iterable
from datetime import datetime, timedelta

from app.exports.formats import CSV_HEADER, neutralise_cell

BASE = datetime(2024, 3, 1, 9, 30, 0)
AS_PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
MASTODON_HOST = "mastodon.example"
OTHER_ACTOR = "https://elsewhere.example/users/bob"
X_ACCOUNT_ID = "1234567890"
X_OTHER_ID = "987654321"
# Text that must stay text: shown escaped on every page, never run.
HOSTILE_TEXTS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"]

PathLike = str | os.PathLike
# A field a builder leaves out of an item: posts_json(path, [{"body": ABSENT}]).
ABSENT = object()


def stamp(index: int) -> datetime:
    """The default time of the index-th post of a builder: BASE, one minute apart."""
    return BASE + timedelta(minutes=index)


# --------------------------------------------------------------------------- Mastodon

def toot_html(text: str) -> str:
    """A toot's `content` as Mastodon renders plain text (TextFormatter): paragraphs in <p>,
    line breaks as <br />, text escaped, links with their scheme and the end of a long URL in
    invisible spans, hashtags and mentions as links."""
    def link(token: str) -> str:
        if token.startswith("#"):
            return (f'<a href="https://{MASTODON_HOST}/tags/{token[1:]}" class="mention '
                    f'hashtag" rel="tag">#<span>{html.escape(token[1:])}</span></a>')
        if token.startswith("@"):
            # The link shows the username only; the Note's tag has the full name.
            return (f'<span class="h-card" translate="no"><a href="{mention_url(token)}" '
                    f'class="u-url mention">@<span>{html.escape(token[1:].split("@")[0])}'
                    f'</span></a></span>')
        scheme, rest = token.split("://", 1)
        shown, hidden = rest[:30], rest[30:]
        return (f'<a href="{html.escape(token)}" target="_blank" rel="nofollow noopener" '
                f'translate="no"><span class="invisible">{scheme}://</span><span class="'
                f'{"ellipsis" if hidden else ""}">{html.escape(shown)}</span><span class='
                f'"invisible">{html.escape(hidden)}</span></a>')

    def line(text_line: str) -> str:
        pieces = re.split(r"(https?://\S+|(?<!\w)#\w+|(?<!\w)@\w+(?:@[\w.]+\w)?)", text_line)
        return "".join(link(piece) if i % 2 else html.escape(piece)
                       for i, piece in enumerate(pieces))

    paragraphs = text.replace("\r\n", "\n").split("\n\n")
    return "".join("<p>" + "<br />".join(line(part) for part in paragraph.split("\n")) + "</p>"
                   for paragraph in paragraphs)


MENTION = re.compile(r"(?<!\w)@\w+(?:@[\w.]+\w)?")


def mention_url(name: str) -> str:
    """The profile URL of a mentioned account (@bob, or @bob@server)."""
    user, _, server = name[1:].partition("@")
    return f"https://{server or MASTODON_HOST}/@{user}"


def mastodon_archive(path: PathLike, posts: Iterable[str | dict] = (), boosts: int = 0,
                     replies_to_others: int = 0, direct: int = 0, followers_only: int = 0,
                     self_replies: int = 0, account: str = "alice",
                     following: Iterable[str] | None = None, extra_items: Iterable = (),
                     members: dict[str, bytes] | None = None) -> str:
    """A Mastodon archive of `account` on mastodon.example.

    posts: public toots, oldest first: plain text, or a dict with "text" (or "html": the
    content as it is), "published" (datetime), "language" ("en"; None for none),
    "summary" (a content warning), "in_reply_to" (a URL), "to"/"cc" (lists), "no_published"
    or "no_content" (True: the toot without its `published` or its `content`).
    Then, in this order after them: `boosts` Announces of someone else's post,
    `replies_to_others` public replies to someone else, `direct` direct messages,
    `followers_only` followers-only toots, `self_replies` public replies to the account's own
    first toot (a thread: imported), then `extra_items` as they are (raw activities, or any
    JSON value). following: the addresses of following_accounts.csv (none written when None).
    members: more files of the zip, by name."""
    actor = f"https://{MASTODON_HOST}/users/{account}"
    followers = f"{actor}/followers"
    items: list = []
    serial = iter(range(100_000_000_000_000_000, 200_000_000_000_000_000))

    def create(index: int, spec: str | dict, **defaults) -> dict:
        spec = {"text": spec} if isinstance(spec, str) else dict(spec)
        spec = {**defaults, **spec}
        status_id = next(serial)
        note_id = f"{actor}/statuses/{status_id}"
        published = spec.get("published") or stamp(index)
        published_text = (published if isinstance(published, str)
                          else published.strftime("%Y-%m-%dT%H:%M:%SZ"))
        content = spec["html"] if "html" in spec else toot_html(spec.get("text", ""))
        language = spec.get("language", "en")
        to, cc = spec.get("to", [AS_PUBLIC]), spec.get("cc", [followers])
        note = {
            "id": note_id, "type": "Note", "summary": spec.get("summary"),
            "inReplyTo": spec.get("in_reply_to"), "published": published_text,
            "url": f"https://{MASTODON_HOST}/@{account}/{status_id}", "attributedTo": actor,
            "to": to, "cc": cc, "sensitive": bool(spec.get("summary")),
            "atomUri": note_id, "inReplyToAtomUri": spec.get("in_reply_to"),
            "conversation": f"tag:{MASTODON_HOST},2024-03-01:objectId={status_id}:objectType="
                            "Conversation",
            "content": content,
        }
        if language:
            note["contentMap"] = {language: content}
        tags = [{"type": "Mention", "href": mention_url(name), "name": name}
                for name in MENTION.findall(spec.get("text", ""))]
        note.update({"attachment": [], "tag": tags, "replies": {
            "id": f"{note_id}/replies", "type": "Collection", "first": {
                "type": "CollectionPage", "next": f"{note_id}/replies?only_other_accounts=true"
                "&page=true", "partOf": f"{note_id}/replies", "items": []}},
            "likes": {"id": f"{note_id}/likes", "type": "Collection", "totalItems": 0},
            "shares": {"id": f"{note_id}/shares", "type": "Collection", "totalItems": 0}})
        activity = {"id": f"{note_id}/activity", "type": "Create", "actor": actor,
                    "published": published_text, "to": to, "cc": cc, "object": note}
        if spec.get("no_published"):
            del note["published"], activity["published"]
        if spec.get("no_content"):
            del note["content"]
            note.pop("contentMap", None)
        return activity

    index = 0
    for spec in posts:
        items.append(create(index, spec))
        index += 1
    for _ in range(boosts):
        status_id = next(serial)
        items.append({"id": f"{actor}/statuses/{status_id}/activity", "type": "Announce",
                      "actor": actor, "published": stamp(index).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "to": [AS_PUBLIC], "cc": [OTHER_ACTOR, followers],
                      "object": f"{OTHER_ACTOR}/statuses/{status_id}"})
        index += 1
    for n in range(replies_to_others):
        items.append(create(index, f"@bob@elsewhere.example I agree ({n})",
                            in_reply_to=f"{OTHER_ACTOR}/statuses/{n + 1}"))
        index += 1
    for n in range(direct):
        items.append(create(index, f"@bob@elsewhere.example psst ({n})", to=[OTHER_ACTOR],
                            cc=[]))
        index += 1
    for n in range(followers_only):
        items.append(create(index, f"for my followers ({n})", to=[followers], cc=[]))
        index += 1
    first_note = items[0]["object"]["id"] if items and items[0]["type"] == "Create" else (
        f"{actor}/statuses/1")
    for n in range(self_replies):
        items.append(create(index, f"and another thing ({n})", in_reply_to=first_note))
        index += 1
    items.extend(extra_items)

    # One activity a line (Mastodon writes one long line: the same JSON), so that
    # malformed_outbox_archive can find an item.
    header = json.dumps({"@context": "https://www.w3.org/ns/activitystreams",
                         "id": "outbox.json", "type": "OrderedCollection",
                         "totalItems": len(items)})
    outbox = (header[:-1] + ', "orderedItems": [\n'
              + ",\n".join(json.dumps(item) for item in items) + "\n]}")
    person = {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": actor, "type": "Person", "following": f"{actor}/following",
        "followers": followers, "inbox": f"{actor}/inbox", "outbox": "outbox.json",
        "featured": f"{actor}/collections/featured", "preferredUsername": account,
        "name": account.title(), "summary": "<p>Hello, I am testing.</p>",
        "url": f"https://{MASTODON_HOST}/@{account}", "manuallyApprovesFollowers": False,
        "discoverable": True, "published": "2020-01-01T00:00:00Z",
        "likes": "likes.json", "bookmarks": "bookmarks.json"}
    files = {"outbox.json": outbox.encode(), "actor.json": json.dumps(person).encode(),
             "likes.json": json.dumps(empty_collection("likes.json")).encode(),
             "bookmarks.json": json.dumps(empty_collection("bookmarks.json")).encode()}
    if following is not None:
        files["following_accounts.csv"] = following_csv(following)
    files.update(members or {})
    return write_zip(path, files)


def empty_collection(name: str) -> dict:
    return {"@context": "https://www.w3.org/ns/activitystreams", "id": name,
            "type": "OrderedCollection", "totalItems": 0, "orderedItems": []}


def following_csv(addresses: Iterable[str]) -> bytes:
    """following_accounts.csv as Mastodon exports it (Settings > Import and export)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("Account address", "Show boosts", "Notify on new posts", "Languages"))
    writer.writerows((address, "true", "false", "") for address in addresses)
    return out.getvalue().encode()


# --------------------------------------------------------------------------- X

def x_escape(text: str) -> str:
    """`full_text` as X stores a tweet's text: only &, < and > escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def x_time(moment: datetime) -> str:
    """`created_at` as X writes it: "Wed Oct 10 20:19:24 +0000 2018" (English, whatever the
    locale)."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
              "Dec")
    return (f"{days[moment.weekday()]} {months[moment.month - 1]} {moment.day:02d} "
            f"{moment:%H:%M:%S} +0000 {moment.year}")


def x_archive(path: PathLike, tweets: Iterable[str | dict] = (), retweets: int = 0,
              replies: int = 0, self_replies: int = 0, account: str | None = "alice",
              account_id: str = X_ACCOUNT_ID, wrapped: bool = True,
              tweets_file: str = "data/tweets.js", parts: int = 1,
              extra_items: Iterable = ()) -> str:
    """An X archive of `account` (no data/account.js when None).

    tweets: plain text (escaped as X stores it), or a dict with "text" (or "full_text": as
    X stores it), "created_at" (datetime), "lang" ("en"; "und" for none), "urls" (a list of
    (t.co link, expanded link): the t.co links must be in the text), "media" (the same, for
    a photo), or any other field of a tweet, put in as it is. Then `retweets` retweets,
    `replies` replies to someone else, `self_replies` replies to the account's own first
    tweet, then `extra_items` as they are. wrapped=False writes the tweets without their
    {"tweet": ...} wrapper (older archives); tweets_file "data/tweet.js" as older archives
    name it; parts > 1 spreads the tweets over tweets.js, tweets-part1.js, ..."""
    items: list = []
    serial = iter(range(1_700_000_000_000_000_000, 1_800_000_000_000_000_000))

    def tweet(index: int, spec: str | dict) -> dict:
        spec = {"text": spec} if isinstance(spec, str) else dict(spec)
        tweet_id = str(next(serial))
        full_text = spec.pop("full_text", None)
        if full_text is None:
            full_text = x_escape(spec.pop("text", ""))
        spec.pop("text", None)
        urls = [{"url": short, "expanded_url": long, "display_url": long.split("://")[-1][:26],
                 "indices": [str(full_text.find(short)),
                             str(full_text.find(short) + len(short))]}
                for short, long in spec.pop("urls", ())]
        media = [{"url": short, "expanded_url": long, "id_str": str(next(serial)),
                  "media_url_https": "https://pbs.twimg.example/media/x.jpg", "type": "photo",
                  "display_url": "pic.x.com/x"} for short, long in spec.pop("media", ())]
        created = spec.pop("created_at", None) or stamp(index)
        body = {
            "edit_info": {"initial": {"editTweetIds": [tweet_id], "editableUntil":
                                      "2024-03-01T10:30:00.000Z", "editsRemaining": "5",
                                      "isEditEligible": True}},
            "retweeted": False,
            "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
            "entities": {"hashtags": [], "symbols": [], "user_mentions": [], "urls": urls},
            "display_text_range": ["0", str(len(full_text))],
            "favorite_count": "0", "id_str": tweet_id, "truncated": False,
            "retweet_count": "0", "id": tweet_id,
            "created_at": created if isinstance(created, str) else x_time(created),
            "favorited": False, "full_text": full_text, "lang": spec.pop("lang", "en"),
        }
        if media:
            body["entities"]["media"] = media
            body["extended_entities"] = {"media": media}
        body.update(spec)
        return body

    index = 0
    for spec in tweets:
        items.append(tweet(index, spec))
        index += 1
    for n in range(retweets):
        items.append(tweet(index, {"full_text": f"RT @bob: something worth sharing ({n})",
                                   "entities": {"user_mentions": [
                                       {"name": "Bob", "screen_name": "bob", "id_str":
                                        X_OTHER_ID, "id": X_OTHER_ID,
                                        "indices": ["3", "7"]}], "urls": []}}))
        index += 1
    for n in range(replies):
        items.append(tweet(index, {"text": f"@bob thanks ({n})",
                                   "in_reply_to_status_id_str": str(n + 1),
                                   "in_reply_to_user_id_str": X_OTHER_ID,
                                   "in_reply_to_screen_name": "bob"}))
        index += 1
    first_id = items[0]["id_str"] if items else "1"
    for n in range(self_replies):
        items.append(tweet(index, {"text": f"and another thing ({n})",
                                   "in_reply_to_status_id_str": first_id,
                                   "in_reply_to_user_id_str": account_id,
                                   "in_reply_to_screen_name": account or "alice"}))
        index += 1
    wrapped_items = [{"tweet": item} if wrapped else item for item in items]
    wrapped_items.extend(extra_items)

    files: dict[str, bytes] = {}
    kind = "tweets" if tweets_file.endswith("tweets.js") else "tweet"
    share = -(-len(wrapped_items) // parts) if wrapped_items else 0
    for part in range(parts):
        chunk = wrapped_items[part * share:(part + 1) * share] if share else []
        name = tweets_file if part == 0 else f"data/{kind}-part{part}.js"
        files[name] = ytd(kind, part, chunk)
    if account is not None:
        files["data/account.js"] = ytd("account", 0, [{"account": {
            "email": f"{account}@example.com", "createdVia": "web", "username": account,
            "accountId": account_id, "createdAt": "2010-01-01T00:00:00.000Z",
            "accountDisplayName": account.title()}}])
    files["data/follower.js"] = ytd("follower", 0, [])
    files["data/like.js"] = ytd("like", 0, [])
    files["data/manifest.js"] = b'window.__THAR_CONFIG = {"userInfo": {}}\n'
    files["Your archive.html"] = b"<!DOCTYPE html><html><body>Your archive</body></html>"
    return write_zip(path, files)


def ytd(kind: str, part: int, values: list) -> bytes:
    """A data/*.js file of an X archive: `window.YTD.<kind>.part<N> = [ ... ]`."""
    return f"window.YTD.{kind}.part{part} = {json.dumps(values, indent=2)}".encode()


# --------------------------------------------------------------------------- ours

def posts_json(path: PathLike, posts: Iterable[str | dict] = (), user: str = "alice",
               count: int | None = None) -> str:
    """Our posts.json (app/exports/formats.py write_json's layout) of `posts` (plain text, or
    a dict of id/body/timestamp/language overriding the defaults), or of `count` generated
    posts ("post 1", ...), written a line at a time (a million posts fit any memory)."""
    header = {"format": "microblog-posts", "version": 1, "user": user,
              "exported_at": "2024-04-01T00:00:00Z"}
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(json.dumps(header)[:-1] + ', "posts": [')
        source = ((f"post {n}" for n in range(1, count + 1)) if count is not None else posts)
        for index, spec in enumerate(source):
            spec = {"body": spec} if isinstance(spec, str) else dict(spec)
            moment = spec.get("timestamp") or stamp(index)
            post = {"id": index + 1, "body": "", "language": "en", **spec,
                    "timestamp": moment.isoformat() + "Z" if isinstance(moment, datetime)
                    else moment}
            post = {key: value for key, value in post.items() if value is not ABSENT}
            out.write(("\n" if index == 0 else ",\n") + json.dumps(post, ensure_ascii=False))
        out.write("\n]}\n")
    return str(path)


def posts_csv(path: PathLike, posts: Iterable[str | dict] = ()) -> str:
    """Our posts.csv (write_csv's layout, with its formula cells neutralised) of `posts`."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(codecs.BOM_UTF8.decode())
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        for index, spec in enumerate(posts):
            spec = {"body": spec} if isinstance(spec, str) else dict(spec)
            moment = spec.get("timestamp") or stamp(index)
            writer.writerow((spec.get("id", index + 1), moment.isoformat() + "Z",
                             neutralise_cell(spec.get("language") or ""),
                             neutralise_cell(spec.get("body", ""))))
    return str(path)


# --------------------------------------------------------------------------- hostile

def write_zip(path: PathLike, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return str(path)


def zip_bomb(path: PathLike, unpacked: int = 64 * 1024 * 1024, member: str = "outbox.json"
             ) -> str:
    """A zip whose `member` unpacks to `unpacked` bytes of zeros from about a thousandth of
    that (deflate's best ratio): far past any sane compression ratio."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=9) as archive:
        with archive.open(member, "w", force_zip64=True) as out:
            block = b"\0" * (1024 * 1024)
            for _ in range(unpacked // len(block)):
                out.write(block)
    return str(path)


def zip_with_many_members(path: PathLike, count: int) -> str:
    """A Mastodon-looking zip (outbox.json and `count` - 1 empty files)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("outbox.json", json.dumps(empty_collection("outbox.json")))
        for n in range(count - 1):
            archive.writestr(f"media_attachments/{n}.txt", b"")
    return str(path)


def zip_with_traversal_names(path: PathLike, with_outbox: bool = True) -> str:
    """A zip with members named to escape a folder they might be extracted to
    ("../../evil.txt", "/tmp/evil.txt", "../outbox.json"); with_outbox adds a real
    Mastodon outbox.json of one post ("traversal survivor") at the top."""
    files = {"../../evil.txt": b"escaped", "/tmp/evil-absolute.txt": b"escaped",
             "../outbox.json": json.dumps(empty_collection("outbox.json")).encode()}
    if with_outbox:
        real = io.BytesIO()
        mastodon_archive(real, posts=["traversal survivor"])
        with zipfile.ZipFile(real) as source:
            files.update({name: source.read(name) for name in source.namelist()})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo("placeholder")
            info.filename = name  # ZipInfo() would strip the leading "/" and ".."
            archive.writestr(info, data)
    return str(path)


def with_directory_count(path: PathLike, count: int) -> str:
    """The zip at `path` with its end record saying it holds `count` members, whatever its
    directory lists (a lie zipfile does not notice: it reads the directory by its size)."""
    with open(path, "r+b") as f:
        data = f.read()
        at = data.rfind(b"PK\x05\x06")
        f.seek(at + 8)
        f.write(struct.pack("<2H", count, count))
    return str(path)


def encrypted_zip(path: PathLike) -> str:
    """A Mastodon archive whose outbox.json is marked encrypted (traditional PKWARE
    encryption's flag, in its local header and its directory entry)."""
    mastodon_archive(path, posts=["secret"])
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo("outbox.json").header_offset
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[offset + 6] |= 0x1  # local header: general purpose flags
        entry = data.find(b"PK\x01\x02")
        while entry >= 0:
            name_length = struct.unpack_from("<H", data, entry + 28)[0]
            if data[entry + 46:entry + 46 + name_length] == b"outbox.json":
                data[entry + 8] |= 0x1  # directory entry: general purpose flags
                break
            entry = data.find(b"PK\x01\x02", entry + 4)
        f.seek(0)
        f.write(data)
    return str(path)


def truncated_zip(path: PathLike, keep: float = 0.5) -> str:
    """A Mastodon archive of 200 posts cut short: its first `keep` part only (the directory
    at the end of a zip is gone)."""
    mastodon_archive(path, posts=[f"post number {n} " * 10 for n in range(200)])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return str(path)


def pdf_file(path: PathLike) -> str:
    """The beginning of a PDF document."""
    with open(path, "wb") as f:
        f.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\n"
                b"endobj\n")
    return str(path)


def image_file(path: PathLike) -> str:
    """The beginning of a PNG image."""
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01"
                b"\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
    return str(path)


def malformed_posts_json(path: PathLike, count: int, broken_at: int) -> str:
    """posts.json of `count` posts ("post 1", ...) whose item `broken_at` is not JSON (a key
    without its colon): the items before it are readable, nothing after it is."""
    posts_json(path, count=count)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is the header and "posts": [; item n is line n.
    lines[broken_at] = lines[broken_at].replace('"body": ', '"body" ', 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return str(path)


def malformed_outbox_archive(path: PathLike, count: int, broken_at: int) -> str:
    """A Mastodon archive of `count` toots ("toot 1", ...) whose outbox.json breaks off
    (is cut short) inside item `broken_at`."""
    mastodon_archive(path, posts=[f"toot {n}" for n in range(1, count + 1)])
    with zipfile.ZipFile(path) as source:
        files = {name: source.read(name) for name in source.namelist()}
    lines = files["outbox.json"].split(b"\n")  # item n is line n
    files["outbox.json"] = b"\n".join(lines[:broken_at]) + b"\n" + lines[broken_at][:40]
    return write_zip(path, files)


def hostile_mastodon_archive(path: PathLike) -> str:
    """A Mastodon archive whose toots carry markup: first HOSTILE_TEXTS as a person typed
    them (escaped in the HTML, as Mastodon stores them: they must come back as that very
    text), then the same as raw markup in `content` (a hostile server's: it must come back
    with no markup at all)."""
    raw = [{"html": f"<p>raw {HOSTILE_TEXTS[0]} and {HOSTILE_TEXTS[1]} markup</p>"},
           {"html": '<p><a href="javascript:alert(1)" onclick="alert(1)">click</a></p>'}]
    return mastodon_archive(path, posts=[*HOSTILE_TEXTS, *raw])


def hostile_x_archive(path: PathLike) -> str:
    """An X archive whose tweets are HOSTILE_TEXTS (escaped in full_text, as X stores them)."""
    return x_archive(path, tweets=HOSTILE_TEXTS)
