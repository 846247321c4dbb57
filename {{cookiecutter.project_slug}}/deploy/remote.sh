#!/bin/sh
# Host-side half of every deploy target: `sh remote.sh <command> [args]`, one function
# per command. The Makefile sends this file over ssh and runs it; it is also shipped
# in each release (releases/<id>/deploy/remote.sh) for running by hand on the host.
#
# Settings come from the environment: APP_DIR (required; relative means under $HOME),
# PORT, APP_ENV (prod), KEEP_RELEASES (5), PYTHON (python3), STOP_TIMEOUT (30),
# BOOT_TIMEOUT (60), DEPLOY_WHO (who is deploying, for the lock), REMOTE_HOST (the name the
# deploying machine knows this host by, for messages), LOG_MAX_KB (51200) and LOG_KEEP (5):
# the size at which a log is rotated and how many rotated ones are kept, FOLLOW (logs),
# CONFIRM (db-restore).
#
# Where the host runs systemd, the app is a systemd service (a user unit with lingering
# for an ordinary user, a system unit running as an unprivileged account for root):
# see "systemd" below. Elsewhere it is a detached gunicorn, and each command says so once.
set -eu

DIST='{{ cookiecutter.project_slug }}'
PACKAGE='{{ cookiecutter.package_name }}'
VARS='{{ cookiecutter.package_name | upper }}'   # prefix of the app's environment variables
APP_ENV=${APP_ENV:-prod}
KEEP_RELEASES=${KEEP_RELEASES:-5}
PYTHON=${PYTHON:-python3}
PYTHON_SETTING=$PYTHON  # as configured: the install resolves PYTHON to the interpreter itself
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-60}
LOG_MAX_KB=${LOG_MAX_KB:-51200}
LOG_KEEP=${LOG_KEEP:-5}

# The commands, a function each (cmd_<name>, but smoke_boot and activate). HOST_COMMANDS is
# the one list of those run by a make target of the same name: the Makefile and
# deploy/rollout.py read this line (keep it one line), and `make help` the `##` comment
# on each one's function. install, deploy and probe run under make copy, deploy and reach;
# rollback, exec, shell and the config ones have make targets of their own (the Makefile's
# post-deploy hook, a command or a value to pass).
HOST_COMMANDS='start stop restart status logs releases unlock history'
COMMANDS="install deploy rollback probe check_host exec shell config_set config_unset config_show db_backup db_restore noop $HOST_COMMANDS prune smoke_boot activate exec_master rotate_logs"
# The commands that change what runs: each appends one line to shared/deploys.log.
RECORDED=" deploy rollback restart stop start config_set config_unset db_restore "

# --- helpers ----------------------------------------------------------------------

# Output never kills us: the ssh client may be gone (Ctrl-C) while we finish the job.
say() { printf '%s\n' "$*" 2>/dev/null || true; }
die() { say "error: $*" >&2 2>/dev/null || true; exit 1; }
now_ms() { t=$(date +%s%N); echo "${t%??????}"; }

# Run one named step and print how long it took.
step() {
    step_name=$1; shift
    step_started=$(now_ms)  # names of its own: the step's function sets variables too
    "$@"
    step_ms=$(( $(now_ms) - step_started ))
    say "  $step_name: $((step_ms / 1000)).$(printf '%03d' $((step_ms % 1000)))s"
}

setup_paths() {
    [ -n "${APP_DIR:-}" ] || die "APP_DIR is not set"
    case $APP_DIR in /*) ;; *) APP_DIR=$HOME/$APP_DIR ;; esac
    mkdir -p "$APP_DIR/releases" "$APP_DIR/shared/log" "$APP_DIR/shared/run" "$APP_DIR/shared/wheels" \
        "$APP_DIR/shared/instance" "$APP_DIR/.incoming"
    APP_DIR=$(cd "$APP_DIR" && pwd -P)
    RELEASES=$APP_DIR/releases
    SHARED=$APP_DIR/shared
    RUN=$SHARED/run
    LOG=$SHARED/log
    CURRENT=$APP_DIR/current
    LOCK=$APP_DIR/.deploy.lock
    PIDFILE=$RUN/gunicorn.pid
    export "${VARS}_ENV=$APP_ENV" "${VARS}_SHARED_DIR=$SHARED" "${VARS}_CURRENT=$CURRENT" \
        "${VARS}_LOCAL_CONFIG=$SHARED/local.ini"
    if [ -n "${PORT:-}" ]; then export "${VARS}_SERVER_PORT=$PORT"; fi
}

# A pid is ours only if /proc says it runs this app's gunicorn: pids are reused.
is_master() {
    [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] &&
        tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "$RELEASES/.*/venv/bin/gunicorn"
}

# Print the running master's pid (from pidfile $1, default the main one); fail if none.
master_pid() {
    file=${1:-$PIDFILE}
    pid=$(cat "$file" 2>/dev/null || true)
    is_master "$pid" && echo "$pid"
}

