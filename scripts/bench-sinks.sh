#!/usr/bin/env bash
# Sustained pipeline throughput (benches/sinks.rs) of this checkout against an older commit, in
# one invocation: the bench is built in both trees and the two are run alternately, ROUNDS times
# each, so both see the same machine load. Prints each run and the medians and their ratio.
#
#   scripts/bench-sinks.sh [BASELINE_REV] [ROUNDS] [-- bench args]
#
# BASELINE_REV defaults to e424b40, the last commit before the sinks restructure (issue 13).
# The baseline tree is exported with `git archive` into target/bench-baseline/<rev> (its own
# target dir beside it; the first build there is cold, ~4 min), and gets this checkout's
# benches/sinks.rs and benches/support/. Needs the chDB venv of the tests (scripts/test.sh
# installs it into target/chdb-venv).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
base_rev=${1:-e424b40}
rounds=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
[[ "${1:-}" == "--" ]] && shift
bench_args=("$@")

venv="$root/target/chdb-venv/bin/python"
[[ -x "$venv" ]] || { echo "bench-sinks: $venv is missing; run scripts/test.sh once to install the chDB venv" >&2; exit 2; }

base_sha=$(git rev-parse --short "$base_rev")
base_dir="$root/target/bench-baseline/$base_sha"
if [[ ! -f "$base_dir/Cargo.toml" ]]; then
    mkdir -p "$base_dir"
    git archive "$base_sha" | tar -x -C "$base_dir"
fi
mkdir -p "$base_dir/benches/support"
cp benches/sinks.rs "$base_dir/benches/"
cp benches/support/*.rs "$base_dir/benches/support/"
if ! grep -q '^name = "sinks"' "$base_dir/Cargo.toml"; then
    printf '\n[[bench]]\nname = "sinks"\nharness = false\n' >> "$base_dir/Cargo.toml"
fi

# The bench executable of a tree (cargo prints it as a compiler-artifact).
build() {
    local dir=$1 target=$2
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo bench --bench sinks --no-run --message-format=json 2>/dev/null) |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sinks" and m.get("executable"):
        print(m["executable"])'
}
echo "bench-sinks: building the baseline ($base_sha) and this checkout …" >&2
base_exe=$(build "$base_dir" "$root/target/bench-baseline/target")
this_exe=$(build "$root" "$root/target")
[[ -n "$base_exe" && -n "$this_exe" ]] || { echo "bench-sinks: a build failed (run cargo bench --bench sinks --no-run in each tree)" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq 1 "$rounds"); do
    for side in baseline this; do
        if [[ $side == baseline ]]; then exe=$base_exe; dir=$base_dir; else exe=$this_exe; dir=$root; fi
        line=$(cd "$dir" && SERPHONA_OBS_TEST_CHDB_PYTHON="$venv" "$exe" --bench "${bench_args[@]}" | tail -1)
        echo "round $round $side $line" >&2
        echo "$side $line" >> "$results"
    done
done

python3 - "$results" "$base_sha" "$(git rev-parse --short HEAD)" <<'EOF'
import json, statistics, sys
runs = {"baseline": [], "this": []}
for line in open(sys.argv[1]):
    side, data = line.split(" ", 1)
    runs[side].append(json.loads(data))
def med(side, f):
    return statistics.median(f(r) for r in runs[side])
rows = [
    ("events accepted per second", lambda r: r["events_per_second"]),
    ("events delivered to every sink per second", lambda r: min(r["events"], *r["delivered"].values()) / r["seconds"]),
    ("allocated bytes per event", lambda r: r["allocated_bytes_per_event"]),
    ("event log bytes per event", lambda r: r["written_bytes_per_event"]["event_log"]),
    ("Loki bytes per event", lambda r: r["written_bytes_per_event"]["loki"]),
    ("ClickHouse bytes per event", lambda r: r["written_bytes_per_event"]["clickhouse"]),
    ("Loki lines delivered, share", lambda r: r["delivered"]["loki"] / r["events"]),
]
print(f"| median of {len(runs['this'])} runs, {runs['this'][0]['events']:,} events each | baseline {sys.argv[2]} | this {sys.argv[3]} | ratio |")
print("|---|---|---|---|")
for name, f in rows:
    b, t = med("baseline", f), med("this", f)
    fmt = "{:,.3f}" if b < 10 else "{:,.1f}"
    ratio = f"{t / b:.2f}x" if b else "–"
    print(f"| {name} | {fmt.format(b)} | {fmt.format(t)} | {ratio} |")
dropped = sum(r["dropped"] for side in runs.values() for r in side)
print(f"\ndropped in all runs: {dropped}")
EOF
