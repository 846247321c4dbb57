"""The two routes a user and a deploy check."""
from {{ cookiecutter.package_name }} import __version__


def test_home_page_shows_name_and_version(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert {{ cookiecutter.project_name | e | pystr }} in page  # as autoescape renders it
    assert __version__ in page


def test_healthz_reports_version_and_release(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": __version__, "release": "dev"}


def test_static_file_is_served(client):
    assert client.get("/static/style.css").status_code == 200