wait_gone() {  # pid seconds
    i=0
    while [ -d "/proc/$1" ] && [ "$i" -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    [ ! -d "/proc/$1" ]
}

# TERM, up to SECONDS for it to go, then KILL. Never fails (set -e): it may be gone already.
stop_pid() {  # pid seconds
    kill -TERM "$1" 2>/dev/null || true
    wait_gone "$1" "$2" && return 0
    say "pid $1 ignored TERM for ${2}s: sending KILL"
    kill -KILL "$1" 2>/dev/null || true
    wait_gone "$1" 5 || true
}

tail_log() {  # file: its last lines, on stderr
    say "--- last lines of $1:" >&2
    tail -n 20 "$1" >&2 2>/dev/null || true
}

# deploy/host.py, the Python half, comes appended to this script (the Makefile sends them
# as one): kept in APP_DIR/host.py, rewritten only when it changed. A copy of this script
# run by hand from a release uses the host.py beside it.
HOST_MARK='^#--- host.py follows ---$'
host_program() {
    HOST_PY=$APP_DIR/host.py
    if grep -q "$HOST_MARK" "$0" 2>/dev/null; then
        sed "1,/$HOST_MARK/d" "$0" | cmp -s - "$HOST_PY" ||
            { sed "1,/$HOST_MARK/d" "$0" >"$HOST_PY.tmp.$$" && mv -f "$HOST_PY.tmp.$$" "$HOST_PY"; } ||
            die "cannot write $HOST_PY"
    elif [ -f "$(dirname "$0")/host.py" ]; then
        HOST_PY=$(dirname "$0")/host.py
    fi
}
host() { "$PYTHON" "$HOST_PY" "$@"; }

healthz() {  # [host.py healthz args...]: ask the app on PORT
    host healthz --port "$PORT" "$@"
}

current_dir() { readlink -f "$CURRENT"; }
current_id() { basename "$(current_dir)"; }
# Finished releases, oldest first; unfinished installs and refused releases (failed to
# boot) are never rollback targets (host.py: Releases).
finished_releases() { host finished --app-dir "$APP_DIR"; }
previous_id() { host previous --app-dir "$APP_DIR" || true; }  # the newest finished release older than current

# --- the deploy lock (host.py lock): mkdir is atomic; the holder's pid tells a stale one ---

lock_describe() { tr '\n' ' ' <"$LOCK/info" 2>/dev/null || echo "no details"; }

lock() {  # what: take the deploy lock for this script's pid (host.py lock takes a stale one over)
    host lock --app-dir "$APP_DIR" --pid $$ --who "${DEPLOY_WHO:-unknown}" --version "${1:-}" || exit 1
    LOCKED=1
}

unlock_if_held() { if [ "${LOCKED:-0}" = 1 ]; then rm -rf "$LOCK"; LOCKED=0; fi; }

# On any exit: a switched-but-unhealthy release is switched back, the history written,
# the lock released.
on_exit() {
    status=$?
    if [ "${SWITCHED_FROM:-}" ]; then
        say "switching current back to $SWITCHED_FROM"
        switch_to "$SWITCHED_FROM"
        if old=$(master_pid); then stop_handover_child "$old"; else start_master >/dev/null 2>&1 || true; fi
        say "now serving: $(current_id)"
    fi
    if [ -n "${SMOKE_PID:-}" ]; then kill -TERM "$SMOKE_PID" 2>/dev/null || true; fi
    if [ -n "${HISTORY_WHAT:-}" ]; then record_history "$status"; fi
    unlock_if_held
    exit "$status"
}

# shared/deploys.log, append-only, one line per command that changes what runs:
# UTC time, who, what, from release, to release, result, duration.
record_history() {  # exit status
    to=$( [ -L "$CURRENT" ] && current_id || echo none)
    ms=$(( $(now_ms) - HISTORY_STARTED ))
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) ${DEPLOY_WHO:-unknown} $HISTORY_WHAT $HISTORY_FROM $to"
    line="$line $( [ "$1" = 0 ] && echo ok || echo failed) $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s"
    echo "$line" >>"$SHARED/deploys.log" 2>/dev/null || true
    say "history: $line"
}

# --- install a release --------------------------------------------------------------

ensure_local_ini() {
    [ -e "$SHARED/local.ini" ] && return 0
    key=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))')
    (umask 077 && printf '# Host-local settings, never overwritten by a deploy.\n[app]\nsecret_key = %s\n' \
        "$key" >"$SHARED/local.ini.tmp") && mv "$SHARED/local.ini.tmp" "$SHARED/local.ini"
    say "  wrote $SHARED/local.ini with a generated secret_key (mode 0600)"
}

# What this host runs, for `target.py check` on the deploying machine, before any upload.
# Any python, however old, must answer: its version is what the refusal names.
cmd_probe() {
    say "python=$PYTHON"
    "$PYTHON" -c 'import os, platform, sys
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (AttributeError, ValueError, OSError):
    libc = ""
print("python_version=" + platform.python_version())
print("implementation=" + platform.python_implementation().lower())
print("machine=" + platform.machine())
print("libc=" + libc)
print("executable=" + sys.executable)' 2>/dev/null >"$RUN/probe.$$" || { rm -f "$RUN/probe.$$"; say "python_version=none"; return 0; }
    cat "$RUN/probe.$$"
    # The interpreter behind PYTHON, for the install after this probe (the one the release
    # is packed for): a pyenv shim in front of it costs ~60 ms on every start.
    { echo "$PYTHON" && sed -n 's/^executable=//p' "$RUN/probe.$$"; } >"$RUN/python" && rm -f "$RUN/probe.$$"
    for loader in /lib/ld-musl-*.so.1; do  # musl has no confstr; its loader says its version
        if [ -x "$loader" ]; then say "libc=musl $("$loader" 2>&1 | sed -n 's/^Version //p')"; fi
    done
    say "cached=$(ls "$APP_DIR/shared/wheels" 2>/dev/null | tr '\n' ' ')"  # the upload leaves these out
    probe=$APP_DIR/.incoming/venv-probe.$$
    if said=$("$PYTHON" -S -m venv --without-pip "$probe" 2>&1); then say "venv=ok"; else say "venv=$(echo "$said" | tail -n 1)"; fi
    rm -rf "$probe"
}

