# syncgate: `make run` starts a node, `make test` runs the whole suite.
GO ?= go

.PHONY: run test deps unit fuzz bench vet faults

run:
	$(GO) run .

deps:
	./scripts/deps.sh

# Every package of the gateway's module and of bench's (a module of its
# own, joined to this one by go.work; ./... does not reach into it).
PKGS = ./... ./bench/...

# The full suite: installs missing test dependencies, then vet + race tests.
test: deps vet
	TEST_REQUIRE_DEPS=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)

vet:
	$(GO) vet $(PKGS)

# The fault-injection check alone (it also runs in `make test`): each
# deliberate fault in internal/fault must make its named test fail.
faults:
	TEST_REQUIRE_DEPS=1 $(GO) test -race -count=1 -run '^TestFaultsCaught$$' -v ./internal/fault/

# Short fuzzing of every decoder (the seed corpora also run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 30s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzFrameHeader$$' -fuzztime 30s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzCatchupMerge$$' -fuzztime 30s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzPubData$$' -fuzztime 30s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzBrokerPayload$$' -fuzztime 30s ./gateway/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePublication$$' -fuzztime 30s ./gateway/

# Micro-benchmarks of the hot path.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./gateway/ ./brokers/...
