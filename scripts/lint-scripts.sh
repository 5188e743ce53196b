#!/usr/bin/env bash
# Static checks of the project's shell scripts, run by .ci/run before anything else.
#
# 1. `bash -n`: every script parses.
# 2. No `producer | grep -q` in a script with `set -o pipefail`: grep -q exits at the
#    first match, the producer's next write dies of SIGPIPE (status 141), and pipefail
#    turns the match into a failure. It is a race: `ptxas --version | grep -q ...` failed
#    35 times in 200 here and once failed CI (a cached, good ptxas judged "not 12.9").
#    Write `producer | grep PATTERN >/dev/null` (grep then reads to the end).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
for f in scripts/*.sh .ci/run; do
    bash -n "$f" || { echo "lint-scripts: $f does not parse" >&2; status=1; }
    # This file names the pattern it looks for.
    [[ "$f" == scripts/lint-scripts.sh ]] && continue
    if grep -q 'pipefail' "$f"; then
        while IFS= read -r hit; do
            echo "lint-scripts: $f:$hit: '| grep -q' races with pipefail (SIGPIPE); use 'grep ... >/dev/null'" >&2
            status=1
        done < <(grep -nE '\|[[:space:]]*grep[[:space:]]+(-[a-zA-Z]*q|--quiet)' "$f" | grep -vE '^[0-9]+:[[:space:]]*#' | cut -d: -f1)
    fi
done
exit "$status"