# Verify the upload, unpack it into releases/<id>, build its venv offline (host.py install);
# sets RELEASE_ID, and PYTHON to the interpreter itself, not a shim in front of it (the
# probe recorded which one PYTHON runs).
install_release() {  # tarball-name sha256
    if [ -f "$RUN/python" ] && { read -r name && read -r executable; } <"$RUN/python" &&
        [ "$name" = "$PYTHON" ] && [ -x "$executable" ]; then PYTHON=$executable; fi
    result=$APP_DIR/.incoming/result.$$
    host install --app-dir "$APP_DIR" --upload "$1" --sha256 "$2" --dist "$DIST" --python "$PYTHON" \
        --host-name "${REMOTE_HOST:-$(hostname)}" --result "$result" || exit $?
    RELEASE_ID=$(sed -n 's/^release=//p' "$result") PYTHON=$(sed -n 's/^python=//p' "$result")
    rm -f "$result"
}

# --- run releases -----------------------------------------------------------------

# Start the release `current` points to, detached, through its resolved path.
# Callers know no master of ours runs, so a pidfile left is stale: gunicorn refuses to
# start while the pid in it is alive, which a reused pid (another program) may well be.
start_master() {
    dir=$(current_dir)
    rm -f "$PIDFILE"
    if [ "$SERVICE" = daemon ]; then
        (cd "$dir" && exec "$dir/venv/bin/gunicorn" -c "$dir/deploy/gunicorn.conf.py") \
            </dev/null >>"$LOG/gunicorn.log" 2>&1
    else
        write_unit
        # enable: it comes back after a reboot; start returns once gunicorn has daemonized.
        $SYSTEMCTL enable --quiet "$UNIT" 2>/dev/null || true
        said=$($SYSTEMCTL start "$UNIT" 2>&1) || say "$said" >&2
    fi
    wait_healthy "$(basename "$dir")" "$PIDFILE"
}

# The unit's ExecStart: the release `current` points to now, through its resolved path;
# gunicorn daemonizes and systemd follows its pidfile (Type=forking).
cmd_exec_master() {
    dir=$(current_dir)
    rm -f "$PIDFILE"
    cd "$dir" && exec "$dir/venv/bin/gunicorn" -c "$dir/deploy/gunicorn.conf.py"
}

# Wait until /healthz on PORT names release $1 and the master in pidfile $2 runs (a restart
# keeps the release: the old master's answer alone proves nothing); give up early once that
# master has come and gone (gunicorn halts by itself when a worker cannot boot), or has not
# written its pidfile within 10 s (it does so before loading the app).
wait_healthy() {  # release-id pidfile
    healthz --release "$1" --pidfile "$2" --master "$RELEASES/" --wait "$BOOT_TIMEOUT" --interval 0.05 >/dev/null
}

port_taken() {
    "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$PORT"
}

running_port() { cat "$RUN/port" 2>/dev/null || true; }

# status and restart act on the running app, which cannot move: ask it on its own port,
# whatever PORT says (the config's default when the deploy had PORT=… on its command line).
use_running_port() {
    was=$(running_port)
    if [ -n "$was" ] && [ "$was" != "${PORT:-}" ]; then
        say "(the app runs on port $was, not PORT=${PORT:-}: asking it there)"
        PORT=$was
    fi
}

check_port() {  # refuse before touching anything when PORT cannot be ours
    [ -n "${PORT:-}" ] || die "PORT is not set"
    if pid=$(master_pid); then
        was=$(running_port)
        if [ -n "$was" ] && [ "$was" != "$PORT" ]; then
            die "the app runs on port $was (pid $pid); run make stop before moving it to port $PORT"
        fi
    elif port_taken; then
        die "port $PORT on $(hostname) is already in use by another program; nothing was changed"
    fi
}

# Boot release $1 on a private unix socket and require /healthz before it takes traffic.
smoke_boot() {
    dir=$RELEASES/$1
    sock=$RUN/smoke.sock
    # The smoke gunicorn of a remote.sh that was killed (SIGKILL) mid-boot outlives it: stop it.
    left=$(cat "$RUN/smoke.pid" 2>/dev/null || true)
    if is_master "$left" && tr '\0' ' ' 2>/dev/null <"/proc/$left/cmdline" | grep -qF -- "--pid $RUN/smoke.pid"; then
        stop_pid "$left" "$STOP_TIMEOUT"
    fi
    rm -f "$sock" "$RUN/smoke.pid" "$LOG/smoke.log"
    : >"$LOG/smoke.log"
    if [ "$SERVICE" = system ]; then chown "$APP_USER:" "$LOG/smoke.log"; fi
    # In the foreground as our child (see daemon in gunicorn.conf.py), so that we see it
    # exit: gunicorn shuts down by itself at once when a worker cannot import the app, and
    # BOOT_TIMEOUT is only for slow boots. --pid keeps it off the main pidfile. As the
    # account the service runs as (as_app): never as root.
    (cd "$dir" && exec $AS_APP env "${VARS}_FOREGROUND=1" "$dir/venv/bin/gunicorn" -c "$dir/deploy/gunicorn.conf.py" \
        --bind "unix:$sock" --workers 1 --pid "$RUN/smoke.pid" \
        --error-logfile "$LOG/smoke.log" --access-logfile /dev/null) </dev/null >>"$LOG/smoke.log" 2>&1 &
    SMOKE_PID=$!
    ok=0
    # One poller. Until we reap it, the pid is ours: it has exited once it is a zombie or
    # gone (not when its cmdline is empty: a live child shows that while it execs).
    if host healthz --unix "$sock" --release "$1" --watch-pid "$SMOKE_PID" \
        --wait "$BOOT_TIMEOUT" --interval 0.05 >/dev/null; then ok=1; fi
    if [ "$ok" != 1 ]; then
        smoke_stop
        : >"$dir/.refused"
        tail_log "$LOG/smoke.log"
        die "release $1 failed its smoke boot (no healthy /healthz on a private socket); it was not switched to, and what ran before runs unchanged"
    fi
}

