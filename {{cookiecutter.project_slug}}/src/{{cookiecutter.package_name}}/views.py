"""The routes: a home page and the health check that deploys wait on."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

bp = Blueprint("main", __name__)


@bp.get("/")
def index() -> str:
    return render_template(
        "index.html",
        project_name=current_app.config["PROJECT_NAME"],
        version=current_app.config["VERSION"],
        release=current_app.config["RELEASE_ID"],
        message=current_app.config["MESSAGE"],
    )


@bp.get("/healthz")
def healthz():
    return jsonify(
        status="ok",
        version=current_app.config["VERSION"],
        release=current_app.config["RELEASE_ID"],
    )
