"""The documentation a newcomer reads: a short README, lines that fit a terminal, links that lead
somewhere, and every setting the code reads documented in docs/configuration.md, once.

Everything is read from the files with regular expressions; nothing is imported or started.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# Reads files only: the database backend changes nothing.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"

README_MAX_BYTES = 10 * 1024
MAX_LINE = 120

# Where the code reads its settings, and how: `os.environ.get("NAME"`, `os.environ["NAME"]`,
# config.py's `_bool("NAME"` and `_ints("NAME"`, the Makefile's `NAME ?=` and `$(NAME)`.
SETTINGS_SOURCES = ["config.py", "gunicorn.conf.py"]
PYTHON_SETTING = re.compile(
    r"""(?:os\.environ\.get\(|os\.environ\[|_bool\(|_ints\()\s*["']([A-Z][A-Z0-9_]*)["']""")
MAKEFILE_SETTING = re.compile(r"^([A-Z][A-Z0-9_]*)\s*\?=", re.MULTILINE)
MAKEFILE_ONLY_PASSED = ["PYTEST_ARGS"]  # read as $(PYTEST_ARGS), never given a default

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
# A settings table row: its first cell holds only setting names in backticks.
SETTING_ROW = re.compile(r"^\|\s*(`[A-Z][A-Z0-9_]*`(?:\s*,\s*`[A-Z][A-Z0-9_]*`)*)\s*\|")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, in_code = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def settings_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for source in SETTINGS_SOURCES:
        names.update(PYTHON_SETTING.findall((ROOT / source).read_text(encoding="utf-8")))
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    names.update(MAKEFILE_SETTING.findall(makefile))
    names.update(name for name in MAKEFILE_ONLY_PASSED if f"$({name})" in makefile)
    return names


def setting_rows(path: Path) -> list[str]:
    names = []
    for _, line in prose_lines(path):
        match = SETTING_ROW.match(line)
        if match:
            names.extend(name.strip(" `") for name in match.group(1).split(","))
    return names


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_no_long_lines_outside_code_blocks():
    long_lines = [f"{path.relative_to(ROOT)}:{number} ({len(line)} characters)"
                  for path in doc_files()
                  for number, line in prose_lines(path) if len(line) > MAX_LINE]
    assert not long_lines, "lines over 120 characters:\n" + "\n".join(long_lines)


def test_relative_links_lead_to_a_file_and_heading():
    broken = []
    for path in doc_files():
        for number, line in prose_lines(path):
            for target in LINK.findall(INLINE_CODE.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(ROOT)}:{number}: {target}"
                if not linked.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_setting_is_documented_once_in_configuration_md():
    documented = setting_rows(CONFIGURATION)
    missing = sorted(settings_read_by_the_code() - set(documented))
    assert not missing, f"settings read by the code but not in docs/configuration.md: {missing}"
    twice = sorted({name for name in documented if documented.count(name) > 1})
    assert not twice, f"settings with more than one row in docs/configuration.md: {twice}"
    elsewhere = sorted(f"{path.relative_to(ROOT)}: {name}" for path in doc_files()
                       if path != CONFIGURATION for name in setting_rows(path))
    assert not elsewhere, ("settings tables outside docs/configuration.md (link to it instead):\n"
                           + "\n".join(elsewhere))