smoke_stop() { if [ -n "${SMOKE_PID:-}" ]; then kill -TERM "$SMOKE_PID" 2>/dev/null || true; wait "$SMOKE_PID" 2>/dev/null || true; SMOKE_PID=; fi; }

# The app's own pages ([deploy] smoke_paths) on the smoke boot's socket, after the release
# command (a page may need the new schema): a 5xx or no answer refuses the release.
smoke_paths() {  # release id
    dir=$RELEASES/$1
    if [ -n "$SMOKE_PATHS" ] && ! said=$(host healthz --unix "$RUN/smoke.sock" --paths "$SMOKE_PATHS"); then
        smoke_stop
        : >"$dir/.refused"
        tail_log "$LOG/smoke.log"
        die "release $1 failed its smoke test: $said on a private socket; it was not switched to, and what ran before runs unchanged"
    fi
    smoke_stop
}

# The release's own [deploy] release_command and smoke_paths, in one Python start (config.py
# as a script is standard library only: no app import). A release packed before smoke_paths
# existed knows only release_command.
release_settings() {  # release id: sets RELEASE_COMMAND and SMOKE_PATHS
    dir=$RELEASES/$1
    settings=$(cd "$dir" && for config in "$dir"/venv/lib/python*/site-packages/"$PACKAGE"/config.py; do
        "$dir/venv/bin/python" -S "$config" get "$APP_ENV" deploy release_command deploy smoke_paths 2>/dev/null ||
            "$dir/venv/bin/python" -S "$config" get "$APP_ENV" deploy release_command; done) ||
        die "cannot read [deploy] release_command and smoke_paths of $1"
    RELEASE_COMMAND=$(printf '%s\n' "$settings" | sed -n 1p)
    SMOKE_PATHS=$(printf '%s\n' "$settings" | sed -n 2p)
}

# Point `current` at release $1 atomically: a temp link renamed over it.
switch_to() {
    ln -sfn "releases/$1" "$APP_DIR/.current.tmp.$$"
    mv -T "$APP_DIR/.current.tmp.$$" "$CURRENT"
}

# A hand-over interrupted for good (remote.sh killed between USR2 and TERM) leaves the
# new master running as a child of the old one, which then ignores every USR2 ("Child
# exists"). Stop that child: its parent still serves, so no request is lost.
stop_handover_child() {  # pid of the running master
    child=$(cat "$PIDFILE.2" 2>/dev/null || true)
    is_master "$child" && [ "$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$child/status" 2>/dev/null)" = "$1" ] || return 0
    say "stopping pid $child, the new master of an unfinished hand-over"
    stop_pid "$child" "$STOP_TIMEOUT"
}

# Every gunicorn process started from release $1 (masters and workers, even one whose
# pidfile is gone: a master that halts removes its pidfile before it has exited).
release_pids() {
    for proc in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -qF "$RELEASES/$1/venv/bin/gunicorn "; then echo "${proc#/proc/}"; fi
    done
}

# Nothing ran before: start the new release; if it cannot serve, mark it refused and, on
# a first deploy, leave no `current` pointing at it (on_exit restores an earlier one).
start_fresh() {  # release id now current
    start_master && return 0
    stop_service
    if pid=$(master_pid); then stop_pid "$pid" "$STOP_TIMEOUT"; fi
    for pid in $(release_pids "$1"); do stop_pid "$pid" 5; done
    : >"$RELEASES/$1/.refused"
    if [ -z "${SWITCHED_FROM:-}" ]; then rm -f "$CURRENT"; fi
    tail_log "$LOG/gunicorn.log"
    die "release $1 did not answer /healthz on port $PORT within ${BOOT_TIMEOUT}s"
}

