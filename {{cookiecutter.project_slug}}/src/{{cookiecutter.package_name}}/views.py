"""The routes: a home page and the health check that deploys wait on; the security headers
every response carries."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template
{%- if cookiecutter.database != "none" %}

from .notes import NoteForm
{%- endif %}

bp = Blueprint("main", __name__)

# On every response, unless a view set its own. HSTS is not here: nginx sends it, where HTTPS ends.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",  # a browser never guesses a script out of an upload
    "X-Frame-Options": "DENY",  # no other site frames these pages (clickjacking)
    "Content-Security-Policy": "frame-ancestors 'none'",  # the same, as browsers read it today
    "Referrer-Policy": "strict-origin-when-cross-origin",  # other sites see our origin, never a path
}


@bp.after_app_request
def security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.get("/")
def index() -> str:
    return render_template(
        "index.html",
        project_name=current_app.config["PROJECT_NAME"],
        version=current_app.config["VERSION"],
        release=current_app.config["RELEASE_ID"],
        message=current_app.config["MESSAGE"],
{%- if cookiecutter.database != "none" %}
        note_form=NoteForm(),  # carries the CSRF token that POST /notes checks
{%- endif %}
    )


@bp.get("/healthz")
def healthz():
    return jsonify(
        status="ok",
        version=current_app.config["VERSION"],
        release=current_app.config["RELEASE_ID"],
    )
