# keyrail -- the entry points. Every target installs what is missing first.
#   make run    build (release) and start keyrail on its embedded SQLite store
#   make test   build with ASan+UBSan and run every test; ends "N passed, N failed"
#   make demo   keyrail + fake vendor + the real Claude Code, one prompt, step by step
#   make bench  the benchmark harness (docs/PERFORMANCE.md)
#   make fuzz   every fuzz driver for FUZZ_SECONDS each
.PHONY: setup build run test demo bench fuzz clean format

FUZZ_SECONDS ?= 60

setup:
	@scripts/setup.sh

build: setup
	@[ -f build/release/build.ninja ] || meson setup build/release --buildtype=release >/dev/null
	@ninja -C build/release

run: build
	@mkdir -p .run
	./build/release/keyrail serve --dev --config etc/keyrail.dev.conf

test: setup
	@tests/run.sh

demo: build
	@scripts/demo.sh

bench: setup
	@KEYRAIL_SETUP_BENCH=1 scripts/setup.sh
	@bench/run.sh

fuzz: setup
	@scripts/fuzz.sh --seconds $(FUZZ_SECONDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build .run
