# cookiecutter-flask-deploy: `make help` lists the targets.
SHELL := /bin/sh
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := $(CURDIR)/build/demo
DEMO_PROJECT := $(DEMO)/my-flask-app
DEMO_PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (0: no workers, everything in this process).
PYTEST_WORKERS ?= 2

.PHONY: help packages venv test demo demo-stop bench clean

help: ## list the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

packages: ## as root, apt-get install the Debian packages of tests/debian-packages.txt that are missing (else print the line)
	@sh tests/harness/debian_packages.sh

venv: $(VENV)/.installed ## create .venv from requirements-dev.txt (once)
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# --dist loadfile: a test file runs whole on one worker, so its module fixtures are made once
# and test_hosts.py's namespace hosts (one fixed subnet) never exist twice at a time. Session
# fixtures (the baked project, the private sshd) are made once per worker.
test: packages venv ## run the template's tests (bakes, builds, deploys to a private sshd), files in parallel
	$(PY) -m pytest tests -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: packages venv ## bake the example, test and pack it, deploy it to a private sshd on loopback
	@$(PY) tests/harness/sshd.py start $(DEMO)/sshd >/dev/null
	$(VENV)/bin/cookiecutter --no-input --overwrite-if-exists -o $(DEMO) .
	cd $(DEMO_PROJECT) && { [ -d .git ] || git init -q; } && . $(DEMO)/sshd/sshd.env && \
		$(MAKE) --no-print-directory deploy REMOTE_HOST=$$REMOTE_HOST SSH_OPTS="$$SSH_OPTS" \
		REMOTE_DIR=$(DEMO)/host PORT=$(DEMO_PORT)
	@echo "demo: http://127.0.0.1:$(DEMO_PORT)/ serves $$(curl -s http://127.0.0.1:$(DEMO_PORT)/healthz)"
	@echo "demo: project in $(DEMO_PROJECT); make demo-stop removes it all"

demo-stop: ## stop the demo app and its sshd, remove build/demo
	-@[ -f $(DEMO)/sshd/sshd.env ] && cd $(DEMO_PROJECT) && . $(DEMO)/sshd/sshd.env && \
		$(MAKE) --no-print-directory stop REMOTE_HOST=$$REMOTE_HOST SSH_OPTS="$$SSH_OPTS" \
		REMOTE_DIR=$(DEMO)/host PORT=$(DEMO_PORT)
	-@[ -d $(DEMO)/sshd ] && $(PYTHON) tests/harness/sshd.py stop $(DEMO)/sshd
	rm -rf $(DEMO)

# wrk (a Debian package) measures requests/s; matplotlib (bench/requirements.txt, bench only)
# draws bench/handover.png.
bench: venv $(VENV)/.bench-installed ## measure bake, test, pack, deploy, hand-over and throughput (a table, bench/handover.png)
	@command -v wrk >/dev/null || { echo "make bench needs wrk to measure requests/s: apt-get install wrk" >&2; exit 2; }
	$(PY) bench/run.py
$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

clean: ## remove build output and the venv
	rm -rf build $(VENV)
