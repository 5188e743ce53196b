#!/usr/bin/env bash
# Runs the workspace's test binaries in parallel lanes: `scripts/test-lanes.sh [cargo test
# target selection...]`, e.g. `--lib --bins --test federation --test crds`.
#
# Why: most e2e tests wait on real control planes (heartbeats, leases, a restarted API
# server) and keep about a third of the 2 CI cores busy, but `cargo test` runs its test
# binaries one after the other and holds the build directory's lock while they run, so two
# `cargo test` runs cannot overlap either. This builds once through cargo, then runs the
# binaries itself, $GPUFED_TEST_JOBS at a time (default 2), longest first by the times the
# last run recorded in $GPUFED_CACHE/test-times.tsv. Each binary runs in its package's
# directory, as cargo runs it; its output is printed whole when it ends, so lanes never
# interleave. Every binary runs even after one fails; the exit status is 1 when any failed,
# and the failures are listed at the end.
#
# GPUFED_TEST_ONLY / GPUFED_TEST_SKIP: space-separated integration-test names (tests/NAME.rs)
# to run alone / not to run. Filtering here rather than narrowing cargo's selection keeps the
# build the same for every call: cargo resolves features per selection, and the six
# validator tests selected alone once built curve25519-dalek and every workspace crate above
# it a second time (52 s of a cold CI run, more each time our code changed).
set -uo pipefail
cd "$(dirname "$0")/.."

jobs="${GPUFED_TEST_JOBS:-2}"
case "$jobs" in '' | *[!0-9]* | 0) echo "GPUFED_TEST_JOBS must be a positive integer, got '$jobs'" >&2; exit 2 ;; esac
limit="${GPUFED_TEST_TIMEOUT:-1200}"
case "$limit" in '' | *[!0-9]* | 0) echo "GPUFED_TEST_TIMEOUT must be a positive number of seconds, got '$limit'" >&2; exit 2 ;; esac
cache="${GPUFED_CACHE:-$HOME/.cache/gpufed}"
times="$cache/test-times.tsv"
root="$PWD"
work="$(mktemp -d)"
mkdir -p "$cache" && touch "$times" "$work/results.tsv" || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

# One line per test binary: package dir, display name, executable (cargo's JSON messages).
if ! "${CARGO:-cargo}" test --workspace "$@" --no-run --message-format=json-render-diagnostics \
    >"$work/build.json"; then
    echo "test build failed" >&2
    exit 1
fi
jq -r --arg root "$root/" 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
    | [(if .target.kind == ["test"] then .target.name else "" end),
       (.manifest_path | sub("/Cargo.toml$"; "")), (.target.src_path | ltrimstr($root)), .executable] | @tsv' \
    "$work/build.json" | sort -u |
    awk -F'\t' -v only="${GPUFED_TEST_ONLY:-}" -v skip="${GPUFED_TEST_SKIP:-}" '
        BEGIN {
            OFS = "\t"
            n = split(only, o, /[ \t\n]+/); for (i = 1; i <= n; i++) if (o[i] != "") { want[o[i]] = "GPUFED_TEST_ONLY"; nwant++ }
            n = split(skip, k, /[ \t\n]+/); for (i = 1; i <= n; i++) if (k[i] != "") { drop[k[i]] = 1; named[k[i]] = "GPUFED_TEST_SKIP" }
            for (t in want) named[t] = want[t]
        }
        { if ($1 in named) seen[$1] = 1 }
        nwant > 0 && !($1 in want) { next }
        $1 in drop { next }
        { print $2, $3, $4 }
        END {  # a misspelt name is an error, not a silently smaller run
            for (t in named) if (!(t in seen)) { print named[t] ": no integration test named " t > "/dev/stderr"; bad = 1 }
            exit bad
        }' >"$work/binaries.tsv" || exit 2
[ -s "$work/binaries.tsv" ] || { echo "no test binary matched: $* ${GPUFED_TEST_ONLY:+(only: $GPUFED_TEST_ONLY)}" >&2; exit 1; }

# Longest first (binaries without a recorded time count as the longest), so that the lanes
# end close together.
awk -F'\t' 'FILENAME == ARGV[1] { t[$1] = $2; next } { print (($2 in t) ? t[$2] : 1e9) "\t" $0 }' \
    "$times" "$work/binaries.tsv" | sort -t$'\t' -k1,1nr | cut -f2- >"$work/queue.tsv"
total=$(wc -l <"$work/queue.tsv")
echo "running $total test binaries in $jobs lanes"

run_one() {
    local dir=$1 name=$2 exe=$3 log="$work/$4.log" start=$SECONDS rc
    echo "     Started $name"
    # A binary that hangs (a control plane that never answers) is killed after
    # $GPUFED_TEST_TIMEOUT seconds (default 1200, five times the longest today) and its
    # output printed, rather than holding CI until its own limit kills everything unread.
    (cd "$dir" && CARGO_MANIFEST_DIR="$dir" exec timeout -k 30 "$limit" "$exe") >"$log" 2>&1
    rc=$?
    [ "$rc" -eq 124 ] && echo "KILLED: still running after ${limit}s (GPUFED_TEST_TIMEOUT)" >>"$log"
    {
        flock 9
        printf '     Running %s (%s) — %ss, exit %s\n' "$name" "$exe" "$((SECONDS - start))" "$rc"
        cat "$log"
        printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$rc" >>"$work/results.tsv"
    } 9>"$work/lock"
    return "$rc"
}

n=0
while IFS=$'\t' read -r dir name exe; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    n=$((n + 1))
    run_one "$dir" "$name" "$exe" "$n" &
done <"$work/queue.tsv"
wait

# Remember the times for the next run's order (failed runs too: they ran that long).
awk -F'\t' 'FILENAME == ARGV[1] { t[$1] = $2; next } { t[$1] = $2 } END { for (k in t) print k "\t" t[k] }' \
    "$times" "$work/results.tsv" | sort >"$times.new" && mv "$times.new" "$times"

failed=$(awk -F'\t' '$3 != 0 { print "  " $1 " (exit " $3 ")" }' "$work/results.tsv")
ran=$(wc -l <"$work/results.tsv")
if [ -n "$failed" ] || [ "$ran" -ne "$total" ]; then
    printf '\n%s of %s test binaries failed or did not finish:\n%s\n' \
        "$((total - $(awk -F'\t' '$3 == 0' "$work/results.tsv" | wc -l)))" "$total" "$failed"
    exit 1
fi
echo "all $total test binaries passed"
