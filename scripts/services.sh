#!/usr/bin/env bash
# Make sure a PostgreSQL and a Redis server are reachable for the gateway and
# print the matching environment on stdout:
#
#     eval "$(scripts/services.sh)"        # -> DATABASE_URL, REDIS_URL exported
#     scripts/services.sh stop             # stop the throwaway servers under .run/
#     scripts/services.sh status           # show what is running under .run/
#     scripts/services.sh clean            # stop them and delete .run/ (their data)
#     scripts/services.sh tool NAME        # a tool the tests use (promtool, kubectl): its
#                                          # path on stdout, installed first as in (d)
#
# stdout carries only the two `export` lines; every log line goes to stderr.
#
# For Postgres and Redis independently, in this order:
#   a. DATABASE_URL / REDIS_URL already set: used as is (checked reachable).
#   b. The local default (127.0.0.1:5432 as user postgres, 127.0.0.1:6379) answers: used.
#   c. Otherwise a throwaway server is started from the installed binaries under
#      .run/ (Postgres on 127.0.0.1:55432, Redis on 127.0.0.1:56379), or reused
#      if an earlier call already started it.
#   d. Binaries missing: installed with apt-get when running as root (or with
#      passwordless sudo), then (c). Otherwise: a message saying what to install.
#
# The gateway database itself is not created here: `gateway migrate` creates it.
#
# Knobs (environment):
#   GATEWAY_PG_DEFAULT_HOST / GATEWAY_PG_DEFAULT_PORT        probed in (b)  [127.0.0.1 / 5432]
#   GATEWAY_REDIS_DEFAULT_HOST / GATEWAY_REDIS_DEFAULT_PORT  probed in (b)  [127.0.0.1 / 6379]
#   GATEWAY_PG_PORT / GATEWAY_REDIS_PORT    ports of the throwaway servers  [55432 / 56379]
#   GATEWAY_RUN_DIR        where the throwaway servers live        [<repo>/.run]
#   GATEWAY_AUTO_INSTALL   set to 0 to never run apt-get           [1]
#   GATEWAY_PG_OS_USER     system user that runs Postgres as root  [postgres]
set -euo pipefail

