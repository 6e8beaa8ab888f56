from tests.conftest import login, make_user


def test_login_page_renders(client):
    r = client.get("/auth/login")
    assert r.status_code == 200
    assert "Sign In" in r.get_data(as_text=True)


def test_logged_in_home(client, app):
    make_user(posts=["hello <b>world</b>"])
    login(client)
    html = client.get("/index").get_data(as_text=True)
    assert "hello &lt;b&gt;world&lt;/b&gt;" in html
