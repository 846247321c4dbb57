"""Alembic's environment for `flask db …`: the app's engine and models, from Flask-Migrate."""
import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config
# disable_existing_loggers=False: a migration run inside the app (tests, a release
# command) must not silence the app's own loggers.
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

migrate_ext = current_app.extensions["migrate"]
engine = migrate_ext.db.engine
config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
target_metadata = migrate_ext.db.metadata


def run_migrations_offline() -> None:
    """`flask db upgrade --sql`: print the SQL instead of running it."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, **migrate_ext.configure_args)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the pending migrations on a connection. On PostgreSQL they all run in one
    transaction: one that fails rolls back the whole upgrade. SQLite's DDL is not
    transactional in Alembic: a failure can leave the migration half done."""

    def skip_empty(context, revision, directives):  # `db migrate` with no change writes no file
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    configure_args = dict(migrate_ext.configure_args)
    configure_args.setdefault("process_revision_directives", skip_empty)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, **configure_args)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
