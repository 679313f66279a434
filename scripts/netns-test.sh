#!/usr/bin/env bash
# Multi-host secure-sum test with Linux network namespaces.
#
# Creates one namespace per host (the aggregator and 4 parties, each with its own address
# 10.77.0.x on a veth pair into a private bridge namespace), runs the real `sotto` binary in
# each, kills party 3 with SIGKILL in the middle of the round (after it has shared its keys,
# before it sends its masked input), and checks that the survivors' sum is exact and that
# party 3 is reported dropped.
#
# Needs root and iproute2 (`ip`); prints "netns test: SKIPPED (...)" and exits 0 otherwise.
# Every wait is bounded; namespaces and processes are removed on exit (trap).
#
#   scripts/netns-test.sh                 # builds target/debug/sotto (cargo build --bin sotto)
#   SOTTO_BIN=path/to/sotto scripts/netns-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1; then
    echo "netns test: SKIPPED (need root and ip)"
    exit 0
fi

TAG="ss$$"
AGG="${TAG}agg"
PARTIES=(1 2 3 4)
VALUES=(0 3800 2514 2982 3390)   # indexed by party id
KILLED=3
EXPECTED=$((3800 + 2514 + 3390))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sotto-netns.XXXXXX")

NAME="netns test"
# shellcheck source=scripts/netns-lib.sh
source scripts/netns-lib.sh
netns_bridge
netns_bin

# One namespace per host, each with a veth pair into the bridge.
host "$AGG" 10.77.0.1
for i in "${PARTIES[@]}"; do
    host "${TAG}p$i" "10.77.0.$((10 + i))"
done
if command -v ping >/dev/null 2>&1; then timeout 10 ip netns exec "${TAG}p1" ping -c 1 -W 5 10.77.0.1 >/dev/null; fi

names=(--name 10.77.0.1)
for i in "${PARTIES[@]}"; do names+=(--name "10.77.0.$((10 + i))"); done
timeout 60 "$BIN" certs --out "$WORK/pki" --parties ${#PARTIES[@]} "${names[@]}" >/dev/null

netns_sum_configs 10.77.0.1 30 4

# `ip netns exec` execs the command, so each PID below is the sotto process itself.
ip netns exec "$AGG" "$BIN" -v aggregator --config "$WORK/aggregator.toml" \
    >"$WORK/aggregator.out" 2>"$WORK/aggregator.err" &
AGG_PID=$!
PIDS+=("$AGG_PID")
declare -A PARTY_PID
for i in "${PARTIES[@]}"; do
    extra=()
    if [ "$i" = "$KILLED" ]; then extra=(--debug-stall-before-input 120); fi
    ip netns exec "${TAG}p$i" "$BIN" -v party --config "$WORK/party-$i.toml" --value "${VALUES[$i]}" "${extra[@]}" \
        >"$WORK/party-$i.out" 2>"$WORK/party-$i.err" &
    PARTY_PID[$i]=$!
    PIDS+=("$!")
done

# Wait (bounded) until party 3 has exchanged keys and stalls, then kill it mid-round.
for _ in $(seq 1 600); do
    if grep -q "stalling before the masked input" "$WORK/party-$KILLED.err" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -q "stalling before the masked input" "$WORK/party-$KILLED.err"; then
    echo "netns test: FAILED (party $KILLED never reached the masked-input round)" >&2
    cat "$WORK"/*.err >&2
    exit 1
fi
kill -9 "${PARTY_PID[$KILLED]}"
wait "${PARTY_PID[$KILLED]}" 2>/dev/null || true
echo "netns test: killed party $KILLED (pid ${PARTY_PID[$KILLED]}) after its key exchange"

status=0
wait_for "$AGG_PID" 90 || status=$?
if [ "$status" != 0 ]; then
    echo "netns test: FAILED (aggregator exit status $status)" >&2
    cat "$WORK/aggregator.err" >&2
    exit 1
fi
cat "$WORK/aggregator.out"
if ! grep -qx "sum \[$EXPECTED.0\]" "$WORK/aggregator.out" || ! grep -qx "dropped \[$KILLED\]" "$WORK/aggregator.out"; then
    echo "netns test: FAILED (expected sum [$EXPECTED.0] and dropped [$KILLED])" >&2
    cat "$WORK/aggregator.err" >&2
    exit 1
fi
for i in "${PARTIES[@]}"; do
    [ "$i" = "$KILLED" ] && continue
    status=0
    wait_for "${PARTY_PID[$i]}" 30 || status=$?
    if [ "$status" != 0 ] || ! grep -q "\[$EXPECTED.0\]" "$WORK/party-$i.out"; then
        echo "netns test: FAILED (party $i: exit status $status)" >&2
        cat "$WORK/party-$i.err" >&2
        exit 1
    fi
done
echo "netns test: PASSED (survivors' sum $EXPECTED exact over 5 namespaces, party $KILLED killed mid-round)"
