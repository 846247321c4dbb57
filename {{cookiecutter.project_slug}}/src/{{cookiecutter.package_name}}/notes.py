"""The example endpoint that reads and writes the database: GET /notes, POST /notes."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .models import Note, db

bp = Blueprint("notes", __name__)
MAX_LENGTH = 1000  # Note.text is String(1000)


@bp.get("/notes")
def list_notes():
    """Every note, oldest first, as JSON: {"notes": [{"id", "text", "created_at"}, …]}."""
    notes = db.session.execute(db.select(Note).order_by(Note.id)).scalars()
    return jsonify(notes=[note.to_dict() for note in notes])


@bp.post("/notes")
def add_note():
    """Add one from form field or JSON key `text`: 201 with the note, 400 when text is bad."""
    payload = request.get_json(silent=True) if request.is_json else request.form
    text = payload.get("text") if isinstance(payload, dict) else None  # form: a MultiDict, a dict
    if not isinstance(text, str) or not text.strip():
        return jsonify(error="text is required: a form field or JSON key, not empty"), 400
    if len(text) > MAX_LENGTH:
        return jsonify(error=f"text is longer than {MAX_LENGTH} characters"), 400
    note = Note(text=text.strip())
    db.session.add(note)
    db.session.commit()
    return jsonify(note.to_dict()), 201
