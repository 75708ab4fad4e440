# Relaygate. `make test` installs what the tests need, builds and runs every test;
# `make run` builds and starts the gateway on its embedded default.
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
BUILD_FLAGS ?=
PYTHON ?= python3

.PHONY: all build release test unit integration policy-cases run bench deps clean dev-certs

all: build

deps:
	scripts/install-deps test

build:
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(SWIFT) build -c release $(BUILD_FLAGS)

test: deps build dev-certs unit policy-cases integration

# Development certificates (certs/make-certs): STARTTLS for `make run`, and the files the example
# policies and the tests name. Made once; `make clean` removes them.
dev-certs:
	@test -f var/certs/client.pem || certs/make-certs var/certs

unit:
	$(SWIFT) test $(BUILD_FLAGS)

integration: build dev-certs
	RELAYGATE=$(CURDIR)/.build/debug/relaygate $(PYTHON) -m unittest discover -s Tests/Integration -p 'test_*.py' -v

# Every example policy is valid and passes its case file.
policy-cases: build dev-certs
	@set -e; for conf in policies/*.conf; do \
	  cases=$${conf%.conf}.cases; \
	  .build/debug/relaygate check --config $$conf; \
	  test -f $$cases || { echo "$$conf has no case file $$cases"; exit 1; }; \
	  .build/debug/relaygate test --config $$conf $$cases; \
	done

run: build dev-certs
	@mkdir -p var/spool
	.build/debug/relaygate serve --tls-cert var/certs/server.pem --tls-key var/certs/server.key

bench: release
	scripts/install-deps bench
	RELAYGATE=$(CURDIR)/.build/release/relaygate bench/accept
	RELAYGATE=$(CURDIR)/.build/release/relaygate bench/idle
	RELAYGATE=$(CURDIR)/.build/release/relaygate bench/tls

clean:
	rm -rf .build var
