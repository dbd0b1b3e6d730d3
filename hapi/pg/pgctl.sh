#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the HAPI test server (tests and bench).
#
#   pgctl.sh start DIR PORT [DB]   initdb in DIR (must be absent or empty), start on 127.0.0.1:PORT,
#                                  create database DB (default fhircyclo); prints the JDBC URL
#   pgctl.sh createdb DIR DB       a fresh database in the running cluster (dropped first if it
#                                  exists); prints its JDBC URL
#   pgctl.sh url DIR [DB]          the JDBC URL of the running cluster
#   pgctl.sh stop DIR              stop the cluster (fast shutdown) and remove DIR
#
# User "fhircyclo", no password (trust on loopback only; TCP only, no Unix socket). Installs
# nothing: it uses Debian's postgresql package (/usr/lib/postgresql/<newest>/bin) or PG_BIN.
# initdb and postgres refuse to run as root, so as root the cluster belongs to PGCTL_OS_USER
# (default postgres, which Debian's package creates) and every server command runs as that user.
# Non-durable settings (fsync off, PostgreSQL's "Non-Durable Settings"): the cluster is thrown
# away after the run; the server tested for crash safety is HAPI, not PostgreSQL, and
# PGCTL_DURABLE=1 keeps PostgreSQL's own defaults for a measurement that needs them.
# Exit codes: 0 ok, 2 usage, 1 failure (message on stderr, log in DIR/server.log).
set -euo pipefail

DB_USER=fhircyclo
OS_USER=${PGCTL_OS_USER:-postgres}

die() { echo "pgctl: $*" >&2; exit 1; }
usage() { sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

pg_bin() {
	if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN"; return; fi
	local newest
	newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
	[[ -n $newest ]] || die "no PostgreSQL found (/usr/lib/postgresql/*/bin): apt-get install postgresql, or set PG_BIN"
	echo "$newest"
}

# Run a PostgreSQL program as the cluster's owner (runuser when we are root).
as_owner() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u "$OS_USER" -- "$@"
	else
		"$@"
	fi
}

data_dir() { echo "$1/data"; }

port_of() {
	local conf
	conf="$(data_dir "$1")/postgresql.auto.conf"
	[[ -f $conf ]] || die "$1: no cluster here (start it first)"
	sed -n "s/^port = '\{0,1\}\([0-9]*\)'\{0,1\}$/\1/p" "$conf" | tail -n 1
}

jdbc_url() { echo "jdbc:postgresql://127.0.0.1:$1/$2?user=$DB_USER"; }

psql_admin() {
	local port=$1; shift
	PGOPTIONS="-c client_min_messages=warning" as_owner "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres "$@"
}

fresh_db() {
	local port=$1 db=$2
	[[ $db =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "database name '$db': use [a-z_][a-z0-9_]*"
	psql_admin "$port" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" \
		>/dev/null || die "cannot create database $db on port $port"
}

cmd_start() {
	[[ $# -ge 2 && $# -le 3 ]] || usage
	local dir port db bin data
	dir=$(realpath -m "$1"); port=$2; db=${3:-fhircyclo}
	[[ $port =~ ^[0-9]+$ ]] || die "port '$port' is not a number"
	bin=$(pg_bin)
	if [[ -e $dir && -n $(ls -A "$dir" 2>/dev/null) ]]; then
		die "$dir exists and is not empty: give a new folder (stop removes it)"
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port on 127.0.0.1 is busy"; fi
	mkdir -p "$dir"
	if [[ $(id -u) -eq 0 ]]; then
		id "$OS_USER" >/dev/null 2>&1 || die "user $OS_USER missing (as root the cluster needs a non-root owner: PGCTL_OS_USER)"
		chown "$OS_USER" "$dir"
		# The owner must reach the folder: every parent needs o+x.
		runuser -u "$OS_USER" -- test -w "$dir" \
			|| die "$OS_USER cannot write $dir (a parent folder is not searchable by it): use a folder under /tmp"
	fi
	data=$(data_dir "$dir")
	as_owner "$bin/initdb" -D "$data" -U "$DB_USER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
		--no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
	{
		echo "port = '$port'"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = ''"
		echo "max_connections = 100"
		echo "shared_buffers = '256MB'"
		if [[ -z ${PGCTL_DURABLE:-} ]]; then
			echo "fsync = off"
			echo "synchronous_commit = off"
			echo "full_page_writes = off"
		fi
	} >>"$data/postgresql.auto.conf"
	as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null \
		|| { tail -n 20 "$dir/server.log" >&2 || true; die "PostgreSQL did not start (log $dir/server.log)"; }
	fresh_db "$port" "$db"
	jdbc_url "$port" "$db"
}

cmd_createdb() {
	[[ $# -eq 2 ]] || usage
	local port
	port=$(port_of "$1")
	fresh_db "$port" "$2"
	jdbc_url "$port" "$2"
}

cmd_url() {
	[[ $# -ge 1 && $# -le 2 ]] || usage
	jdbc_url "$(port_of "$1")" "${2:-fhircyclo}"
}

cmd_stop() {
	[[ $# -eq 1 ]] || usage
	local dir data
	dir=$(realpath -m "$1"); data=$(data_dir "$dir")
	[[ -f $data/PG_VERSION ]] || die "$dir: no cluster here"
	if [[ -f $data/postmaster.pid ]]; then
		as_owner "$(pg_bin)/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null \
			|| die "PostgreSQL in $dir did not stop (log $dir/server.log)"
	fi
	rm -rf -- "$dir"
}

[[ $# -ge 1 ]] || usage
command=$1; shift
case $command in
	start) cmd_start "$@" ;;
	createdb) cmd_createdb "$@" ;;
	url) cmd_url "$@" ;;
	stop) cmd_stop "$@" ;;
	*) usage ;;
esac
