#!/usr/bin/env bash
# Start a throwaway PostgreSQL (Debian's postgresql package) on 127.0.0.1 for the feedback tests
# and print the URL to export as RLHF_TEST_PG_URL. Usage, e.g. in .ci/run:
#   apt-get install -y -q postgresql && pip install -q -e '.[postgres]'
#   export RLHF_TEST_PG_URL=$(bash tests/feedback/start_postgres.sh) && python -m pytest -q tests/feedback
# The cluster lives in a temporary directory owned by the postgres user; trust authentication,
# loopback only. Stop it with: su postgres -c "pg_ctl -D DIR stop" (DIR is printed on stderr).
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# A free port unless one is asked for: a cluster left running by an earlier run must not stop this one.
PORT=${RLHF_TEST_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DIR=$(mktemp -d /tmp/rlhf-pg-XXXXXX)
RUN_AS=(); [ "$(id -u)" -eq 0 ] && { chown postgres "$DIR"; RUN_AS=(su postgres -c); }
run() { if [ ${#RUN_AS[@]} -gt 0 ]; then "${RUN_AS[@]}" "$*"; else bash -c "$*"; fi; }
run "$BIN/initdb -D $DIR/data -A trust -U postgres" >/dev/null
run "$BIN/pg_ctl -D $DIR/data -o '-k $DIR -p $PORT -c listen_addresses=127.0.0.1' -l $DIR/log -w start" >/dev/null
"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -q -c "CREATE DATABASE rlhf_test" >/dev/null
echo "cluster in $DIR" >&2
if [ -n "${RLHF_TEST_PG_DIR_FILE:-}" ]; then echo "$DIR" > "$RLHF_TEST_PG_DIR_FILE"; fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/rlhf_test"
