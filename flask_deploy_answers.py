"""Jinja filters for this template, loaded through `_extensions` in cookiecutter.json.

cookiecutter and cruft put the template's root directory on sys.path while they render,
so this module is found there; its name is specific to this template so that it cannot
pick up (or be shadowed by) another template's `local_extensions` module cached in the
same process.

- `pystr`: an answer as a Python string literal that is valid whatever the text.
- `checked_slug`: refuses, before cookiecutter creates any directory, a project_slug
  that would not name exactly one new directory (empty, or a path).  The pre_gen hook
  checks everything else, but it only runs once that directory exists.
"""

from __future__ import annotations

from cookiecutter.exceptions import FailedHookException
from jinja2.ext import Extension
from slugify import slugify

SLUG_RULE = "use lowercase letters, digits, '-' and '_', starting with a letter"


def pystr(value: object, quote: bool = True) -> str:
    """`value` as a double-quoted Python string literal (or, with quote=False, the text
    that goes between the quotes of "…" or \"\"\"…\"\"\": for docstrings).

    Backslashes and double quotes are escaped, and so is any character that is not
    printable (line breaks, NUL, lone surrogates…); everything else, non-ASCII text
    included, stays as typed so the generated file reads naturally.
    """
    body = "".join(
        "\\" + char if char in '\\"' else char if char.isprintable() else repr(char)[1:-1]
        for char in str(value)
    )
    return f'"{body}"' if quote else body


def checked_slug(slug: object, project_name: object = "") -> str:
    """Return `slug`, or stop cookiecutter if it would not name one new directory.

    An empty slug is the output directory itself (cookiecutter then says only that
    the directory exists); 'a/b' or '../x' would make cookiecutter create parents
    or write outside the output directory before any hook could refuse it.
    Raises FailedHookException, the exception a refused answer raises from the
    pre_gen hook, so callers of cookiecutter() handle both alike and the CLI prints
    the sentence without a traceback.
    """
    slug = str(slug)
    if slug == "":
        if not slugify(str(project_name)):
            cause = f"project_name {str(project_name)!r} has no letters or digits to derive it from"
            raise FailedHookException(
                f"project_slug '' is empty: {cause}; give a project_slug ({SLUG_RULE})."
            )
        raise FailedHookException(f"project_slug '' is empty: {SLUG_RULE}.")
    if "/" in slug or "\\" in slug or ".." in slug:
        raise FailedHookException(
            f"project_slug {slug!r} is not valid: it must be a name, not a path; {SLUG_RULE}."
        )
    return slug


class AnswerFilters(Extension):
    """Adds the `pystr` and `checked_slug` filters."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.filters["pystr"] = pystr
        environment.filters["checked_slug"] = checked_slug