# USR2 hand-over: the old master forks a new one that runs `current` (see pre_exec in
# gunicorn.conf.py); both share the listening socket, so no request is refused.
handover() {  # release id now current
    old=$(master_pid) || { start_fresh "$1"; return; }
    stop_handover_child "$old"
    # The last hand-over's old master may still be draining: until it is gone and the
    # running master has seen so (it then renames gunicorn.pid.2 over gunicorn.pid: the
    # .2 file goes), gunicorn ignores USR2 ("Parent master exists"). Wait for that here.
    if [ "$(cat "$PIDFILE.2" 2>/dev/null || true)" = "$old" ]; then
        parent=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$old/status" 2>/dev/null || true)
        if is_master "$parent"; then say "  waiting for the previous master (pid $parent) to finish its requests"; fi
        i=0
        while [ "$(cat "$PIDFILE.2" 2>/dev/null || true)" = "$old" ] && [ "$i" -lt $(((STOP_TIMEOUT + 10) * 20)) ]; do
            if [ "$i" = $(((STOP_TIMEOUT + 5) * 20)) ] && is_master "$parent"; then kill -KILL "$parent" 2>/dev/null || true; fi
            sleep 0.05
            i=$((i + 1))
        done
    fi
    if [ "$SERVICE" != daemon ] && ! in_unit "$old"; then
        # A master started outside the unit (before systemd was usable here) cannot hand
        # over into it: stop it and let the unit start the release (a short restart).
        say "  moving the app from a detached gunicorn (pid $old) into $UNIT.service: a short restart"
        stop_pid "$old" "$STOP_TIMEOUT"
        start_fresh "$1"
        return
    fi
    rm -f "$PIDFILE.2"
    kill -USR2 "$old"
    if ! wait_healthy "$1" "$PIDFILE.2"; then
        if new=$(master_pid "$PIDFILE.2"); then stop_pid "$new" "$STOP_TIMEOUT"; fi
        : >"$RELEASES/$1/.refused"
        tail_log "$LOG/gunicorn.log"
        die "the new master for $1 did not become healthy; the old master (pid $old) keeps serving"
    fi
    SWITCHED_FROM=  # the new release serves: from here on, an interruption keeps it
    # The pidfile names the new master before the old one goes. systemd re-reads it when
    # the main process exits: otherwise the old master deletes it on exit, the unit counts
    # as finished and systemd kills the new master with it. gunicorn itself renames the .2
    # file only once it sees its parent gone: too late, so copy it now, atomically.
    cp "$PIDFILE.2" "$PIDFILE.tmp" && mv -f "$PIDFILE.tmp" "$PIDFILE"
    # TERM, and no waiting: the old master finishes its requests while the new one serves
    # (the next hand-over waits for it, if it comes that soon).
    kill -TERM "$old" 2>/dev/null || true
}

# The release's [deploy] release_command (migrations, say), in its venv and directory with
# the target's config, after the smoke boot and before the switch, under the lock. A
# rollout runs it on its first host only (SKIP_RELEASE_COMMAND on the others). The
# database's backup before a migration is the command's to take (`<package> migrate`
# takes one only when a migration is pending), into <VARS>_BACKUP_FILE.
release_command() {  # release id
    dir=$RELEASES/$1 command=$RELEASE_COMMAND
    [ -n "$command" ] || return 0
    if [ -n "${SKIP_RELEASE_COMMAND:-}" ]; then say "  release_command: not here (it ran on the first host)"; return 0; fi
    backup=$SHARED/backups/$1.backup
    mkdir -p "$SHARED/backups"
    if [ "$SERVICE" = system ]; then chown "$APP_USER:" "$SHARED/backups"; fi
    say "  release_command: $command"
    if ! (cd "$dir" && export "${VARS}_BACKUP_FILE=$backup" PATH="$dir/venv/bin:$PATH" && $AS_APP sh -c "$command"); then
        : >"$dir/.refused"
        restore_hint=
        if [ -f "$backup" ]; then restore_hint="; the database was backed up before it: if the command left it half-changed, make db-restore BACKUP=$(basename "$backup") CONFIRM=1"; fi
        die "the release command ($command) failed for $1: nothing was switched, and what ran before runs unchanged$restore_hint"
    fi
}

# Smoke-boot, [release command,] the smoke paths, switch, hand over, confirm; on failure after the switch
# on_exit switches back.
activate() {  # release-id [release_command]
    ensure_app_user
    if [ "$SERVICE" != daemon ]; then write_unit; fi  # settings may have changed
    step smoke_boot smoke_boot "$1"
    release_settings "$1"  # after the boot: a config it cannot load fails there, with the app's own words
    if [ "${2:-}" = release_command ]; then step release_command release_command "$1"; fi
    step smoke_paths smoke_paths "$1"
    SWITCHED_FROM=
    [ -L "$CURRENT" ] && SWITCHED_FROM=$(current_id)
    step switch switch_to "$1"
    step handover handover "$1"
    echo "$PORT" >"$RUN/port"
    SWITCHED_FROM=
}

# --- systemd: one unit per app directory ------------------------------------------

# Sets SERVICE (user, system or daemon), UNIT, SYSTEMCTL, UNIT_DIR, APP_USER, and WHY
# (in daemon mode: why not systemd).
detect_service() {
    SERVICE=daemon WHY='' APP_USER=$(id -un) AS_APP=
    UNIT=$DIST-$APP_ENV-$(printf '%s' "$APP_DIR" | sha256sum | cut -c1-8)
    if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
        WHY="$(hostname) does not run systemd"
        return 0
    fi
    if [ "$(id -u)" = 0 ]; then
        SERVICE=system SYSTEMCTL=systemctl UNIT_DIR=/etc/systemd/system
        APP_USER=$(printf '%s' "$DIST" | cut -c1-32)
        AS_APP="runuser -u $APP_USER --"
        return 0
    fi
    XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
    export XDG_RUNTIME_DIR
    if [ ! -e "/var/lib/systemd/linger/$APP_USER" ] && ! loginctl enable-linger "$APP_USER" >/dev/null 2>&1; then
        WHY="lingering is off for $APP_USER, so a user service would not start at boot; to fix: sudo loginctl enable-linger $APP_USER"
        return 0
    fi
    if ! systemctl --user show-environment >/dev/null 2>&1; then
        WHY="$APP_USER has no systemd user manager here (install libpam-systemd, then log in again)"
        return 0
    fi
    SERVICE=user SYSTEMCTL="systemctl --user" UNIT_DIR=$HOME/.config/systemd/user
}

