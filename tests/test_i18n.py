"""Translations: the language comes from Accept-Language, and the Spanish and Korean catalogues
translate every string of the app."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import g

from app import babel, db
from app import tasks as _worker_tasks  # noqa: F401  (see test_email.py: imported early)
from tests.conftest import ROOT, csrf_token, login, make_user, run_jobs_in_process

# Catalogues and rendered pages: the database backend changes no translation, so
# CI runs it once (SQLite).
pytestmark = pytest.mark.once

TRANSLATIONS = ROOT / "app" / "translations"
LANGUAGES = ("es", "ko")


def read_catalog(lang):
    with (TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=lang)


@pytest.fixture(scope="module")
def compiled_catalogs(tmp_path_factory) -> Path:
    """The .po files as they are in the repository, compiled (the .mo files are not kept in
    git, and may be stale in a working copy)."""
    folder = tmp_path_factory.mktemp("translations")
    for lang in LANGUAGES:
        target = folder / lang / "LC_MESSAGES"
        target.mkdir(parents=True)
        with (target / "messages.mo").open("wb") as f:
            write_mo(f, read_catalog(lang))
    return folder


@pytest.fixture(autouse=True)
def translated_app(compiled_catalogs, config_overrides, request):
    config_overrides["BABEL_TRANSLATION_DIRECTORIES"] = str(compiled_catalogs)
    # Flask-Babel caches loaded catalogues process-wide, across app instances.
    babel.domain_instance.cache.clear()
    app = request.getfixturevalue("app")

    # Flask-Babel keeps the request's locale in `g`. A served request has an app context of
    # its own, but the test requests share the one the `app` fixture holds open.
    @app.teardown_request
    def forget_locale(exc):
        g.pop("_flask_babel", None)

    yield app
    babel.domain_instance.cache.clear()


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def page(client, url, language):
    response = client.get(url, headers={"Accept-Language": language, "Accept": BROWSER})
    return response.get_data(as_text=True)


# --------------------------------------------------------------------------- pages

@pytest.mark.parametrize("language, texts", [
    ("en", ["Sign In", "Username", "Password", "Remember Me", "New User?"]),
    ("es", ["Iniciar sesión", "Nombre de usuario", "Contraseña", "Recordarme", "¿Eres nuevo?"]),
    ("ko", ["로그인", "사용자 이름", "비밀번호", "로그인 상태 유지", "처음 오셨나요?"]),
])
def test_login_page_is_served_in_the_requested_language(client, app, language, texts):
    html = page(client, "/auth/login", language)
    assert f'<html lang="{language}">' in html
    for text in texts:
        assert text in html
    if language != "en":
        assert "Remember Me" not in html
        assert "New User?" not in html


@pytest.mark.parametrize("header, lang", [
    ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
    ("es-MX,es;q=0.9", "es"),
    ("fr-FR,fr;q=0.9,ko;q=0.5,es;q=0.4", "ko"),
    ("de-DE,de;q=0.9", "en"),
    ("", "en"),
])
def test_the_best_supported_language_is_chosen(client, app, header, lang):
    assert f'<html lang="{lang}">' in page(client, "/auth/login", header)


def test_pages_of_a_logged_in_user_are_translated(client, app):
    make_user()
    login(client)
    html = page(client, "/index", "ko")
    assert "안녕하세요, susan 님!" in html
    assert "둘러보기" in html
    assert "아직 게시물이 없습니다." in html
    html = page(client, "/user/susan", "es")
    assert "Edita tu perfil" in html
    assert "Exporta tus publicaciones" in html
    assert "0 seguidores, 0 seguidos" in html


@pytest.mark.parametrize("language, one, two", [
    ("en", "1 follower, 0 following", "2 followers, 0 following"),
    ("es", "1 seguidor, 0 seguidos", "2 seguidores, 0 seguidos"),
    ("ko", "팔로워 1명, 팔로잉 0명", "팔로워 2명, 팔로잉 0명"),
])
def test_follower_counts_use_the_plural_rules_of_the_language(client, app, language, one,
                                                              two):
    susan, bob, carol = make_user(), make_user("bob"), make_user("carol")
    login(client)
    susan.follow(bob)
    db.session.commit()
    assert one in page(client, "/user/bob", language)
    carol.follow(bob)
    db.session.commit()
    assert two in page(client, "/user/bob", language)
    assert two in page(client, "/user/bob/popup", language)


def test_flash_messages_are_translated(client, app):
    make_user()
    client.post("/auth/login", data={"username": "susan", "password": "wrong",
                                     "csrf_token": csrf_token(client)},
                headers={"Accept-Language": "ko"})
    assert "사용자 이름 또는 비밀번호가 올바르지 않습니다" in page(client, "/auth/login", "ko")


def test_the_login_required_message_is_translated(client, app):
    client.get("/explore", headers={"Accept-Language": "es"})
    assert "Inicia sesión para acceder a esta página." in page(client, "/auth/login", "es")


def test_error_pages_are_translated(client, app):
    html = page(client, "/no/such/page", "es,en;q=0.5")
    assert "Lo sentimos, esa página no existe." in html
    response = client.get("/no/such/page", headers={"Accept-Language": "ko",
                                                    "Accept": "application/json"})
    assert response.get_json() == {"error": "찾을 수 없음",
                                   "message": "죄송합니다. 요청하신 페이지가 없습니다."}


def test_form_errors_are_translated(client, app):
    make_user()
    response = client.post("/auth/register", data={
        "username": "SUSAN", "email": "x@example.com", "password": "a long password",
        "password2": "a long password", "csrf_token": csrf_token(client, "/auth/register")},
        headers={"Accept-Language": "es"})
    assert "Por favor, elige otro nombre de usuario." in response.get_data(as_text=True)


def test_the_reset_mail_is_written_in_the_language_of_the_request(client, app):
    make_user()
    client.post("/auth/reset_password_request", data={
        "email": "susan@example.com", "csrf_token": csrf_token(client, "/auth/login")},
        headers={"Accept-Language": "ko"})
    run_jobs_in_process(app)
    login(client)  # the outbox shows susan her own mail once she is signed in
    html = page(client, "/outbox/", "ko")
    assert "[Microblog] 비밀번호 재설정" in html
    assert "susan@example.com(으)로 보낸 이메일만 보입니다." in html
    link = re.search(r'href="(/outbox/[^"/]+\.eml)"', html).group(1)
    mail = page(client, link, "ko")
    assert "susan 님, 안녕하세요." in mail
    assert "비밀번호를 재설정하려면 아래 링크를 클릭하세요:" in mail


# --------------------------------------------------------------------------- catalogues

def forms(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """The singular and plural forms of a message id or translation."""
    return text if isinstance(text, tuple) else (text,)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_string_is_translated(lang):
    catalog = read_catalog(lang)
    untranslated = [m.id for m in catalog if m.id and not all(forms(m.string))]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert untranslated == [], f"untranslated in {lang}"
    assert fuzzy == [], f"fuzzy in {lang}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_translations_keep_the_placeholders(lang):
    catalog = read_catalog(lang)
    for message in catalog:
        if not message.id:
            continue
        expected = set(re.findall(r"%\(\w+\)[sd]", forms(message.id)[-1]))
        for translation in forms(message.string):
            assert set(re.findall(r"%\(\w+\)[sd]", translation)) == expected, message.id
        assert not list(message.check(catalog)), message.id


@pytest.fixture(scope="module")
def strings_in_the_source(tmp_path_factory) -> set[str]:
    """What `flask translate update` would extract from the code and templates now."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract",
                    "-F", "babel.cfg", "-k", "_l", "-o", str(pot), "."],
                   cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as f:
        return {m.id for m in read_po(f) if m.id}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_catalogue_has_every_string_of_the_code(strings_in_the_source, lang):
    in_catalog = {m.id for m in read_catalog(lang) if m.id and all(forms(m.string))}
    missing = sorted(strings_in_the_source - in_catalog)
    assert missing == [], (
        f"run `flask translate update`, translate these in app/translations/{lang}, "
        f"then `flask translate compile`")
