#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL for the store's tests.
# Prints the URL to use as MOLT_TEST_PG_URL on its last line; exits 0 even when
# no server can be started (the tests then skip PostgreSQL and say why).
set -u
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
      || echo "start_postgres: apt-get install postgresql failed" >&2
  fi
fi
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "start_postgres: PostgreSQL is not installed" >&2
  exit 0
fi
ver=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
cluster=$(pg_lsclusters -h | awk 'NR==1 {print $2}')
if [ -z "$ver" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_createcluster "$ver" main >/dev/null 2>&1
  cluster=main
fi
pg_ctlcluster "$ver" "$cluster" start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='molt'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role molt login superuser password 'molt'\"" >/dev/null
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='molt_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O molt molt_test" >/dev/null
port=$(pg_lsclusters -h | awk 'NR==1 {print $3}')
echo "postgresql+asyncpg://molt:molt@127.0.0.1:${port}/molt_test"