# Once per deploy and start: how the app runs here, and what is unsafe about it.
say_service_mode() {
    if [ "$SERVICE" != daemon ]; then return 0; fi
    say "note: the app runs as a detached gunicorn, not a systemd service: $WHY; nothing restarts it after a crash or reboot"
    if [ "$(id -u)" = 0 ]; then
        say "warning: the app runs as root: a flaw in it or a dependency is a root shell on $(hostname); deploy as an ordinary user (REMOTE_USER=…), or to a host with systemd, where a root deploy runs the app as an unprivileged account"
    fi
}

in_unit() { grep -q "/$UNIT.service" "/proc/$1/cgroup" 2>/dev/null; }

# As root, the app runs as APP_USER: created once, owner of shared/ (logs, run, data and
# local.ini), which is all it may write; releases stay root's and read-only to it.
ensure_app_user() {
    [ "$SERVICE" = system ] || return 0
    if ! id -u "$APP_USER" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$APP_USER" || die "cannot create the account $APP_USER for the app"
        say "  created the system account $APP_USER: the app runs as it, not as root"
    fi
    chown -R "$APP_USER:$APP_USER" "$SHARED"
    runuser -u "$APP_USER" -- test -r "$APP_DIR/remote.sh" ||
        die "the app runs as $APP_USER, which cannot read $APP_DIR (under /root?): deploy to a directory it can reach, e.g. REMOTE_DIR=/srv/$DIST"
}

# Write the unit and its log-rotation timer where they changed (host.py write-units reloads
# systemd then), and keep the timer on.
write_unit() {
    ensure_app_user
    host write-units --unit-dir "$UNIT_DIR" --dist "$DIST" --env "$APP_ENV" --app-dir "$APP_DIR" --unit "$UNIT" \
        --kind "$SERVICE" --app-user "$APP_USER" --port "${PORT:-}" --python "$PYTHON_SETTING" \
        --log-max-kb "$LOG_MAX_KB" --log-keep "$LOG_KEEP" --boot-timeout "$BOOT_TIMEOUT" --stop-timeout "$STOP_TIMEOUT"
    $SYSTEMCTL enable --quiet --now "$UNIT-logs.timer" 2>/dev/null || true
}

# Stop and disable the unit (it stays stopped across reboots); harmless without one.
stop_service() {
    [ "$SERVICE" != daemon ] && [ -e "$UNIT_DIR/$UNIT.service" ] || return 0
    $SYSTEMCTL disable --quiet --now "$UNIT" 2>/dev/null || true
    $SYSTEMCTL reset-failed "$UNIT" 2>/dev/null || true
}

# Rotate a log past LOG_MAX_KB: rename it (gunicorn keeps writing to the renamed file),
# then USR1, on which gunicorn and its workers reopen their logs. No line is lost: every
# line lands in the old file or the new one. Keeps LOG_KEEP old ones (.1 newest).
cmd_rotate_logs() {  # host.py rotates; asked only when a log has grown past the size (no Python start otherwise)
    for log in "$LOG/gunicorn.log" "$LOG/access.log"; do
        if [ -f "$log" ] && [ "$(($(wc -c <"$log") / 1024))" -ge "$LOG_MAX_KB" ]; then
            host rotate-logs --log-dir "$LOG" --max-kb "$LOG_MAX_KB" --keep "$LOG_KEEP" --pidfile "$PIDFILE" --master "$RELEASES/"
            return
        fi
    done
}

# --- the database: a backup before each migration, on demand, and restores ---------------

# Does release $1 keep data? (database projects ship backup.py; the others have nothing to back up)
has_database() {
    for module in "$1"/venv/lib/python*/site-packages/"$PACKAGE"/backup.py; do [ -f "$module" ] && return 0; done
    return 1
}

# Back up the database into shared/backups/$2.backup with release $1's code; sets BACKUP
# (empty when there was nothing to back up yet, or no pg_dump: the reason is printed).
backup_database() {  # release-dir name
    BACKUP=
    has_database "$1" || return 0
    mkdir -p "$SHARED/backups"
    if [ "$SERVICE" = system ]; then chown "$APP_USER:" "$SHARED/backups"; fi
    file=$SHARED/backups/$2.backup
    said=$(cd "$1" && $AS_APP "$1/venv/bin/$PACKAGE" db-backup --env "$APP_ENV" --to "$file" 2>&1) ||
        die "the database backup failed ($said); nothing was migrated or switched"
    say "  $said"
    if [ -f "$file" ]; then BACKUP=$(basename "$file"); fi
}

cmd_db_backup() {  # make db-backup: a backup now, named manual-<UTC time>
    need_current
    backup_database "$(current_dir)" "manual-$(date -u +%Y%m%dT%H%M%SZ)"
    if [ -n "$BACKUP" ]; then say "backup: $BACKUP (make db-restore BACKUP=$BACKUP CONFIRM=1 brings it back)"; fi
}

