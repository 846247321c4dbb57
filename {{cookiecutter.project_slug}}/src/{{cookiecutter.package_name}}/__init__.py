"""{{ cookiecutter.project_name | pystr(quote=False) }}: the Flask application factory."""
from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError, instance_dir, load_config, runtime_errors

if TYPE_CHECKING:  # create_app imports Flask: the command line starts faster without it
    from flask import Flask

__version__ = {{ cookiecutter.version | pystr }}


def release_id() -> str:
    """Name of the release directory this process runs from, or "dev" outside a release.

    A release's venv lives at releases/<id>/venv, so the id is read off sys.prefix:
    it follows the interpreter the process was started with, which is what a hand-over
    changes.
    """
    release_dir = Path(sys.prefix).parent
    if Path(sys.prefix).name == "venv" and (release_dir / "RELEASE").is_file():
        return release_dir.name
    return "dev"


def create_app(env: str | Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None) -> Flask:
    """Build the app for `env` (default: the {{ cookiecutter.package_name | upper }}_ENV variable, else prod).

    `settings`, Flask settings laid over the loaded config, may also come first, the way
    many test suites call a factory: create_app({"TESTING": True}).
    """
    import os

    from flask import Flask

    if isinstance(env, Mapping):
        env, settings = None, env
    env = env or os.environ.get("{{ cookiecutter.package_name | upper }}_ENV", "prod")
    config = load_config(env)
    problems = runtime_errors(config)
    if problems:
        raise ConfigError(problems)

    instance = instance_dir()
    os.makedirs(instance, exist_ok=True)  # Flask never makes it; the app's files go there
    app = Flask(__name__, instance_path=str(instance))
    app.config.update(
        APP_ENV=env,
        DEBUG=config["app"]["debug"],
        SECRET_KEY=config["app"]["secret_key"],
        MESSAGE=config["app"]["message"],
        MAX_CONTENT_LENGTH=config["app"]["max_content_length"] * 1024,  # a bigger body: 413, unread
        RELEASE_ID=release_id(),
        VERSION=__version__,
        PROJECT_NAME={{ cookiecutter.project_name | pystr }},
    )
    app.config.update(settings or {})
    app.logger.setLevel(getattr(logging, config["app"]["log_level"]))

    from .views import bp

    app.register_blueprint(bp)
{%- if cookiecutter.database != "none" %}

    from . import models
    from .notes import bp as notes_bp

    models.init_app(app, app.config.get("SQLALCHEMY_DATABASE_URI") or config["database"]["url"])
    app.register_blueprint(notes_bp)
{%- endif %}
    return app
