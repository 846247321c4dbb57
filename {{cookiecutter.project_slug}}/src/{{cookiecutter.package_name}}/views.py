"""The routes: a home page and the health check that deploys wait on; the security headers
every response carries."""
from __future__ import annotations

import io
import socket

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
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


@bp.before_app_request
def bounded_chunked_body() -> None:
    """A chunked body (no Content-Length) is read here, up to MAX_CONTENT_LENGTH: a bigger
    one gets 413 like any other. Werkzeug stops reading it at the limit without a word, and
    the view would see it cut short (a form without its CSRF token: 400). Chunked wins over
    a Content-Length (HTTP says so). Read from the environ: request.content_length is
    computed once, and must see the length set here."""
    environ = request.environ
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        abort(413)
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
    del environ["HTTP_TRANSFER_ENCODING"]  # the body is now the one of that length


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
        host=socket.gethostname(),  # several hosts behind one proxy: which one answered
    )
