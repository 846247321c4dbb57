"""Remove the files a project's database answer does not need.

Cookiecutter renders this file with Jinja, then runs it with the new project directory
as cwd, after every file is written.  DATABASE_ONLY exist only for a database (sqlite or
postgresql), POSTGRESQL_ONLY only for postgresql; shared files hold their database parts
in Jinja if-blocks, so a database=none project has no trace of SQLAlchemy.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DATABASE = "{{ cookiecutter.database }}"  # the pre_gen hook allowed only sqlite, postgresql, none
PACKAGE = Path("src", "{{ cookiecutter.package_name }}")
DATABASE_ONLY = [
    PACKAGE / "models.py",
    PACKAGE / "notes.py",
    PACKAGE / "backup.py",
    PACKAGE / "migrations",
    Path("tests", "test_notes.py"),
    Path("tests", "test_backup.py"),
    Path("docs", "database.md"),
]
POSTGRESQL_ONLY = [Path("tests", "pg_server.py")]


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def main() -> int:
    if DATABASE != "postgresql":
        remove(POSTGRESQL_ONLY)
    if DATABASE == "none":
        remove(DATABASE_ONLY)
    return 0


if __name__ == "__main__":
    sys.exit(main())
