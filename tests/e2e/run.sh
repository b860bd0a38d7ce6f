#!/bin/sh
# Runs one end-to-end test file with pytest: the test virtual environment
# (build/venv-test, made by `make test`, with the openai client) when it
# exists, else Debian's python3 (tests needing the extras skip, saying why).
PY="${AS_SOURCE_DIR:-.}/build/venv-test/bin/python"
[ -x "$PY" ] || PY=/usr/bin/python3
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
