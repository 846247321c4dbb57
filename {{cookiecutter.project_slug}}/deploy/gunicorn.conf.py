"""gunicorn settings for a deployed release, taken from the app's own INI files.

The host program (deploy/host/) starts gunicorn from the release directory through its own venv
(releases/<id>/venv/bin/gunicorn), never through the `current` link, and sets the
{{ cookiecutter.package_name | upper }}_* variables below. Command-line flags win over this file (the smoke boot
uses that to bind a private unix socket).
"""
import os

from {{ cookiecutter.package_name }}.config import ConfigError, load_config

_env = os.environ.get("{{ cookiecutter.package_name | upper }}_ENV", "prod")
_shared = os.environ.get("{{ cookiecutter.package_name | upper }}_SHARED_DIR", os.path.abspath("../../shared"))
try:
    _config = load_config(_env)
except ConfigError as exc:
    raise SystemExit(f"configuration for {_env} is invalid:\n{exc}") from None

wsgi_app = "{{ cookiecutter.package_name }}.wsgi:app"
# Behind the edge ([proxy] domain: nginx on this host), gunicorn answers nginx alone.
_host = "127.0.0.1" if _config["proxy"]["domain"] else _config["server"]["host"]
bind = [f"{_host}:{_config['server']['port']}"]
# Several hosts behind one proxy host: this one's address that the proxy host reaches it by,
# too (the host program checked it; docs/https.md says to open the port to the proxy host only).
_also = os.environ.get("{{ cookiecutter.package_name | upper }}_BIND_HOST", "")
if _also and _config["proxy"]["domain"]:
    bind.append(f"[{_also}]:{_config['server']['port']}" if ":" in _also else f"{_also}:{_config['server']['port']}")
workers = _config["server"]["workers"]
threads = _config["server"]["threads"]
timeout = _config["server"]["timeout"]
graceful_timeout = timeout
# [server] preload: the master loads the app once (when_ready, below) and each worker is a
# fork of it. Not gunicorn's own preload_app: that loads before the error log is set up, so
# a release whose app cannot import would fail with no traceback where the deploy reads it.
PRELOAD = _config["server"]["preload"]
# The host program's smoke boot sets {{ cookiecutter.package_name | upper }}_FOREGROUND=1 to keep gunicorn as its child and see it exit.
daemon = os.environ.get("{{ cookiecutter.package_name | upper }}_FOREGROUND") != "1"
pidfile = os.path.join(_shared, "run", "gunicorn.pid")
errorlog = os.path.join(_shared, "log", "gunicorn.log")
accesslog = os.path.join(_shared, "log", "access.log")
# Made by the host program for a hand-over only: each worker of the new master says here that
# it serves, and the old master's workers then stop (deploy/host/serve.py: PhaseOut).
HANDOVER_READY = os.path.join(_shared, "run", "handover.ready")
loglevel = _config["app"]["log_level"].lower()
# gunicorn >= 25 opens a control socket at one fixed path per user; apps must not share it.
control_socket_disable = True


def pre_exec(server):
    """On USR2, re-exec into the release `current` points to now, not the one we started from.

    gunicorn re-execs its own sys.executable and argv, i.e. the old release's venv.
    START_CTX is gunicorn internals: the template's tests/test_handover.py pins the behaviour.
    """
    release = os.path.realpath(os.environ["{{ cookiecutter.package_name | upper }}_CURRENT"])
    python = os.path.join(release, "venv", "bin", "python")
    args = [python, os.path.join(release, "venv", "bin", "gunicorn"),
            "-c", os.path.join(release, "deploy", "gunicorn.conf.py")]
    server.START_CTX.update({0: python, "args": args, "cwd": release})
    server.log.info("re-exec into %s", release)


def when_ready(server):
    """Files the master makes from here on are the app's alone (gunicorn's own umask setting
    covers only its sockets, and daemon mode forces 022). Then, with [server] preload, the
    app loads here, before any worker forks: an app that cannot load stops the master, its
    traceback in the error log (the deploy shows that log's tail)."""
    os.umask(0o077)
    if PRELOAD:
        try:
            server.app.wsgi()
        except Exception:
            server.log.exception("the app failed to load; stopping")
            server.halt("the app failed to load", 3)


def post_worker_init(worker):
    """This worker serves: one line `master worker workers` in HANDOVER_READY, if it is there."""
    try:
        fd = os.open(HANDOVER_READY, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"{worker.ppid} {worker.pid} {worker.cfg.workers}\n".encode())
    finally:
        os.close(fd)


def post_fork(server, worker):
    """And so are those each worker makes (a SQLite database, uploads, exports).{% if cookiecutter.database != "none" %}
    A worker forked from a master that loaded the app never uses a database connection the
    master opened: SQLAlchemy's rule after a fork, dispose(close=False).{% endif %}"""
    os.umask(0o077)
{%- if cookiecutter.database != "none" %}
    if PRELOAD:
        from {{ cookiecutter.package_name }}.models import db

        with server.app.wsgi().app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)
{%- endif %}
