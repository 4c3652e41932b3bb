#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest on SQLite and on PostgreSQL.
#
# PostgreSQL: uses HARDCOST_TEST_DATABASE_URL when set; otherwise starts a throwaway server
# from the machine's PostgreSQL binaries (Debian's `postgresql` package) on a free loopback
# port, and removes it afterwards. HARDCOST_REQUIRE_POSTGRES=1 (CI) makes a missing server an
# error instead of a skipped half.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
# Every version pinned: constraints.txt (runtime) and dev-constraints.txt (the dev tools and
# pip itself), written by scripts/lock.py. A venv that had other versions is brought to the pins.
python -m pip install --quiet -c dev-constraints.txt pip
# Editable in setuptools' strict mode (setup.cfg): a tree of links laid out as installed
# (hardcost/sync/... → sync/...) under build/__editable__.hardcost-*/, rebuilt by every run of
# this line, so that modules added or removed since the last run are seen.
python -m pip install --quiet -e '.[dev]' -c constraints.txt -c dev-constraints.txt
# tests/test_pins.py checks the installed versions against the pins only when this says so.
export HARDCOST_PINNED_VENV=1

echo "== ruff"; ruff check hardcost sync bot sandbox tests bench
# mypy checks the package as it is installed: hardcost, hardcost.sync, .bot and .sandbox, in
# that tree (error lines name its links; each leads to the file in hardcost/, sync/, ...).
echo "== mypy"
mypy "$(python -c 'import hardcost.sync as s, pathlib; print(pathlib.Path(s.__file__).parents[1])')"

pg_dir=""
cleanup() {
  if [ -n "$pg_dir" ] && [ -d "$pg_dir" ]; then
    runas "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT

runas() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || return 1
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then return 1; fi
  pg_dir=$(mktemp -d /tmp/hardcost-pg.XXXXXX)
  chmod 755 "$pg_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
  local port
  port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  runas "$pg_bin/initdb" -D "$pg_dir/data" -U hardcost --auth=trust -E UTF8 >/dev/null
  runas "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -k $pg_dir -c fsync=off" start >/dev/null
  runas "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U hardcost hardcost_test
  export HARDCOST_TEST_DATABASE_URL="postgresql://hardcost@127.0.0.1:$port/hardcost_test"
}

echo "== pytest (SQLite)"
env -u HARDCOST_TEST_DATABASE_URL pytest -q -p no:cacheprovider "$@"

if [ -z "${HARDCOST_TEST_DATABASE_URL:-}" ]; then
  if ! start_postgres; then
    if [ "${HARDCOST_REQUIRE_POSTGRES:-}" = 1 ]; then
      echo "PostgreSQL binaries not found: install Debian's postgresql package" >&2
      exit 1
    fi
    echo "== PostgreSQL not installed: the PostgreSQL half was NOT run (apt-get install postgresql)"
    exit 0
  fi
fi
echo "== pytest (PostgreSQL ${HARDCOST_TEST_DATABASE_URL##*@})"
pytest -q -p no:cacheprovider "$@"
