# Set-up is two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test browser screenshots lint fuzz bench bench-live bench-report soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The fuzz extra (atheris) too: `make test` runs every fuzz harness for a few seconds.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/threadchat serve

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The page's tests drive Debian's chromium (a browser build is never downloaded): installed
# with apt-get when missing, through sudo unless root.
browser:
	@command -v chromium >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# Every harness in tests/fuzz/, FUZZ_SECONDS in all (split evenly); FUZZ_HARNESS=irc picks one.
# New inputs go to .fuzz/corpus/, crashing ones to .fuzz/crashes/ (see docs/reliability.md).
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/run.py --seconds $(FUZZ_SECONDS) $(FUZZ_HARNESS)

# The page's pictures in docs/images/ (README.md), taken in chromium by tests/screenshots.py.
screenshots: $(STAMP) browser
	cd tests && ../$(BIN)/python screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check threadchat tests bench
	$(BIN)/ruff format --check threadchat tests bench

bench: $(STAMP)
	$(BIN)/python -m bench

# Every protocol connecting, joining, sending and leaving for SOAK_SECONDS with SOAK_CLIENTS
# at once; fails if a message is lost or RSS, threads or open files do not come back to their
# baseline (docs/reliability.md). Not part of `make test`: SOAK_SECONDS=1800 for the long one.
SOAK_SECONDS ?= 180
SOAK_CLIENTS ?= 200
SOAK_PLOT ?= bench/results/soak.png
soak: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS) --clients $(SOAK_CLIENTS) --plot $(SOAK_PLOT)

# Issue 14: a typing storm (200 users) and history pages with reactions and edits, timed, then
# counted (valgrind's callgrind: the load-independent figure on a shared machine).
bench-live: $(STAMP)
	$(BIN)/python -m bench.live_bench typing
	$(BIN)/python -m bench.live_bench history
	$(BIN)/python -m bench.live_bench history-count

bench-report: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) build *.egg-info .fuzz .hypothesis
