# The two commands a user needs: `make demo` and `make test`. Both bring the
# machine up to date first (system packages, npm dependencies, TypeScript).
.PHONY: setup build bpf demo test test-unit test-e2e clean

setup:
	@scripts/setup.sh

build: setup
	@npx tsc -p .

# Rebuilds the committed BPF objects; only needed after editing bpf/.
bpf: setup
	@scripts/build-bpf.sh

demo: build
	./bin/kpx lab

test: build
	node --test --test-concurrency=1 dist/test/unit/*.test.js dist/test/bpf/*.test.js dist/test/e2e/*.test.js

test-unit: build
	node --test dist/test/unit/*.test.js

clean:
	rm -rf dist
