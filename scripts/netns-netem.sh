#!/usr/bin/env bash
# Faulty-network test: a secure sum and a DP training run over Linux network namespaces whose
# links drop 5% of the packets and delay them by 50 ms with 10 ms of jitter (`tc netem` on
# every host's interface, both directions of each link therefore see loss and delay).
#
# Checks: the secure sum of the raise example is exact (12686, no party dropped), and the
# training run completes every round with the epsilon `sotto account dp-sgd` gives for the same
# q, sigma, steps and delta (no party dropped).
#
# Needs root, iproute2 (`ip`, `tc`), the netem qdisc (kernel module sch_netem) and python3;
# prints "netns netem test: SKIPPED (...)" and exits 0 when one is missing. Every wait is
# bounded; namespaces and processes are removed on exit (trap).
#
#   scripts/netns-netem.sh                 # builds target/debug/sotto (cargo build --bin sotto)
#   SOTTO_BIN=path/to/sotto scripts/netns-netem.sh
#   LOSS=10% DELAY=100ms JITTER=20ms ROUNDS=20 scripts/netns-netem.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="netns netem test"
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 \
    || ! command -v python3 >/dev/null 2>&1; then
    echo "$NAME: SKIPPED (need root, ip, tc and python3)"
    exit 0
fi

LOSS="${LOSS:-5%}"
DELAY="${DELAY:-50ms}"
JITTER="${JITTER:-10ms}"
ROUNDS="${ROUNDS:-20}"
TAG="ne$$"
AGG="${TAG}agg"
PARTIES=(1 2 3 4)
VALUES=(0 3800 2514 2982 3390)   # indexed by party id
EXPECTED=12686
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sotto-netns-netem.XXXXXX")

# shellcheck source=scripts/netns-lib.sh
source scripts/netns-lib.sh
netns_bridge

host "$AGG" 10.79.0.1
for i in "${PARTIES[@]}"; do host "${TAG}p$i" "10.79.0.$((10 + i))"; done

# The faulty links: netem on every host's interface (egress), so each packet crosses two
# lossy, delayed hops (host -> bridge -> host): about 2 x LOSS loss and 2 x DELAY latency.
for ns in "$AGG" "${PARTIES[@]/#/${TAG}p}"; do
    if ! ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$DELAY" "$JITTER" distribution normal loss "$LOSS" 2>"$WORK/tc.err"; then
        echo "$NAME: SKIPPED (the netem qdisc is not available here: $(head -c 200 "$WORK/tc.err"))"
        exit 0
    fi
done
echo "$NAME: netem on every host: delay $DELAY +- $JITTER (normal), loss $LOSS"
netns_bin
if command -v ping >/dev/null 2>&1; then
    ip netns exec "${TAG}p1" ping -c 5 -i 0.2 -W 5 10.79.0.1 | tail -2 || true
fi

timeout 60 "$BIN" certs --out "$WORK/pki" --parties ${#PARTIES[@]} --name 10.79.0.1 >/dev/null


# --- 1. Secure sum -------------------------------------------------------------------------
netns_sum_configs 10.79.0.1 60 20
started=$(date +%s.%N)
ip netns exec "$AGG" "$BIN" -v aggregator --config "$WORK/aggregator.toml" \
    >"$WORK/aggregator.out" 2>"$WORK/aggregator.err" &
AGG_PID=$!
PIDS+=("$AGG_PID")
declare -A PARTY_PID
for i in "${PARTIES[@]}"; do
    ip netns exec "${TAG}p$i" "$BIN" party --config "$WORK/party-$i.toml" --value "${VALUES[$i]}" \
        >"$WORK/party-$i.out" 2>"$WORK/party-$i.err" &
    PARTY_PID[$i]=$!
    PIDS+=("$!")
done
status=0
wait_for "$AGG_PID" 180 || status=$?
if [ "$status" != 0 ] || ! grep -qx "sum \[$EXPECTED.0\]" "$WORK/aggregator.out" \
    || ! grep -qx "dropped \[\]" "$WORK/aggregator.out"; then
    echo "$NAME: FAILED (secure sum: exit status $status, expected sum [$EXPECTED.0] and no drops)" >&2
    cat "$WORK/aggregator.out" "$WORK/aggregator.err" >&2
    exit 1
fi
for i in "${PARTIES[@]}"; do
    status=0
    wait_for "${PARTY_PID[$i]}" 60 || status=$?
    if [ "$status" != 0 ] || ! grep -q "\[$EXPECTED.0\]" "$WORK/party-$i.out"; then
        echo "$NAME: FAILED (party $i: exit status $status)" >&2
        cat "$WORK/party-$i.err" >&2
        exit 1
    fi
done
took=$(python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started")
echo "$NAME: secure sum exact ($EXPECTED, no party dropped) in ${took} s"

# --- 2. Training ---------------------------------------------------------------------------
read -r RECORDS MAX_PARTY < <(netns_digits_split "$WORK" ${#PARTIES[@]})
SESSION=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
cat >"$WORK/deploy.toml" <<TOML
aggregator = "10.79.0.1:4433"
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
round_deadline_secs = 20.0
TOML
started=$(date +%s.%N)
ip netns exec "$AGG" "$BIN" train aggregator --config "$WORK/deploy.toml" --test "$WORK/test.csv" \
    --out "$WORK/summary.json" >"$WORK/train-aggregator.out" 2>"$WORK/train-aggregator.err" &
AGG_PID=$!
PIDS+=("$AGG_PID")
for i in "${PARTIES[@]}"; do
    ip netns exec "${TAG}p$i" "$BIN" train party --config "$WORK/deploy.toml" --id "$i" \
        --data "$WORK/party-$i.csv" >"$WORK/train-party-$i.out" 2>"$WORK/train-party-$i.err" &
    PIDS+=("$!")
done
status=0
wait_for "$AGG_PID" 900 || status=$?
if [ "$status" != 0 ]; then
    echo "$NAME: FAILED (training aggregator exit status $status)" >&2
    cat "$WORK/train-aggregator.err" >&2
    exit 1
fi
took=$(python3 -c "import time,sys; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started")
EXPECTED_EPS=$("$BIN" --json account dp-sgd --sampling-rate 0.2 --noise-multiplier 2.0 --steps "$ROUNDS" --delta 1e-5 \
    | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["epsilon"])')
python3 - "$WORK/summary.json" "$ROUNDS" "$EXPECTED_EPS" "$took" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rounds, expected, took = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
assert s["rounds"] == rounds, s["rounds"]
assert s["dropped"] == [], s["dropped"]
assert s["epsilon"] == expected, (s["epsilon"], expected)
secs = sorted(m["seconds"] for m in s["metrics"])
print(f"training: {rounds} rounds in {took} s (median round {secs[len(secs) // 2]:.2f} s), "
      f"no party dropped, epsilon {s['epsilon']} = sotto account dp-sgd, accuracy {s['accuracy']:.4f}")
PY
echo "$NAME: PASSED (loss $LOSS, delay $DELAY +- $JITTER on every host: exact sum, same epsilon)"
