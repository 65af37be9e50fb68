#!/usr/bin/env bash
# A throw-away PostgreSQL on 127.0.0.1 for the tests marked `postgres`.
#
#   ci/postgres.sh start     # prints the URL; also in $NEMO_PG_DIR/url and $NEMO_PG_DIR/env.sh
#   . /tmp/nemo-rl-hpo-pg/env.sh && pytest -m postgres
#   ci/postgres.sh stop      # stops it and deletes the cluster
#   ci/postgres.sh down|up   # stop the server, keep the cluster / start it again, same port
#                            # (the storage-outage fault test; nothing else needs them)
#
# The cluster lives in ${NEMO_PG_DIR:-/tmp/nemo-rl-hpo-pg} (initdb, a free port, database
# `optuna` owned by user `nemo` with a random password, or NEMO_PG_PASSWORD). As root it installs
# the Debian package if missing (PostgreSQL 15 on Debian 12) and runs the server as `postgres`,
# since initdb refuses root. `start` when it already runs only prints the URL.
set -euo pipefail

STATE=${NEMO_PG_DIR:-/tmp/nemo-rl-hpo-pg}
DB_USER=nemo
DB_NAME=optuna

log() { printf 'ci/postgres.sh: %s\n' "$*"; }
die() {
    printf 'ci/postgres.sh: %s\n' "$*" >&2
    exit 1
}

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -n $d ]] && echo "$d"
}

as_owner() {
    # Run a server command as the data dir's owner: `postgres` when we are root.
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local bin
    bin=$(pg_bin || true)
    if [[ -z $bin ]]; then
        [[ $(id -u) -eq 0 ]] || die "PostgreSQL is not installed; run as root to install it, or apt-get install postgresql."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }
        bin=$(pg_bin) || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin was found."
    fi
    local data=$STATE/data
    if [[ -s $STATE/url ]] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "already running"
        cat "$STATE/url"
        return 0
    fi

    local t0 port password
    t0=$(date +%s.%N)
    rm -rf "$STATE"
    mkdir -p "$STATE"
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$STATE"
    chmod 700 "$STATE"
    # A free TCP port on 127.0.0.1 (the kernel picks it; the tiny race is harmless in CI).
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=${NEMO_PG_PASSWORD:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}

    as_owner "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --no-locale >"$STATE/initdb.log" 2>&1 || die "initdb failed; see $STATE/initdb.log"
    # fsync off: a throw-away cluster, several times faster on small commits.
    echo "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$STATE -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >"$STATE/server.opts"
    as_owner "$bin/pg_ctl" -D "$data" -l "$STATE/server.log" -w -t 60 -o "$(cat "$STATE/server.opts")" \
        start >/dev/null || die "the server did not start; see $STATE/server.log"
    as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$STATE" -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$password'" \
        -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
    local url="postgresql://$DB_USER:$password@127.0.0.1:$port/$DB_NAME"
    umask 077
    echo "$url" >"$STATE/url"
    echo "export NEMO_RL_HPO_TEST_PG_URL='$url'" >"$STATE/env.sh"
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$STATE/url" "$STATE/env.sh" && chmod 644 "$STATE/url" "$STATE/env.sh"
    log "PostgreSQL up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s on 127.0.0.1:$port; use: . $STATE/env.sh"
    echo "$url"
}

stop() {
    local bin
    bin=$(pg_bin || true)
    if [[ -n $bin && -f $STATE/data/postmaster.pid ]]; then
        as_owner "$bin/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null || true
        log "stopped"
    fi
    rm -rf "$STATE"
}

# down/up: an outage of a running cluster (connections drop, the data and port stay).
down() {
    local bin
    bin=$(pg_bin) || die "PostgreSQL is not installed."
    [[ -f $STATE/data/postmaster.pid ]] || die "no server runs in $STATE."
    as_owner "$bin/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null
    log "server down (cluster kept in $STATE)"
}

up() {
    local bin
    bin=$(pg_bin) || die "PostgreSQL is not installed."
    [[ -s $STATE/server.opts ]] || die "no cluster in $STATE; use start."
    as_owner "$bin/pg_ctl" -D "$STATE/data" -l "$STATE/server.log" -w -t 60 \
        -o "$(cat "$STATE/server.opts")" start >/dev/null || die "the server did not start; see $STATE/server.log"
    log "server up again"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    down) down ;;
    up) up ;;
    *) die "usage: ci/postgres.sh start|stop|down|up" ;;
esac
