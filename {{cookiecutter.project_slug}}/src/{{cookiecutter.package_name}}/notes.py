"""The example endpoint that reads and writes the database: GET /notes, POST /notes.

A browser's form post carries a CSRF token (Flask-WTF: the home page's form holds it, tied
to the session cookie), so another site cannot post in a visitor's name. A JSON post needs
Content-Type: application/json and no token: a browser sends that type to another origin
only after a CORS preflight, which this app never answers. A body of any other type is
taken for a form, and refused without its token.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request, url_for
from flask_wtf import FlaskForm
from wtforms import StringField

from .models import Note, db

bp = Blueprint("notes", __name__)
MAX_LENGTH = 1000  # Note.text is String(1000)
PAGE_SIZE = 50  # GET /notes without ?limit=
MAX_PAGE_SIZE = 200  # the most ?limit= may ask for: one request never reads the whole table


class NoteForm(FlaskForm):
    """The form post: its `csrf_token` field is checked by validate()."""

    text = StringField("Note")


@bp.get("/notes")
def list_notes():
    """A page of notes, oldest first, as JSON: {"notes": [{"id", "text", "created_at"}, …],
    "next": the URL of the next page, or null on the last}. ?limit=N (1 to MAX_PAGE_SIZE)
    and ?after=ID (the last id of the page before: a page never shifts under new notes)."""
    limit, after = request.args.get("limit", str(PAGE_SIZE)), request.args.get("after", "0")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
        return jsonify(error=f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}"), 400
    if not after.isdigit():
        return jsonify(error="after must be the id of a note (a whole number)"), 400
    # one more than asked: whether a next page exists, without counting the table
    query = db.select(Note).where(Note.id > int(after)).order_by(Note.id).limit(int(limit) + 1)
    notes = list(db.session.execute(query).scalars())
    page, more = notes[: int(limit)], len(notes) > int(limit)
    next_url = url_for("notes.list_notes", after=page[-1].id, limit=int(limit)) if more else None
    return jsonify(notes=[note.to_dict() for note in page], next=next_url)


@bp.post("/notes")
def add_note():
    """Add one from JSON key or form field `text`: 201 with the note, 400 when text or the
    form's CSRF token is bad (a body over MAX_CONTENT_LENGTH gets 413 before it is read)."""
    if request.is_json:
        payload = request.get_json(silent=True)
        text = payload.get("text") if isinstance(payload, dict) else None
    else:
        form = NoteForm()
        if not form.validate():  # the CSRF token; the text is checked below, for both kinds
            return jsonify(error="the form's CSRF token is missing or wrong: reload the page and post again "
                                 "(an API client posts JSON, with Content-Type: application/json)"), 400
        text = form.text.data
    if not isinstance(text, str) or not text.strip():
        return jsonify(error="text is required: a form field or JSON key, not empty"), 400
    if len(text) > MAX_LENGTH:
        return jsonify(error=f"text is longer than {MAX_LENGTH} characters"), 400
    note = Note(text=text.strip())
    db.session.add(note)
    db.session.commit()
    return jsonify(note.to_dict()), 201