# Keep the caller's stdout for the export lines only; everything else -> stderr.
exec 3>&1 1>&2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUN_DIR="${GATEWAY_RUN_DIR:-$ROOT/.run}"
[[ $RUN_DIR == /* ]] || RUN_DIR="$PWD/$RUN_DIR"

DB_NAME=gateway
PG_DEFAULT_HOST="${GATEWAY_PG_DEFAULT_HOST:-127.0.0.1}"
PG_DEFAULT_PORT="${GATEWAY_PG_DEFAULT_PORT:-5432}"
REDIS_DEFAULT_HOST="${GATEWAY_REDIS_DEFAULT_HOST:-127.0.0.1}"
REDIS_DEFAULT_PORT="${GATEWAY_REDIS_DEFAULT_PORT:-6379}"
PG_PORT="${GATEWAY_PG_PORT:-55432}"
REDIS_PORT="${GATEWAY_REDIS_PORT:-56379}"
AUTO_INSTALL="${GATEWAY_AUTO_INSTALL:-1}"
PG_OS_USER="${GATEWAY_PG_OS_USER:-postgres}"

INSTALL_HINT="apt-get install postgresql redis-server"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

with_timeout() {
    local secs=$1
    shift
    if have timeout; then
        timeout "$secs" "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- probes

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    with_timeout 3 bash -c 'exec 9<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# redis_tcp_ping HOST PORT: a Redis there answers PING with PONG (no auth).
redis_tcp_ping() {
    # shellcheck disable=SC2016  # the inner script is expanded by the inner bash
    with_timeout 4 bash -c '
        exec 9<>"/dev/tcp/$0/$1" || exit 1
        printf "PING\r\n" >&9
        IFS= read -r -t 3 reply <&9 || exit 1
        [[ $reply == "+PONG"* ]]' "$1" "$2" 2>/dev/null
}

# pg_tool NAME: path of a Postgres client/server program, from PATH or from
# Debian's versioned directories (highest version first).
pg_tool() {
    local name=$1 dir
    if have "$name"; then
        command -v "$name"
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x $dir/$name ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done < <(pg_bin_candidates)
    return 1
}

pg_bin_candidates() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -d $d ]] && printf '%s\n' "$d"
    done | sort -rV
    for d in /usr/local/pgsql/bin /usr/pgsql-*/bin; do
        [[ -d $d ]] && printf '%s\n' "$d"
    done
    return 0
}

# URL_HOST / URL_PORT from a postgresql:// or redis:// URL (first host only).
parse_url_hostport() {
    local url=$1 default_port=$2 rest hostport host port
    rest=${url#*://}
    rest=${rest%%[/?#]*}
    hostport=${rest##*@}
    hostport=${hostport%%,*}
    if [[ $hostport == \[* ]]; then
        host=${hostport%%]*}
        host=${host#[}
        port=${hostport#*]}
        port=${port#:}
    else
        host=${hostport%%:*}
        port=${hostport#"$host"}
        port=${port#:}
    fi
    URL_HOST=$host
    URL_PORT=${port:-$default_port}
}

# pg_ready HOST PORT: a Postgres server accepts connections there.
pg_ready() {
    local isready
    if isready=$(pg_tool pg_isready); then
        "$isready" -q -t 3 -h "$1" -p "$2" -U postgres
    else
        tcp_open "$1" "$2"
    fi
}

# pg_login_ok HOST PORT: we can log in as postgres without a password
# (only checked when psql is installed).
pg_login_ok() {
    local psql db
    psql=$(pg_tool psql) || return 0
    for db in postgres template1; do
        if PGCONNECT_TIMEOUT=5 "$psql" -X -w -q -At -h "$1" -p "$2" -U postgres -d "$db" \
            -c 'select 1' >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}

# redis_ping HOST PORT: a Redis there answers PONG.
redis_ping() {
    local reply
    if have redis-cli; then
        reply=$(with_timeout 5 redis-cli -h "$1" -p "$2" ping 2>/dev/null) || true
        [[ $reply == PONG ]] && return 0
    fi
    redis_tcp_ping "$1" "$2"
}

# ---------------------------------------------------------------- (a) URLs given

check_database_url() {
    local url=$1 isready
    if isready=$(pg_tool pg_isready); then
        "$isready" -q -t 5 -d "$url" && return 0
        die "DATABASE_URL is set but no Postgres accepts connections there ($(redact "$url")). Start that server, or unset DATABASE_URL to let this script pick or start one."
    fi
    parse_url_hostport "$url" 5432
    if [[ -z $URL_HOST ]]; then
        log "DATABASE_URL has no TCP host and pg_isready is not installed: not checked"
        return 0
    fi
    tcp_open "$URL_HOST" "$URL_PORT" && return 0
    die "DATABASE_URL is set but nothing listens on $URL_HOST:$URL_PORT ($(redact "$url")). Start that server, or unset DATABASE_URL to let this script pick or start one."
}

check_redis_url() {
    local url=$1 reply
    case $url in
        unix://*)
            local path=${url#unix://}
            path=${path%%\?*}
            [[ -S $path ]] && return 0
            die "REDIS_URL is set but there is no socket at $path. Start that server, or unset REDIS_URL."
            ;;
        redis://*)
            if have redis-cli; then
                reply=$(with_timeout 5 redis-cli -u "$url" ping 2>/dev/null) || true
                [[ $reply == PONG ]] && return 0
                die "REDIS_URL is set but the Redis there does not answer PING ($(redact "$url")${reply:+, it said: $reply}). Start that server, or unset REDIS_URL."
            fi
            ;;
    esac
    parse_url_hostport "$url" 6379
    tcp_open "${URL_HOST:-127.0.0.1}" "$URL_PORT" && return 0
    die "REDIS_URL is set but nothing listens on ${URL_HOST:-127.0.0.1}:$URL_PORT ($(redact "$url")). Start that server, or unset REDIS_URL."
}

# Hide a password in a URL before logging it.
redact() {
    sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"
}

# ---------------------------------------------------------------- locking / users

LOCKED=0
acquire_lock() {
    [[ $LOCKED -eq 1 ]] && return 0
    mkdir -p "$RUN_DIR"
    if have flock; then
        exec 8>"$RUN_DIR/.lock"
        flock -w 300 8 || die "timed out waiting for another services.sh holding $RUN_DIR/.lock"
    fi
    LOCKED=1
}

ensure_pg_os_user() {
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    log "creating system user $PG_OS_USER to run the throwaway Postgres (it refuses to run as root)"
    if have useradd; then
        useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
            --shell /bin/sh "$PG_OS_USER"
    elif have adduser; then
        adduser --system --group --no-create-home --home /var/lib/postgresql "$PG_OS_USER"
    else
        die "cannot create the system user $PG_OS_USER (no useradd/adduser); create it, or run as a non-root user"
    fi
}

# as_pg CMD...: run a Postgres server program as a non-root user.
as_pg() {
    if ! is_root; then
        (cd / && "$@")
        return
    fi
    ensure_pg_os_user
    if have runuser; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    elif have su; then
        local cmd
        printf -v cmd '%q ' "$@"
        (cd / && su -s /bin/bash "$PG_OS_USER" -c "$cmd")
    elif have sudo; then
        (cd / && sudo -u "$PG_OS_USER" -- "$@")
    else
        die "running as root and none of runuser/su/sudo is available to run Postgres as $PG_OS_USER"
    fi
}

# ---------------------------------------------------------------- install (d)

# install_packages PKG...: apt-get install as root or with passwordless sudo.
install_packages() {
    local -a sudo=()
    [[ $AUTO_INSTALL == 1 ]] || {
        log "GATEWAY_AUTO_INSTALL=$AUTO_INSTALL: not installing $*"
        return 1
    }
    have apt-get || {
        log "no apt-get on this machine: cannot install $*"
        return 1
    }
    if ! is_root; then
        if have sudo && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            log "not root and no passwordless sudo: cannot install $*"
            return 1
        fi
    fi
    log "installing $* with apt-get (takes a minute or two)..."
    # 3>&- : a package's postinst may start a daemon; it must not keep our stdout.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 3>&- || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$@" >&2 3>&- || return 1
    hash -r
}

# ---------------------------------------------------------------- throwaway Postgres (c)

PG_BIN=""
find_pg_bin() {
    local d initdb
    if initdb=$(command -v initdb 2>/dev/null); then
        d=$(dirname "$(readlink -f "$initdb")")
        if [[ -x $d/pg_ctl && -x $d/postgres ]]; then
            PG_BIN=$d
            return 0
        fi
    fi
    while IFS= read -r d; do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            PG_BIN=$d
            return 0
        fi
    done < <(pg_bin_candidates)
    return 1
}

# Where the throwaway cluster lives: .run/ normally. As root, the postgres user
# must be able to reach it; if the checkout is somewhere it cannot (e.g. under
# /root), fall back to a directory in /tmp and remember that in .run/pg.base.
PG_BASE=""
pg_base() {
    if [[ -f $RUN_DIR/pg.base ]]; then
        PG_BASE=$(<"$RUN_DIR/pg.base")
        return 0
    fi
    PG_BASE=$RUN_DIR
}

choose_pg_base() {
    pg_base
    [[ -f $RUN_DIR/pg.base ]] && return 0
    is_root || return 0
    ensure_pg_os_user
    chmod 755 "$RUN_DIR"
    if ! as_pg test -x "$RUN_DIR" 2>/dev/null; then
        local sum
        sum=$(printf '%s' "$RUN_DIR" | cksum | cut -d' ' -f1)
        PG_BASE="${TMPDIR:-/tmp}/gateway-pg-$sum"
        log "user $PG_OS_USER cannot reach $RUN_DIR; keeping the throwaway Postgres in $PG_BASE"
        mkdir -p "$PG_BASE"
        chmod 755 "$PG_BASE"
        printf '%s\n' "$PG_BASE" >"$RUN_DIR/pg.base"
    fi
}

pg_major() {
    "$PG_BIN/postgres" --version | grep -oE '[0-9]+(\.[0-9]+)*' | sed -n 1p | cut -d. -f1
}

# pid_alive PID: the process exists and is not a zombie waiting to be reaped.
pid_alive() {
    local state=""
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r /proc/$1/stat ]]; then
        state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || true
    fi
    [[ $state != Z ]]
}

pg_running() { # data dir has a live postmaster
    local pid
    [[ -f $1/postmaster.pid ]] || return 1
    pid=$(sed -n 1p "$1/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

wait_pg_ready() {
    local port=$1 i
    for ((i = 0; i < 60; i++)); do
        pg_ready 127.0.0.1 "$port" && return 0
        sleep 0.5
    done
    return 1
}

# The postmaster in DATA is not running, but postmaster.pid may still name a
# pid that looks alive to Postgres: a killed postmaster not yet reaped (zombie),
# or, after a reboot, an unrelated process that got the same pid. Wait for the
# former; remove the file for the latter, else Postgres refuses to start.
clear_stale_postmaster_pid() {
    local data=$1 pid i comm
    [[ -f $data/postmaster.pid ]] || return 0
    pid=$(sed -n 1p "$data/postmaster.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        pid_alive "$pid" || {
            sleep 0.1
            continue
        }
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
        if [[ $comm != postgres* && $comm != postmaster* ]]; then
            log "removing stale $data/postmaster.pid (pid $pid is now $comm)"
            rm -f "$data/postmaster.pid"
        fi
        return 0
    done
    return 0
}

start_pg() {
    local data log sock port opts want have_ver
    find_pg_bin || die "Postgres server binaries (initdb, pg_ctl, postgres) not found"
    acquire_lock
    choose_pg_base
    data=$PG_BASE/pg
    log=$PG_BASE/pg.log
    sock=$PG_BASE/pgsock

    if pg_running "$data"; then
        port=$(sed -n 4p "$data/postmaster.pid")
        if wait_pg_ready "$port"; then
            log "reusing throwaway Postgres ($data) on 127.0.0.1:$port"
            PG_URL="postgresql://postgres@127.0.0.1:$port/$DB_NAME"
            return 0
        fi
        die "throwaway Postgres in $data is running but not answering on 127.0.0.1:$port; see $log, or run: scripts/services.sh stop"
    fi

    clear_stale_postmaster_pid "$data"

    want=$(pg_major)
    if [[ -f $data/PG_VERSION ]]; then
        have_ver=$(<"$data/PG_VERSION")
        if [[ $have_ver != "$want" ]]; then
            log "throwaway cluster $data is from Postgres $have_ver, binaries are $want: recreating it"
            rm -rf "$data"
        fi
    fi
    if [[ ! -f $data/PG_VERSION ]]; then
        log "initialising a throwaway Postgres $want cluster in $data (binaries: $PG_BIN)"
        rm -rf "$data"
        mkdir -p "$data"
        chmod 700 "$data"
        is_root && chown "$PG_OS_USER:" "$data"
        # (the redirection is opened by us, so the log may live where we own it)
        if ! as_pg "$PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C -N \
            >"$PG_BASE/initdb.log" 2>&1; then
            tail -n 20 "$PG_BASE/initdb.log" >&2 || true
            die "initdb failed for $data (log: $PG_BASE/initdb.log)"
        fi
    fi

    port=$PG_PORT
    if pg_ready 127.0.0.1 "$port" || tcp_open 127.0.0.1 "$port"; then
        die "port $port is already taken by another server; set GATEWAY_PG_PORT to a free port (or DATABASE_URL to a server to use)"
    fi

    mkdir -p "$sock"
    touch "$log"
    if is_root; then
        chown "$PG_OS_USER:" "$sock" "$log"
    fi
    # A Unix socket path is limited to ~107 bytes; we only use TCP, so drop the
    # socket if the checkout path is too long for it.
    local sockopt
    if ((${#sock} + 20 > 107)); then
        sockopt="-k ''"
    else
        sockopt="-k $(printf '%q' "$sock")"
    fi
    opts="-p $port $sockopt -c listen_addresses=127.0.0.1 -c max_connections=200"
    # Throwaway data: trade durability for speed (tests create/drop databases a lot).
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    log "starting throwaway Postgres on 127.0.0.1:$port (log: $log)"
    # 3>&- 8>&-: the server must not inherit the caller's stdout (a $(...) pipe
    # would never reach EOF) nor the lock.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -o "$opts" -l "$log" -w -t 60 start >&2 3>&- 8>&-; then
        tail -n 20 "$log" >&2 || true
        die "could not start the throwaway Postgres (log: $log)"
    fi
    wait_pg_ready "$port" || {
        tail -n 20 "$log" >&2 || true
        die "throwaway Postgres started but does not answer on 127.0.0.1:$port (log: $log)"
    }
    PG_URL="postgresql://postgres@127.0.0.1:$port/$DB_NAME"
}

stop_pg() {
    pg_base
    local data=$PG_BASE/pg pid
    if [[ ! -f $data/postmaster.pid ]]; then
        log "throwaway Postgres: not running"
        return 0
    fi
    if find_pg_bin; then
        if pg_running "$data"; then
            log "stopping throwaway Postgres ($data)"
            as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2 ||
                die "pg_ctl stop failed for $data"
            return 0
        fi
        log "throwaway Postgres: not running (stale postmaster.pid)"
        return 0
    fi
    # No binaries any more: signal the postmaster directly.
    pid=$(sed -n 1p "$data/postmaster.pid")
    if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" &&
        [[ $(cat "/proc/$pid/comm" 2>/dev/null || echo postgres) == postgres* ]]; then
        log "stopping throwaway Postgres (pid $pid)"
        kill -INT "$pid"
        wait_gone "$pid" || die "Postgres pid $pid did not stop"
    else
        log "throwaway Postgres: not running (stale postmaster.pid)"
    fi
}

# ---------------------------------------------------------------- throwaway Redis (c)

redis_pidfile() { printf '%s\n' "$RUN_DIR/redis.pid"; }

# Prints the pid of our throwaway redis-server if it is alive.
redis_alive_pid() {
    local pidfile pid comm
    pidfile=$(redis_pidfile)
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    if [[ -r /proc/$pid/comm ]]; then
        comm=$(<"/proc/$pid/comm")
        [[ $comm == redis-server* || $comm == redis-check* ]] || return 1
    fi
    printf '%s\n' "$pid"
}

wait_redis_ready() {
    local port=$1 i
    for ((i = 0; i < 40; i++)); do
        redis_ping 127.0.0.1 "$port" && return 0
        sleep 0.25
    done
    return 1
}

wait_gone() {
    local pid=$1 i
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    return 1
}

start_redis() {
    local server pid port pidfile logfile
    server=$(command -v redis-server) || die "redis-server not found"
    acquire_lock
    pidfile=$(redis_pidfile)
    logfile=$RUN_DIR/redis.log

    if pid=$(redis_alive_pid); then
        port=$(cat "$RUN_DIR/redis.port" 2>/dev/null || echo "$REDIS_PORT")
        if wait_redis_ready "$port"; then
            log "reusing throwaway Redis (pid $pid) on 127.0.0.1:$port"
            REDIS_URL_OUT="redis://127.0.0.1:$port/0"
            return 0
        fi
        die "throwaway Redis (pid $pid) is running but not answering on 127.0.0.1:$port; see $logfile, or run: scripts/services.sh stop"
    fi
    rm -f "$pidfile"

    port=$REDIS_PORT
    if tcp_open 127.0.0.1 "$port"; then
        die "port $port is already taken by another server; set GATEWAY_REDIS_PORT to a free port (or REDIS_URL to a server to use)"
    fi
    log "starting throwaway Redis on 127.0.0.1:$port (log: $logfile)"
    "$server" --port "$port" --bind 127.0.0.1 --daemonize yes --save "" --appendonly no \
        --dir "$RUN_DIR" --pidfile "$pidfile" --logfile "$logfile" >&2 3>&- 8>&- ||
        die "redis-server failed to start (log: $logfile)"
    printf '%s\n' "$port" >"$RUN_DIR/redis.port"
    if ! wait_redis_ready "$port"; then
        tail -n 20 "$logfile" >&2 || true
        die "throwaway Redis does not answer on 127.0.0.1:$port (log: $logfile)"
    fi
    REDIS_URL_OUT="redis://127.0.0.1:$port/0"
}

stop_redis() {
    local pid
    if pid=$(redis_alive_pid); then
        log "stopping throwaway Redis (pid $pid)"
        kill -TERM "$pid"
        wait_gone "$pid" || die "Redis pid $pid did not stop"
    else
        log "throwaway Redis: not running"
    fi
    rm -f "$(redis_pidfile)"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    PG_URL=""
    REDIS_URL_OUT=""
    local need_pg=0 need_redis=0

    # Postgres: (a) then (b).
    if [[ -n ${DATABASE_URL:-} ]]; then
        check_database_url "$DATABASE_URL"
        PG_URL=$DATABASE_URL
        log "Postgres: using DATABASE_URL from the environment ($(redact "$PG_URL"))"
    elif pg_ready "$PG_DEFAULT_HOST" "$PG_DEFAULT_PORT"; then
        if pg_login_ok "$PG_DEFAULT_HOST" "$PG_DEFAULT_PORT"; then
            PG_URL="postgresql://postgres@$PG_DEFAULT_HOST:$PG_DEFAULT_PORT/$DB_NAME"
            log "Postgres: using the local server at $PG_DEFAULT_HOST:$PG_DEFAULT_PORT"
        else
            log "Postgres at $PG_DEFAULT_HOST:$PG_DEFAULT_PORT does not let user postgres in without a password; using a throwaway server instead"
            need_pg=1
        fi
    else
        need_pg=1
    fi

    # Redis: (a) then (b).
    if [[ -n ${REDIS_URL:-} ]]; then
        check_redis_url "$REDIS_URL"
        REDIS_URL_OUT=$REDIS_URL
        log "Redis: using REDIS_URL from the environment ($(redact "$REDIS_URL_OUT"))"
    elif redis_ping "$REDIS_DEFAULT_HOST" "$REDIS_DEFAULT_PORT"; then
        REDIS_URL_OUT="redis://$REDIS_DEFAULT_HOST:$REDIS_DEFAULT_PORT/0"
        log "Redis: using the local server at $REDIS_DEFAULT_HOST:$REDIS_DEFAULT_PORT"
    else
        need_redis=1
    fi

    # (d) install what (c) needs and is missing, in one apt-get run.
    local -a missing=()
    if [[ $need_pg -eq 1 ]] && ! find_pg_bin; then
        missing+=(postgresql)
    fi
    if [[ $need_redis -eq 1 ]] && ! have redis-server; then
        missing+=(redis-server)
    fi
    if ((${#missing[@]})); then
        log "no server reachable and no binaries to start one: ${missing[*]} missing"
        if ! install_packages "${missing[@]}"; then
            die "$(
                printf 'cannot start a throwaway server: %s not installed.\n' "${missing[*]}"
                printf '  Install the binaries:   %s%s\n' "$(is_root || echo 'sudo ')" "$INSTALL_HINT"
                printf '  or point at servers:    export DATABASE_URL=postgresql://USER@HOST:PORT/%s REDIS_URL=redis://HOST:PORT/0' "$DB_NAME"
            )"
        fi
        if [[ $need_pg -eq 1 ]] && ! find_pg_bin; then
            die "postgresql was installed but initdb/pg_ctl are still not found"
        fi
        if [[ $need_redis -eq 1 ]] && ! have redis-server; then
            die "redis-server was installed but is still not found"
        fi
    fi

    # (c) throwaway servers under .run/.
    if [[ $need_pg -eq 1 ]]; then start_pg; fi
    if [[ $need_redis -eq 1 ]]; then start_redis; fi

    printf 'export DATABASE_URL=%q\n' "$PG_URL" >&3
    printf 'export REDIS_URL=%q\n' "$REDIS_URL_OUT" >&3
}

cmd_stop() {
    if [[ ! -d $RUN_DIR ]]; then
        log "nothing to stop: $RUN_DIR does not exist"
        return 0
    fi
    acquire_lock
    stop_pg
    stop_redis
}

# Stop the servers, then delete everything they kept (.run/ and, as root, a
# /tmp fallback cluster recorded in .run/pg.base).
cmd_clean() {
    cmd_stop
    pg_base
    if [[ $PG_BASE != "$RUN_DIR" && $PG_BASE =~ /gateway-pg-[0-9]+$ && -d $PG_BASE ]]; then
        log "removing $PG_BASE"
        rm -rf "$PG_BASE"
    fi
    if [[ -d $RUN_DIR ]]; then
        log "removing $RUN_DIR"
        rm -rf "$RUN_DIR"
    fi
}

cmd_status() {
    local pid port
    pg_base
    if [[ -f $PG_BASE/pg/postmaster.pid ]] && find_pg_bin && pg_running "$PG_BASE/pg"; then
        port=$(sed -n 4p "$PG_BASE/pg/postmaster.pid")
        log "throwaway Postgres: running on 127.0.0.1:$port ($PG_BASE/pg)"
    else
        log "throwaway Postgres: not running"
    fi
    if pid=$(redis_alive_pid); then
        port=$(cat "$RUN_DIR/redis.port" 2>/dev/null || echo "$REDIS_PORT")
        log "throwaway Redis: running on 127.0.0.1:$port (pid $pid)"
    else
        log "throwaway Redis: not running"
    fi
}

# ---------------------------------------------------------------- test tools

# cmd_tool NAME: print the path of NAME, installing its Debian package first if missing.
cmd_tool() {
    local name=${1:-} package
    case $name in
        promtool) package=prometheus ;;
        kubectl) package=kubernetes-client ;;
        *) die "unknown tool '$name' (known: promtool, kubectl)" ;;
    esac
    if ! have "$name"; then
        log "$name not found"
        install_packages "$package" ||
            die "$name is not installed and could not be installed: $(is_root || echo 'sudo ')apt-get install $package"
        have "$name" || die "$package was installed but $name is still not found"
    fi
    command -v "$name" >&3
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

case "${1:-start}" in
    start | env) cmd_start ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    tool) cmd_tool "${2:-}" ;;
    -h | --help | help) usage ;;
    *)
        usage
        exit 2
        ;;
esac
