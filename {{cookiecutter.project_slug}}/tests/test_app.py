"""The two routes a user and a deploy check, and the factory as existing test suites call it."""
from pathlib import Path

from {{ cookiecutter.package_name }} import __version__, create_app


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
