#!/usr/bin/env bash
# Multi-host DP training test with Linux network namespaces.
#
# One namespace per host (the aggregator and 4 parties, each with its own address 10.78.0.x on
# a veth pair into a private bridge namespace); the real `sotto` binary runs
# `sotto train aggregator` and `sotto train party` in them with certificates from `sotto certs`
# and the digits data split across the parties (standardized 80/20 split written as CSV by a
# small Python step). Party 3 is killed with SIGKILL during training; the test checks that the
# aggregator runs every round, reports party 3 as dropped, and that the final epsilon is the
# accountant's for all rounds (`sotto account dp-sgd` with the same q, sigma, steps, delta).
#
# Needs root, iproute2 (`ip`) and python3; prints "netns train test: SKIPPED (...)" otherwise.
#
#   scripts/netns-train.sh                 # builds target/debug/sotto
#   SOTTO_BIN=path/to/sotto scripts/netns-train.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    echo "netns train test: SKIPPED (need root, ip and python3)"
    exit 0
fi

TAG="tr$$"
AGG="${TAG}agg"
PARTIES=(1 2 3 4)
KILLED=3
ROUNDS=60
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sotto-netns-train.XXXXXX")

NAME="netns train test"
# shellcheck source=scripts/netns-lib.sh
source scripts/netns-lib.sh
netns_bridge
netns_bin

# One namespace per host, each with a veth pair into the bridge.
host "$AGG" 10.78.0.1
for i in "${PARTIES[@]}"; do host "${TAG}p$i" "10.78.0.$((10 + i))"; done

timeout 60 "$BIN" certs --out "$WORK/pki" --parties ${#PARTIES[@]} --name 10.78.0.1 >/dev/null

# The digits data: seeded 80/20 split, standardized with training statistics, IID parts.
read -r RECORDS MAX_PARTY < <(netns_digits_split "$WORK" ${#PARTIES[@]})

SESSION=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
cat >"$WORK/deploy.toml" <<TOML
aggregator = "10.78.0.1:4433"
certs = "$WORK/pki"
session = "$SESSION"
records = $RECORDS
max_party_records = $MAX_PARTY
features = 64
classes = 10
join_secs = 60

[training]
parties = ${#PARTIES[@]}
rounds = $ROUNDS
sampling_rate = 0.2
noise_multiplier = 2.0
target_epsilon = 100.0
round_deadline_secs = 4.0
TOML

ip netns exec "$AGG" "$BIN" train aggregator --config "$WORK/deploy.toml" --test "$WORK/test.csv" \
    --out "$WORK/summary.json" >"$WORK/aggregator.out" 2>"$WORK/aggregator.err" &
AGG_PID=$!
PIDS+=("$AGG_PID")
declare -A PARTY_PID
for i in "${PARTIES[@]}"; do
    ip netns exec "${TAG}p$i" "$BIN" train party --config "$WORK/deploy.toml" --id "$i" \
        --data "$WORK/party-$i.csv" >"$WORK/party-$i.out" 2>"$WORK/party-$i.err" &
    PARTY_PID[$i]=$!
    PIDS+=("$!")
done

# Kill party 3 once the aggregator has finished round 5.
for _ in $(seq 1 600); do
    if grep -qE "^round +5 " "$WORK/aggregator.err" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -qE "^round +5 " "$WORK/aggregator.err"; then
    echo "netns train test: FAILED (training never reached round 5)" >&2
    cat "$WORK"/*.err >&2
    exit 1
fi
kill -9 "${PARTY_PID[$KILLED]}"
wait "${PARTY_PID[$KILLED]}" 2>/dev/null || true
echo "netns train test: killed party $KILLED during training"

for _ in $(seq 1 1200); do
    kill -0 "$AGG_PID" 2>/dev/null || break
    sleep 0.1
done
status=0
wait "$AGG_PID" || status=$?
cat "$WORK/aggregator.out"
if [ "$status" != 0 ]; then
    echo "netns train test: FAILED (aggregator exit status $status)" >&2
    cat "$WORK/aggregator.err" >&2
    exit 1
fi
EXPECTED=$("$BIN" --json account dp-sgd --sampling-rate 0.2 --noise-multiplier 2.0 --steps "$ROUNDS" --delta 1e-5 \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["epsilon"])')
python3 - "$WORK/summary.json" "$ROUNDS" "$KILLED" "$EXPECTED" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rounds, killed, expected = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
assert s["rounds"] == rounds, s["rounds"]
assert s["dropped"] == [killed], s["dropped"]
assert s["epsilon"] == expected, (s["epsilon"], expected)
assert killed not in s["metrics"][-1]["survivors"]
assert s["accuracy"] > 0.8, s["accuracy"]
print(f"epsilon {s['epsilon']} = sotto account dp-sgd; final accuracy {s['accuracy']:.4f}")
PY
echo "netns train test: PASSED ($ROUNDS rounds over 5 namespaces, party $KILLED killed and dropped)"
