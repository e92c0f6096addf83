#!/usr/bin/env bash
# Makes sure the services the integration tests talk to are installed and running on
# loopback. Safe to run repeatedly; used by scripts/test.sh.
set -euo pipefail

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >/dev/null || true
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, command
  for _ in $(seq 1 60); do
    if eval "$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "services: $1 did not come up" >&2
  return 1
}

# PostgreSQL (metadata store tests): 127.0.0.1:5432, trust auth, database `test`.
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "services: installing PostgreSQL"
  apt_install postgresql postgresql-client
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL"
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    pg_createcluster 15 main >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for PostgreSQL "pg_isready -q -h 127.0.0.1 -p 5432"
fi
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  # A fresh cluster: allow trust auth on loopback and create the test database.
  hba=$(su postgres -c "psql -tAc 'show hba_file'" 2>/dev/null || true)
  if [ -n "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
  fi
  su postgres -c "createdb test" 2>/dev/null || true
fi

# MariaDB (MySQL source tests): 127.0.0.1:3306, root without a password, database `test`.
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "services: installing MariaDB"
  apt_install mariadb-server mariadb-client
fi
if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  echo "services: starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >/dev/null
  wait_for MariaDB "mariadb-admin -h 127.0.0.1 -u root ping"
fi
mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null 2>&1 || true

# Redis (Redis source tests): 127.0.0.1:6379, no password.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "services: installing Redis"
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no >/dev/null
  wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping"
fi

# Client tools the serving tests drive: the PostgreSQL JDBC driver (with a Java runtime).
if [ ! -f /usr/share/java/postgresql.jar ] || ! command -v java >/dev/null 2>&1; then
  echo "services: installing Java and the PostgreSQL JDBC driver"
  apt_install default-jre-headless libpostgresql-jdbc-java
fi
