# Relaygate. `make test` installs what the tests need, builds and runs every test;
# `make run` builds and starts the gateway on its embedded default.
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
BUILD_FLAGS ?=
PYTHON ?= python3

.PHONY: all build release test unit integration policy-cases run bench deps clean

all: build

deps:
	scripts/install-deps test

build:
	$(SWIFT) build $(BUILD_FLAGS)

release:
	$(SWIFT) build -c release $(BUILD_FLAGS)

test: deps build unit integration

unit:
	$(SWIFT) test $(BUILD_FLAGS)

integration: build
	RELAYGATE=$(CURDIR)/.build/debug/relaygate $(PYTHON) -m unittest discover -s Tests/Integration -p 'test_*.py' -v

run: build
	@mkdir -p var/spool
	.build/debug/relaygate serve

bench: release
	scripts/install-deps bench
	RELAYGATE=$(CURDIR)/.build/release/relaygate bench/accept
	RELAYGATE=$(CURDIR)/.build/release/relaygate bench/idle

clean:
	rm -rf .build var
