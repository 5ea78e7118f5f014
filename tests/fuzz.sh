#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx in a _test.go file) of the module,
# or of the given packages, for DURATION each, and stops at the first
# failure.
#
#   tests/fuzz.sh DURATION [PACKAGE...]     e.g. tests/fuzz.sh 10s
#                                                tests/fuzz.sh 2m ./pkg/nfrules
#
# DURATION is a go test -fuzztime value (10s, 5m, 1000x). Targets are found
# with go test -list 'Fuzz.*' in each package whose test files define one.
# A failing input is written to the package's testdata/fuzz/FuzzXxx/: commit
# it with the fix, and plain go test replays it from then on (plain go test
# also runs every target's seeds, without fuzzing).
#
# Environment:
#   FUZZ_PARALLEL  fuzz workers per target (default: go test's, GOMAXPROCS)
#   FUZZ_MINIMIZE  -fuzzminimizetime, time spent shrinking a new or failing
#                  input (default: go test's, 60s)
set -euo pipefail

usage() {
	echo "usage: tests/fuzz.sh DURATION [PACKAGE...]   (DURATION: 10s, 5m, 1000x)" >&2
	exit 2
}
[[ $# -ge 1 && $1 =~ ^[0-9]+(x|ms|s|m|h)$ ]] || usage
duration=$1
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."
packages=("$@")
[[ ${#packages[@]} -gt 0 ]] || packages=(./...)

flags=(-fuzztime "$duration" -timeout 0)
[[ -z ${FUZZ_PARALLEL:-} ]] || flags+=(-parallel "$FUZZ_PARALLEL")
[[ -z ${FUZZ_MINIMIZE:-} ]] || flags+=(-fuzzminimizetime "$FUZZ_MINIMIZE")

# Packages whose test files define a fuzz target: listing only those keeps
# go test -list from building every test binary of the module.
candidates=()
while read -r pkg files; do
	[[ -n $files ]] || continue
	# shellcheck disable=SC2086 # files is a list of paths without spaces
	if grep -qs '^func Fuzz' $files; then
		candidates+=("$pkg")
	fi
done < <(go list -f '{{$d := .Dir}}{{.ImportPath}}{{range .TestGoFiles}} {{$d}}/{{.}}{{end}}{{range .XTestGoFiles}} {{$d}}/{{.}}{{end}}' "${packages[@]}")

log=$(mktemp)
trap 'rm -f "$log"' EXIT
targets=0
for pkg in "${candidates[@]}"; do
	names=$(go test -list 'Fuzz.*' "$pkg" | grep '^Fuzz' || true)
	for name in $names; do
		targets=$((targets + 1))
		printf 'fuzz %-50s %-24s %s ... ' "$pkg" "$name" "$duration"
		if ! go test -run "^$name\$" -fuzz "^$name\$" "${flags[@]}" "$pkg" >"$log" 2>&1; then
			echo FAIL
			cat "$log"
			echo "tests/fuzz.sh: $pkg $name failed (a failing input is under its testdata/fuzz/$name/)" >&2
			exit 1
		fi
		# the last progress line: "fuzz: elapsed: 10s, execs: 123 (12/sec), new interesting: 4 (total: 9)"
		summary=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 || true)
		echo "ok (${summary:-no progress reported})"
	done
done
if [[ $targets -eq 0 ]]; then
	echo "tests/fuzz.sh: no fuzz targets in ${packages[*]}" >&2
	exit 1
fi
echo "tests/fuzz.sh: $targets fuzz targets ran for $duration each"