# make db-restore BACKUP=name CONFIRM=1: stop the app, restore, start it again.
cmd_db_restore() {  # backup name
    need_current
    has_database "$(current_dir)" || die "this app has no database"
    case ${1:-} in '' | */* | .*) say "backups in $SHARED/backups:"; ls -1t "$SHARED/backups" 2>/dev/null || true
        die "give BACKUP=<one of the names above>" ;; esac
    [ -f "$SHARED/backups/$1" ] || { ls -1t "$SHARED/backups" 2>/dev/null || true; die "no backup $1 in $SHARED/backups (those above are there)"; }
    [ "${CONFIRM:-}" = 1 ] || die "db-restore replaces the database with $1 and stops the app meanwhile: run it with CONFIRM=1"
    lock db-restore
    cmd_stop
    dir=$(current_dir)
    said=$(cd "$dir" && $AS_APP "$dir/venv/bin/$PACKAGE" db-restore --env "$APP_ENV" --from "$SHARED/backups/$1" 2>&1) || {
        say "$said" >&2
        cmd_start
        die "the restore of $1 failed; the app was started again on the database as it was"
    }
    say "$said"
    cmd_start
}

# --- commands -----------------------------------------------------------------------

cmd_install() {  # tarball sha256: copy's host half
    lock "$1"
    step install install_release "$1" "$2"
    say "release_id=$RELEASE_ID"
}

cmd_deploy() {  # tarball sha256
    say_service_mode
    check_port
    lock "$1"
    step install install_release "$1" "$2"
    ensure_local_ini
    activate "$RELEASE_ID" release_command
    step prune cmd_prune
    say "deployed $RELEASE_ID: serving on port $PORT"
}

cmd_start() {  ## start the current release (no-op when it runs); under systemd it starts at boot again
    if pid=$(master_pid); then say "already running: release $(current_id), pid $pid"; return 0; fi
    [ -L "$CURRENT" ] || die "no release is current on this host yet: run make deploy first"
    say_service_mode
    check_port
    ensure_local_ini
    if ! start_master; then
        stop_service
        tail_log "$LOG/gunicorn.log"
        die "release $(current_id) did not answer /healthz on port $PORT within ${BOOT_TIMEOUT}s"
    fi
    echo "$PORT" >"$RUN/port"
    say "started release $(current_id) on port $PORT (pid $(master_pid))"
}

cmd_stop() {  ## stop gracefully (TERM, then KILL after the timeout); under systemd it stays stopped across reboots
    pid=$(master_pid) || { stop_service; rm -f "$PIDFILE"; say "not running"; return 0; }
    stop_handover_child "$pid"  # else it would take over once its parent is gone
    stop_service
    stop_pid "$pid" "$STOP_TIMEOUT"
    rm -f "$PIDFILE"
    say "stopped (was pid $pid)"
}

cmd_restart() {  ## hand over to a fresh master without dropping a request (a plain start when stopped)
    [ -L "$CURRENT" ] || die "no release is current on this host yet: run make deploy first"
    lock restart
    restart_current
}

restart_current() {  # a hand-over to a fresh master of current (a start when it is stopped)
    if master_pid >/dev/null; then
        use_running_port
        if [ "$SERVICE" != daemon ]; then write_unit; fi  # settings may have changed
        step handover handover "$(current_id)"
    else
        cmd_start
    fi
}

cmd_rollback() {  # make rollback: the previous release current and serving, health-checked
    [ -L "$CURRENT" ] || die "no release is current on this host yet: nothing to roll back"
    check_port
    lock rollback
    prev=$(previous_id)
    [ -n "$prev" ] || die "no release older than $(current_id) to roll back to"
    say "rolling back from $(current_id) to $prev"
    activate "$prev"
    say "rolled back: serving $prev on port $PORT"
}

cmd_status() {  ## service, release, pid, uptime, port and /healthz; fails unless healthy
    if [ "$SERVICE" = daemon ]; then
        say "service: none, a detached gunicorn ($WHY)"
    else
        say "service: $UNIT.service ($SERVICE unit, $($SYSTEMCTL is-enabled "$UNIT" 2>/dev/null || true)," \
            "$($SYSTEMCTL show -p ActiveState --value "$UNIT"), main pid $($SYSTEMCTL show -p MainPID --value "$UNIT"))"
    fi
    if [ ! -L "$CURRENT" ]; then say "no release is current in $APP_DIR"; return 1; fi
    say "release: $(current_id)"
    pid=$(master_pid) || { say "master: not running"; return 1; }
    say "master: pid $pid, up $(ps -o etime= -p "$pid" | tr -d ' ')"
    use_running_port
    say "port: ${PORT}"
    if answer=$(healthz); then say "healthz: $answer"; else say "healthz: FAILED: $answer"; return 1; fi
}

cmd_logs() {  ## the last LINES lines of the gunicorn log; FOLLOW=1 follows it
    [ -e "$LOG/gunicorn.log" ] || { say "no log yet in $LOG"; return 0; }
    if [ -n "${FOLLOW:-}" ]; then
        trap - HUP PIPE  # a closed ssh connection ends the follow
        exec tail -n "${LINES:-100}" -F "$LOG/gunicorn.log"
    fi
    tail -n "${LINES:-100}" "$LOG/gunicorn.log"
}

cmd_releases() {  ## list the releases on the host, marking current
    host releases --app-dir "$APP_DIR"
}

cmd_history() {  ## the last LINES deploys, rollbacks, restarts, stops and starts on the host
    if [ ! -s "$SHARED/deploys.log" ]; then say "no history yet in $SHARED/deploys.log"; return 0; fi
    say "time                 who  what  from  to  result  duration"
    tail -n "${LINES:-20}" "$SHARED/deploys.log"
}

need_current() { [ -L "$CURRENT" ] || die "no release is current on this host yet: run make deploy first"; }

cmd_exec() {  # make exec: base64 of a shell command, run in current with the app's config
    need_current
    command=$(printf '%s' "${1:-}" | base64 -d 2>/dev/null) && [ -n "$command" ] || die "usage: remote.sh exec BASE64-COMMAND"
    dir=$(current_dir)
    cd "$dir"
    PATH=$dir/venv/bin:$PATH
    export PATH
    status=0
    $AS_APP sh -c "$command" || status=$?
    if [ "$status" != 0 ]; then say "error: the command exited with status $status" >&2; fi
    exit "$status"
}

cmd_shell() {  # make shell: flask shell in current, with the app and its config loaded
    need_current
    dir=$(current_dir)
    cd "$dir"
    PATH=$dir/venv/bin:$PATH
    export PATH
    trap - EXIT HUP PIPE INT TERM  # the terminal's signals reach the shell
    exec $AS_APP "$dir/venv/bin/flask" --app "$PACKAGE:create_app()" shell
}

cmd_noop() { :; }  # make shell and config-set send this script first, then run it with a terminal or a value

# config-set, config-unset: edit shared/local.ini through the app's own schema check
# (the value comes on stdin, never on a command line), then hand over to a fresh master.
edit_local() {  # config-set|config-unset section.key
    [ -n "${2:-}" ] || die "usage: make $1 SETTING=section.key"
    lock "$1"
    ensure_local_ini
    # The app's own schema checks the value: the current release's, or before the first
    # deploy the newest one make copy installed (a database URL must be there first).
    dir=$( [ -L "$CURRENT" ] && current_dir || true)
    if [ -z "$dir" ]; then
        newest=$(finished_releases | tail -n 1)
        [ -n "$newest" ] || die "no release is on this host yet: run make copy first (the value is checked with the app's own schema), then make $1, then make deploy"
        dir=$RELEASES/$newest
    fi
    (cd "$dir" && $AS_APP "$dir/venv/bin/$PACKAGE" "$1" "$2" --env "$APP_ENV" --local "$SHARED/local.ini") || exit 1
    ensure_app_user
    if master_pid >/dev/null; then restart_current; fi
}
cmd_config_set() { edit_local config-set "$@"; }
cmd_config_unset() { edit_local config-unset "$@" </dev/null; }

cmd_config_show() {  # make config-show: the effective config on the host, secrets masked
    need_current
    dir=$(current_dir)
    cd "$dir" && exec $AS_APP "$dir/venv/bin/$PACKAGE" config-show --env "$APP_ENV" --local "$SHARED/local.ini"
}

cmd_check_host() {  # make check-host: what the host has, one line each
    facts=$(cmd_probe)
    say "python: Python $(echo "$facts" | sed -n 's/^python_version=//p') ($PYTHON), venv: $(echo "$facts" | sed -n 's/^venv=//p')"
    if [ "$SERVICE" = daemon ]; then
        say "systemd: no ($WHY)"
    else
        say "systemd: yes ($(systemctl --version | head -n 1 | cut -d' ' -f1-2)), $SERVICE unit$( [ "$SERVICE" = user ] && echo ', lingering: on')"
    fi
    say "disk: $(df -Pk "$APP_DIR" | awk 'NR == 2 { print int($4 / 1024) }') MiB free in $APP_DIR"
    if pid=$(master_pid) && [ "$(running_port)" = "${PORT:-}" ]; then
        say "port $PORT: in use by this app (pid $pid)"
    elif [ -n "${PORT:-}" ] && port_taken; then
        say "port $PORT: in use by another program"
    else
        say "port ${PORT:-?}: free"
    fi
}

cmd_unlock() {  ## remove a stale deploy lock
    if [ -d "$LOCK" ]; then say "removing deploy lock ($(lock_describe))"; rm -rf "$LOCK"; else say "no deploy lock held"; fi
}

# Keep the newest KEEP_RELEASES, never current or the one before; drop unfinished work,
# refused releases, the backups of releases gone and wheels no release brought.
cmd_prune() { host prune --app-dir "$APP_DIR" --keep "$KEEP_RELEASES"; }

main() {
    command=${1:-}
    [ $# -gt 0 ] && shift
    setup_paths
    host_program
    trap on_exit EXIT
    trap 'exit 130' INT TERM
    trap '' HUP PIPE
    case $command in
        exec_master | rotate_logs) SERVICE=unit ;;  # run by systemd, in the unit
        *) detect_service ;;
    esac
    case $SERVICE-$command in daemon-probe | daemon-check_host) ;; daemon-*) cmd_rotate_logs ;; esac  # nothing else would
    known=
    for name in $COMMANDS; do [ "$name" != "$command" ] || known=1; done
    [ -n "$known" ] || die "unknown command '$command' ($COMMANDS)"
    case $RECORDED in *" $command "*)
        HISTORY_WHAT=$command HISTORY_STARTED=$(now_ms)
        HISTORY_FROM=$( [ -L "$CURRENT" ] && current_id || echo none) ;;
    esac
    case $command in
        install | deploy) [ $# -eq 2 ] || die "usage: remote.sh $command TARBALL SHA256"; "cmd_$command" "$@" ;;
        exec | config_set | config_unset | db_restore) "cmd_$command" "$@" ;;
        smoke_boot | activate) lock "$command"; "$command" "$@" ;;
        *) "cmd_$command" ;;
    esac
}

main "$@"
exit  # the Makefile sends deploy/host.py after this line (host_program)
