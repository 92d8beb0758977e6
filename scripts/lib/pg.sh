# Shell functions shared by scripts/test.sh and scripts/bench.sh: a throwaway
# PostgreSQL cluster on 127.0.0.1 under a temporary directory, installed from
# Debian's packages when missing. Source it, then `start_cluster` (sets PG_URL) and
# `stop_cluster`. PG_MAX_CONNECTIONS sets the server's max_connections.

log() { printf '[pg] %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

# Runs apt-get as root: directly, or through sudo when there is one.
apt_install() {
  local sudo=""
  if ! is_root; then
    command -v sudo >/dev/null || { log "installing $* needs root: run as root, or install $* first"; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

install_postgres() {
  log "PostgreSQL not found: installing it from Debian's packages"
  apt_install postgresql
}

# The server's programs: found, or installed and then found.
ensure_pg_bin() {
  PG_BIN=$(find_pg_bin) || { install_postgres; PG_BIN=$(find_pg_bin); }
}

free_port() {
  local port
  for port in $(seq $((20000 + RANDOM % 20000)) 65000); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  return 1
}

start_cluster() {
  local bin
  ensure_pg_bin
  bin=$PG_BIN
  PG_DIR=$(mktemp -d /tmp/tenant-router-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  if is_root; then chown postgres: "$PG_DIR"; fi
  local port password
  port=$(free_port)
  password="tr-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  (umask 077; printf '%s\n' "$password" > "$PG_DIR/pwfile")
  if is_root; then chown postgres: "$PG_DIR/pwfile"; fi
  as_postgres "$bin/initdb" -D "$PG_DIR/data" -U router --pwfile="$PG_DIR/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
  # A self-signed certificate, so that the suite can check that sslmode passes through.
  command -v openssl >/dev/null || apt_install openssl
  openssl req -new -x509 -days 2 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.crt" >/dev/null 2>&1
  chmod 600 "$PG_DIR/server.key"
  if is_root; then chown postgres: "$PG_DIR/server.key" "$PG_DIR/server.crt"; fi
  # max_connections is generous: tests run at once, each with tenants of its own.
  # WAL is kept small: the suite creates a few hundred databases, each a WAL-logged
  # copy of template1, and machines of this kind can be short of disk.
  as_postgres "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=${PG_MAX_CONNECTIONS:-400} -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=64MB -c min_wal_size=32MB" >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; exit 1; }
  PG_URL="postgres://router:${password}@127.0.0.1:${port}/postgres"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') started on 127.0.0.1:$port (data in $PG_DIR)"
}

stop_cluster() {
  if [ -n "${PG_DIR:-}" ]; then
    if [ -n "${PG_BIN:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
      as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_DIR"
    log "PostgreSQL stopped and removed"
  fi
}

# psql on the server and database of URL $1, further arguments following. The URL's
# password goes to psql in PGPASSWORD, not on its command line, where `ps` would show
# it; psql never prompts for one.
pg_psql() {
  local url=$1; shift
  local scheme=${url%%://*} rest=${url#*://}
  local authority=${rest%%/*}
  local tail=${rest:${#authority}} user="" password="" hostport=$authority
  if [[ $authority == *@* ]]; then
    user=${authority%@*}
    hostport=${authority##*@}
    if [[ $user == *:* ]]; then
      password=${user#*:}
      user=${user%%:*}
    fi
  fi
  local plain="$scheme://${user:+$user@}$hostport$tail"
  if [ -n "$password" ]; then
    # Percent-encoded in the URL; PGPASSWORD takes it as it is.
    PGPASSWORD=$(printf '%b' "${password//%/\\x}") "$PG_BIN/psql" -w "$plain" "$@"
  else
    "$PG_BIN/psql" -w "$plain" "$@"
  fi
}

# A login role of the suite's own on the server of URL $1, with the URL's user's
# SUPERUSER and REPLICATION attributes (tests of moves use logical replication) and
# CREATEDB. Every database the suite creates is then owned by that role, so that
# `drop_suite_role` finds and drops them all, and nothing else, at the end: a
# developer's server does not keep the suite's databases (about 1.2 GB a run), and a
# second run against the same server at the same time loses none of its own.
# Sets SUITE_URL (the URL with the role's name and password in place of its user's)
# and returns 0; returns 1, leaving no role, when the user may not create roles, the
# server does not let the new role in (pg_hba.conf), or the URL logs in as someone
# else whatever its user (a `user=` in its query).
make_suite_role() {
  local url=$1 role password attrs
  role="tr_suite_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  attrs=$(pg_psql "$url" -XAtq -c "SELECT concat_ws(' ', CASE WHEN rolsuper THEN 'SUPERUSER' END, \
    CASE WHEN rolreplication THEN 'REPLICATION' END) FROM pg_roles WHERE rolname = current_user" 2>/dev/null) \
    || return 1
  # On standard input, not the command line, and kept out of the server's log where
  # the user may say so (a superuser).
  pg_psql "$url" -XAtq >/dev/null 2>&1 <<SQL || return 1
\\set ON_ERROR_STOP 0
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
\\set ON_ERROR_STOP 1
CREATE ROLE $role LOGIN CREATEDB $attrs PASSWORD '$password';
SQL
  local role_url
  role_url=$(printf '%s' "$url" | sed -E "s#^(postgres(ql)?://)([^@/]*@)?#\\1$role:$password@#")
  if [ "$(pg_psql "$role_url" -XAtqc 'SELECT current_user' 2>/dev/null)" != "$role" ]; then
    pg_psql "$url" -XAtqc "DROP ROLE $role" >/dev/null 2>&1 || true
    return 1
  fi
  SUITE_ROLE=$role SUITE_ADMIN_URL=$url SUITE_URL=$role_url
}

# Drops every database owned by the suite's role, as that role (a database's owner
# may drop it; the user that made the role may not, unless a superuser), then the
# role (see make_suite_role). Returns 1 when something of the role's is left.
drop_suite_role() {
  [ -n "${SUITE_ROLE:-}" ] || return 0
  local drops count
  # FORCE (PostgreSQL 13 and later) ends connections a test left open.
  drops=$(pg_psql "$SUITE_URL" -XAtq -c "SELECT format('DROP DATABASE %I%s;', d.datname, \
      CASE WHEN current_setting('server_version_num')::int >= 130000 THEN ' WITH (FORCE)' ELSE '' END) \
    FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = current_user") \
    || { log "could not list the suite's databases: role $SUITE_ROLE and its databases are left"; return 1; }
  count=$(printf '%s' "$drops" | grep -c . || true)
  if [ "$count" -gt 0 ]; then
    printf '%s\n' "$drops" | pg_psql "$SUITE_URL" -XAtq >/dev/null \
      || log "some of the suite's databases could not be dropped (owner: $SUITE_ROLE)"
  fi
  local role=$SUITE_ROLE
  SUITE_ROLE=""
  if pg_psql "$SUITE_ADMIN_URL" -XAtqc "DROP ROLE $role" >/dev/null 2>&1; then
    log "dropped the suite's $count databases and its role $role"
  else
    log "the suite's role $role still owns databases or objects, and is left on the server"
    return 1
  fi
}
