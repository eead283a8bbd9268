#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func FuzzX(f *testing.F)` in a
# *_test.go file) for FUZZTIME, one `go test -fuzz` per target: go test fuzzes
# one target at a time. Packages run side by side (FUZZJOBS at once, one fuzz
# worker each); the targets of one package run one after the other, so no
# two runs compile the same package's instrumented build at once.
#
#   scripts/fuzz.sh            every target, FUZZTIME each (default 3s)
#   scripts/fuzz.sh -l         list the targets: "PACKAGE_DIR TARGET" per line
#
# An input that fails is written by go test under the package's
# testdata/fuzz/FuzzX/, where plain `go test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-3s}
# How long the engine may shrink a new input. Go's default (60s) would
# spend a short run's whole budget shrinking the first interesting input of
# a slow target.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
FUZZJOBS=${FUZZJOBS:-$(nproc 2>/dev/null || echo 2)}

# targets prints "DIR TARGET" for every fuzz target, sorted.
targets() {
	grep -rEo --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git --exclude-dir=build --exclude-dir=bin \
		'^func Fuzz[A-Za-z0-9_]*\(' . |
		while IFS=: read -r file match; do
			name=${match#func }
			echo "$(dirname "$file") ${name%(}"
		done | sort -u
}

if [ "${1:-}" = -l ]; then
	targets
	exit 0
fi

# fuzz_package DIR TARGET...: fuzzes the targets of one package in turn;
# prints one line per target, and go test's output when one fails.
fuzz_package() {
	local dir=$1 target out status=0
	shift
	out=$(mktemp)
	for target in "$@"; do
		local start=$SECONDS
		if "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" -parallel 1 "$dir" >"$out" 2>&1; then
			echo "ok    $dir $target ($((SECONDS - start))s)"
		elif grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
			# The engine's own deadline passed while a worker was busy (a
			# loaded machine): no input failed, nothing to replay.
			echo "ok    $dir $target ($((SECONDS - start))s; the fuzz engine's deadline passed mid-run, no failing input)"
		else
			echo "FAIL  $dir $target"
			sed 's/^/    /' "$out"
			status=1
		fi
	done
	rm -f "$out"
	return $status
}
export -f fuzz_package
export GO FUZZTIME FUZZMINIMIZETIME

list=$(targets)
if [ -z "$list" ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
echo "fuzzing $(wc -l <<<"$list") targets for $FUZZTIME each, $FUZZJOBS packages at a time"
start=$SECONDS
# One line per package: "DIR TARGET TARGET ...".
if awk '{t[$1] = t[$1] " " $2} END {for (d in t) print d t[d]}' <<<"$list" | sort |
	xargs -P "$FUZZJOBS" -L 1 bash -c 'fuzz_package "$@"' fuzz; then
	echo "fuzzing passed in $((SECONDS - start))s"
else
	echo "fuzzing failed (see FAIL above)" >&2
	exit 1
fi
