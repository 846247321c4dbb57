"""Refuse bad cookiecutter answers before any file is rendered.

Cookiecutter renders this file with Jinja, then runs it with the project
directory as cwd.  Every problem is reported on stderr as one sentence and the
hook exits 1; cookiecutter then deletes the project directory it created (and
only that: it leaves alone a directory that existed before, such as the output
directory itself).  An empty or path-like project_slug never gets here in a
normal bake: the `checked_slug` filter (flask_deploy_answers.py) refuses it while
cookiecutter reads the answers, before any directory exists.  This hook still
refuses it, for a bake that skips that step (a hand-edited --replay file).

Everything above the last lines is plain Python with no Jinja in it, so the template's
tests import this file and call the checks directly (tests/test_hooks.py); only the call
at the bottom is rendered, and it runs only when cookiecutter runs the file.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import unicodedata

# The answers this hook checks (every prompt of cookiecutter.json).
FIELDS = ("project_name", "project_slug", "package_name", "description", "author_name",
          "author_email", "version", "python_version", "port", "database")

# Modules a package of this name would shadow: the project's dependencies and
# tools, and the standard library.  sys.stdlib_module_names is the list of the
# Python running cookiecutter and leaves out "test"; the project may target an
# older Python, so the modules removed in 3.12 and 3.13 are listed too.
SHADOWED = sys.stdlib_module_names | set(
    "flask gunicorn werkzeug jinja2 click itsdangerous markupsafe blinker"
    " setuptools pip wheel build pytest cookiecutter test"
    " sqlalchemy flask_sqlalchemy flask_migrate alembic mako greenlet psycopg psycopg_binary"
    " typing_extensions tomli"
    " asynchat asyncore distutils imp smtpd"  # removed in 3.12
    " aifc audioop cgi cgitb chunk crypt imghdr lib2to3 mailcap msilib nis nntplib"
    " ossaudiodev pipes sndhdr spwd sunau telnetlib uu xdrlib".split()  # removed in 3.13
)

DATABASES = ("sqlite", "postgresql", "none")  # the choices in cookiecutter.json

# packaging.version.VERSION_PATTERN (the pre-3.11 form, without possessive
# quantifiers), written out because `packaging` may not be installed here.
VERSION_PATTERN = r"""
    v?
    (?a:
        (?:(?P<epoch>[0-9]+)!)?
        (?P<release>[0-9]+(?:\.[0-9]+)*)
        (?P<pre>
            [._-]?
            (?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)
            [._-]?
            (?P<pre_n>[0-9]+)?
        )?
        (?P<post>
            (?:-(?P<post_n1>[0-9]+))
            |
            (?:
                [._-]?
                (?P<post_l>post|rev|r)
                [._-]?
                (?P<post_n2>[0-9]+)?
            )
        )?
        (?P<dev>
            [._-]?
            (?P<dev_l>dev)
            [._-]?
            (?P<dev_n>[0-9]+)?
        )?
    )
    (?a:\+(?P<local>[a-z0-9]+(?:[._-][a-z0-9]+)*))?
"""

SLUG_RULE = "use lowercase letters, digits, '-' and '_', starting with a letter"


def is_path(slug: str) -> bool:
    return "/" in slug or "\\" in slug or ".." in slug


def check_slug(slug: str) -> list[str]:
    if re.fullmatch(r"[a-z][a-z0-9_-]*", slug):
        return []
    if is_path(slug):
        return [f"project_slug {slug!r} is not valid: it must be a name, not a path; {SLUG_RULE}."]
    return [f"project_slug {slug!r} is not valid: {SLUG_RULE}."]


def check_package(package: str, slug: str) -> list[str]:
    if package == slug.replace("-", "_"):
        subject = f"package_name {package!r} (derived from project_slug {slug!r})"
        remedy = "choose another project_slug or set package_name"
    else:
        subject, remedy = f"package_name {package!r}", "choose another package_name"
    if not (package.isidentifier() and package.isascii()):
        problem = "is not an importable name (ASCII letters, digits, '_'; no leading digit)"
    elif keyword.iskeyword(package):
        problem = "is a Python keyword"
    elif package.lower() in SHADOWED:  # lower(): case-insensitive file systems
        problem = f"would shadow the module {package.lower()!r}"
    else:
        return []
    return [f"{subject} {problem}; {remedy}."]


# Free text is rendered into comments and docstrings (Makefile, README, *.py), where
# a line break would end the comment and start live code (a Makefile line of its own).
# Prompts cannot produce one, but extra_context and --replay files can.
FREE_TEXT = ("project_name", "description", "author_name")


def check_text(answers: dict[str, str]) -> list[str]:
    return [
        f"{field} {answers[field]!r} is not valid: use one line of text without control characters."
        for field in FREE_TEXT
        if any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in answers[field])
    ]


def check_others(answers: dict[str, str]) -> list[str]:
    errors = []
    port = answers["port"]
    if not (re.fullmatch(r"[1-9][0-9]{0,4}", port) and int(port) <= 65535):
        errors.append(f"port {port!r} is not valid: use a whole number from 1 to 65535.")
    email = answers["author_email"]
    local, _, domain = email.partition("@")
    labels = domain.split(".")
    has_space = any(c.isspace() for c in email)
    if email.count("@") != 1 or not local or len(labels) < 2 or not all(labels) or has_space:
        errors.append(f"author_email {email!r} is not valid: use an address like a@example.org.")
    version = answers["version"]
    if not re.fullmatch(VERSION_PATTERN, version, re.VERBOSE | re.IGNORECASE):
        errors.append(f"version {version!r} is not valid: use a PEP 440 version like 1.0.0rc1.")
    python = answers["python_version"]
    if not re.fullmatch(r"3\.[1-9][0-9]+", python):
        errors.append(f"python_version {python!r} is not valid: use 3.10 or later, like 3.12.")
    database = answers["database"]
    if database not in DATABASES:  # a prompt offers only these; --no-input database=… does not
        errors.append(f"database {database!r} is not valid: use {', '.join(DATABASES[:-1])} or {DATABASES[-1]}.")
    return errors


def answers_from(context: dict[str, object]) -> dict[str, str]:
    """The answers to check, as text, from cookiecutter's context (the `cookiecutter` dict)."""
    return {name: str(context[name]) for name in FIELDS}


def check_answers(answers: dict[str, str]) -> list[str]:
    """Every problem with the answers, one sentence each, in the order they are printed."""
    slug, package = answers["project_slug"], answers["package_name"]
    errors = check_text(answers) + check_slug(slug) + check_package(package, slug)
    return errors + check_others(answers)


def main(context_json: str) -> int:
    errors = check_answers(answers_from(json.loads(context_json)))
    if not errors:
        return 0
    print("\n".join(errors), file=sys.stderr)
    return 1


# The only Jinja in this file. `tojson` escapes backslashes, line breaks and quotes (even
# "'"), so the answers render as JSON text that fits a raw '...' literal whatever the user
# typed; cookiecutter wrote the same context to its replay file, so it is JSON already.
# The quotes must stay single: keep formatters away.
if __name__ == "__main__":
    sys.exit(main(r'{{ cookiecutter | tojson }}'))  # fmt: skip
