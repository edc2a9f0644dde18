#!/usr/bin/env bash
# Compares the core's counting path of the working tree with an earlier commit, the way
# BENCHMARKS.md does: this VM's speed drifts by tens of percent from hour to hour, so wall-clock
# runs alternate between the two builds, and instruction counts (callgrind, which no drift
# disturbs) decide what a wall-clock spread cannot.
#
#   scripts/bench_compare.sh BASE [PAIRS] [FILTER]   criterion, PAIRS alternating runs (default 4)
#                                                    of FILTER (default the whole path)
#   scripts/bench_compare.sh --callgrind BASE        instructions and cache misses per record of
#                                                    the `steady` bench's first 300,000 records
#
# BASE is built in a git worktree under .state/bench-compare (removed afterwards) with its own
# target directory (kept there as a build cache, ~0.5 GB), so the working tree's build is left
# alone.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=criterion
if [[ "${1:-}" == "--callgrind" ]]; then
    mode=callgrind
    shift
fi
base="${1:?usage: scripts/bench_compare.sh [--callgrind] BASE [PAIRS] [FILTER]}"
pairs="${2:-4}"
filter="${3:-core/decode_dedup_price_aggregate}"
base_rev="$(git rev-parse --verify "$base^{commit}")"
bench=$([[ $mode == callgrind ]] && echo steady || echo counting)

state=.state/bench-compare
worktree="$state/worktree"
mkdir -p "$state"
git worktree remove --force "$worktree" 2>/dev/null || true
git worktree add --detach --force "$worktree" "$base_rev" >/dev/null
trap 'git worktree remove --force "$worktree" 2>/dev/null || true' EXIT

# The path of a bench binary, built in `dir` with target directory `target`.
build() {
    local dir="$1" target="$2"
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo bench -p costline-core --bench "$bench" --no-run 2>&1) |
        grep -o "[^ (]*/release/deps/$bench-[0-9a-f]*" | tail -1
}
echo "building $bench at ${base_rev:0:9} and in the working tree…"
old="$(build "$worktree" "$PWD/$state/target")"
new="$(build . "$PWD/target")"
[[ -x "$old" && -x "$new" ]] || { echo "bench_compare: a build failed" >&2; exit 1; }
# Both builds give the binary the same name; keep a copy of the base's.
cp "$old" "$state/$bench-base" && old="$state/$bench-base"

if [[ $mode == callgrind ]]; then
    command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
    for side in base:"$old" new:"$new"; do
        label="${side%%:*}" binary="${side#*:}"
        out="$state/callgrind.$label.out"
        valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$out" \
            --toggle-collect='costline_core::batch::PartitionCounter::count*' "$binary" 3 2>&1 |
            awk -v label="$label" '/(I|D) +refs|LL misses/ {
                gsub(",", "", $4); printf "%-4s %-10s %15s  (%.0f per record)\n", label, $2 " " $3, $4, $4 / 300000 }'
    done
    exit 0
fi

# Criterion's median of one run, in ms.
median_ms() {
    "$1" --bench "$filter" 2>&1 |
        awk '/time:/ { gsub(/\[/, ""); scale["s"] = 1000; scale["ms"] = 1; scale["µs"] = 0.001; print $4 * scale[$5]; exit }'
}
base_ms=() new_ms=()
for ((i = 1; i <= pairs; i++)); do
    b="$(median_ms "$old")" n="$(median_ms "$new")"
    base_ms+=("$b") new_ms+=("$n")
    printf 'pair %d: base %8.1f ms   new %8.1f ms\n' "$i" "$b" "$n"
done
middle() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
printf 'median of %d: base %.1f ms, new %.1f ms (%s)\n' "$pairs" "$(middle "${base_ms[@]}")" "$(middle "${new_ms[@]}")" "$filter"
