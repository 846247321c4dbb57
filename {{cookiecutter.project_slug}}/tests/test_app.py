"""The two routes a user and a deploy check, the limits and headers every response has, and
the factory as existing test suites call it."""
import io
import socket
from pathlib import Path

import pytest
from flask import request

from {{ cookiecutter.package_name }} import __version__, create_app
from {{ cookiecutter.package_name }}.config import ENV_PREFIX


def test_home_page_shows_name_and_version(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert {{ cookiecutter.project_name | e | pystr }} in page  # as autoescape renders it
    assert __version__ in page


def test_healthz_reports_version_and_release(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__, "release": "dev",
                                   "host": socket.gethostname()}  # which host answered, behind one proxy


def test_static_file_is_served(client):
    assert client.get("/static/style.css").status_code == 200


def test_make_test_runs_with_the_test_config():
    """make test sets the environment: a bare create_app(), as most test suites call a
    factory, gets config/test.ini, not prod's refusal of a missing secret key."""
    assert create_app().config["APP_ENV"] == "test"


def test_a_mapping_of_flask_settings_is_laid_over_the_config():
    app = create_app({"TESTING": True, "MESSAGE": "from the test"})
    assert app.config["TESTING"] is True and app.config["APP_ENV"] == "test"
    assert "from the test" in app.test_client().get("/").get_data(as_text=True)
    assert create_app("test", {"MESSAGE": "x"}).config["MESSAGE"] == "x"


def test_instance_folder_is_the_projects_own():
    app = create_app("test")
    assert Path(app.instance_path) == Path.cwd() / "instance"
    assert Path(app.instance_path).is_dir()


@pytest.mark.parametrize("path", ["/", "/healthz", "/static/style.css", "/no-such-page"])
def test_every_response_has_the_security_headers(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "Strict-Transport-Security" not in headers  # nginx sends it, where HTTPS ends


def test_a_view_may_set_its_own_header():
    app = create_app("test")
    app.add_url_rule("/embeddable", "embeddable", lambda: ("", 200, {"X-Frame-Options": "SAMEORIGIN"}))
    assert app.test_client().get("/embeddable").headers["X-Frame-Options"] == "SAMEORIGIN"


def app_that_reads_bodies():
    app = create_app("test")
    app.add_url_rule("/echo", "echo", lambda: {"size": len(request.get_data())}, methods=["POST"])
    return app


def test_a_body_over_max_content_length_gets_413_before_it_is_read():
    app = app_that_reads_bodies()
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024  # base.ini's 1M
    body = io.BytesIO(b"x" * (50 * 1024 * 1024))
    response = app.test_client().post("/echo", input_stream=body, content_length=50 * 1024 * 1024)
    assert response.status_code == 413
    assert body.tell() == 0  # not a byte read
    assert app.test_client().post("/echo", data=b"x" * 1000).get_json() == {"size": 1000}


def test_a_chunked_body_over_max_content_length_gets_413_and_one_under_it_is_read_whole():
    """No Content-Length: Werkzeug alone would cut the body short at the limit, silently."""
    client = app_that_reads_bodies().test_client()
    chunked = {"Transfer-Encoding": "chunked"}
    big = io.BytesIO(b"x" * (1024 * 1024 + 1))
    assert client.post("/echo", input_stream=big, headers=chunked).status_code == 413
    assert big.tell() == 1024 * 1024 + 1  # read to one byte past the limit, no further
    whole = client.post("/echo", input_stream=io.BytesIO(b"x" * 5000), headers=chunked)
    assert whole.get_json() == {"size": 5000}


def test_max_content_length_is_a_setting(monkeypatch):
    monkeypatch.setenv(f"{ENV_PREFIX}APP_MAX_CONTENT_LENGTH", "2K")
    client = app_that_reads_bodies().test_client()
    assert client.post("/echo", data=b"x" * 2048).status_code == 200
    assert client.post("/echo", data=b"x" * 2049).status_code == 413
