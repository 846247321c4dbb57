"""WSGI entry point for gunicorn: `gunicorn {{ cookiecutter.package_name }}.wsgi:app`."""
from . import create_app

app = create_app()
