"""The site's icon: browsers ask for /favicon.ico on the first page of a site whatever the
page links, and pages link an SVG icon beside it; both are our own files, which the
Content-Security-Policy's img-src allows."""

from __future__ import annotations

import re

ICO_MAGIC = b"\x00\x00\x01\x00"


def test_favicon_ico_is_an_icon_not_a_404(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.content_type in ("image/vnd.microsoft.icon", "image/x-icon")
    assert response.data.startswith(ICO_MAGIC)
    assert response.cache_control.max_age and response.cache_control.max_age >= 3600


def test_every_page_links_icons_that_answer_with_images(client):
    html = client.get("/auth/login").get_data(as_text=True)
    links = re.findall(r'<link rel="icon" href="([^"]+)"', html)
    assert "/favicon.ico" in links
    assert any(link.endswith(".svg") for link in links), links
    for link in links:
        response = client.get(link)
        assert response.status_code == 200, link
        assert response.content_type.startswith("image/"), (link, response.content_type)


def test_the_content_security_policy_allows_the_icons(client):
    policy = client.get("/auth/login").headers["Content-Security-Policy"]
    img_src = next(d for d in policy.split("; ") if d.startswith("img-src "))
    assert "'self'" in img_src.split()
