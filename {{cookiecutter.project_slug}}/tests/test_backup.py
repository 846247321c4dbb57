"""make db-restore's check, for real ({{ 'PostgreSQL: pg_dump and pg_restore' if cookiecutter.database == 'postgresql' else 'SQLite files' }}): a backup of a schema revision
this release's migrations know is accepted, one of a newer release's is refused in a sentence."""
{%- if cookiecutter.database == "postgresql" %}
import os
{%- endif %}
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from {{ cookiecutter.package_name }} import backup, create_app
from {{ cookiecutter.package_name }}.config import ENV_PREFIX
from {{ cookiecutter.package_name }}.models import db
{%- if cookiecutter.database == "postgresql" %}

from conftest import POSTGRESQL_BIN, require_postgresql

require_postgresql()
{%- endif %}

PROJECT = Path(__file__).resolve().parent.parent


def test_a_backup_of_an_unknown_schema_revision_is_refused(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", database_url)
    monkeypatch.setenv(f"{ENV_PREFIX}CONFIG_DIR", str(PROJECT / "config"))
{%- if cookiecutter.database == "postgresql" %}
    monkeypatch.setenv("PATH", f"{POSTGRESQL_BIN}{os.pathsep}{os.environ['PATH']}")  # pg_dump, pg_restore
{%- endif %}
    app = create_app("test")
    with app.app_context():
        upgrade()
    print(backup.backup("test", tmp_path / "known.backup"))
    revisions, parents = backup.migration_revisions()
    (head,) = revisions - parents
    assert backup.check_restore("test", tmp_path / "known.backup") == (
        f"known.backup: schema revision {head}, known to this release")
    with app.app_context():
        with db.engine.begin() as connection:  # what a newer release's migration leaves
            connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
        db.engine.dispose()
    print(backup.backup("test", tmp_path / "future.backup"))
    with pytest.raises(backup.BackupError) as refused:
        backup.check_restore("test", tmp_path / "future.backup")
    assert str(refused.value) == ("future.backup holds schema revision 0099_future, which this release's migrations do "
                                  "not know (a newer release's data?): restore it with FORCE=1 if you mean it")
