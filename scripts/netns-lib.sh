# Shared setup of the network-namespace tests (sourced by netns-test.sh and netns-train.sh).
#
# The caller sets NAME (the message prefix), TAG (a short unique prefix for namespace and
# interface names) and WORK (a temporary directory) before sourcing. This file then defines
# PIDS and NAMESPACES (killed and deleted on exit), and:
#   netns_bridge   the bridge namespace "${TAG}br" with br0 (or "SKIPPED" and exit 0)
#   netns_bin      BIN: $SOTTO_BIN, or target/debug/sotto built with cargo
#   host NS ADDR   a host namespace with eth0 = ADDR/24 on a veth pair into the bridge

PIDS=()
NAMESPACES=()
BR="${TAG}br"

netns_cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$WORK"
}
trap netns_cleanup EXIT INT TERM

netns_bridge() {
    if ! ip netns add "$BR" 2>/dev/null; then
        echo "$NAME: SKIPPED (cannot create network namespaces here)"
        exit 0
    fi
    NAMESPACES+=("$BR")
    ip -n "$BR" link add br0 type bridge
    ip -n "$BR" link set br0 up
}

netns_bin() {
    BIN="${SOTTO_BIN:-}"
    if [ -z "$BIN" ]; then
        timeout 1800 cargo build --bin sotto
        BIN="$PWD/target/debug/sotto"
    fi
    BIN=$(readlink -f "$BIN")
}

host() { # name address
    local ns=$1 addr=$2
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    ip link add "${ns}e" type veth peer name "${ns}p"
    ip link set "${ns}e" netns "$ns"
    ip link set "${ns}p" netns "$BR"
    ip -n "$ns" link set "${ns}e" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$BR" link set "${ns}p" master br0
    ip -n "$BR" link set "${ns}p" up
}

# The digits data for a training deployment: seeded 80/20 split, standardized with training
# statistics, IID parts. Writes WORK/test.csv and WORK/party-<i>.csv for N parties and prints
# "<training records> <largest part>".
netns_digits_split() { # work n
    python3 - "$1" "$2" <<'PY'
import csv, random, sys, statistics
work, n = sys.argv[1], int(sys.argv[2])
rows = [list(map(float, r)) for r in csv.reader(open("training/data/digits.csv")) if r]
random.Random(7).shuffle(rows)
cut = len(rows) * 4 // 5
train, test = rows[:cut], rows[cut:]
cols = len(rows[0]) - 1
mu = [statistics.fmean(r[j] for r in train) for j in range(cols)]
sd = [statistics.pstdev([r[j] for r in train]) or 1.0 for j in range(cols)]
def write(path, part):
    with open(path, "w") as f:
        for r in part:
            f.write(",".join(repr((r[j] - mu[j]) / sd[j]) for j in range(cols)) + f",{int(r[-1])}\n")
write(f"{work}/test.csv", test)
parts = [train[i * len(train) // n:(i + 1) * len(train) // n] for i in range(n)]
for i, p in enumerate(parts):
    write(f"{work}/party-{i + 1}.csv", p)
print(len(train), max(len(p) for p in parts))
PY
}

# Waits until `pid` exits (at most `seconds`) and returns its exit status; 124 (with a line
# naming the pid on stderr) if it is still running then.
wait_for() { # pid seconds
    local pid=$1
    for _ in $(seq 1 $(($2 * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            return $?
        fi
        sleep 0.1
    done
    echo "$NAME: FAILED (pid $pid still running after $2 s)" >&2
    return 124
}

# Writes WORK/aggregator.toml and WORK/party-<i>.toml (for each of PARTIES) of one secure sum
# through the aggregator at `address` (port 4433): a fresh session, threshold 3, bound 1e5.
netns_sum_configs() { # address join-secs round-secs
    local address=$1 session table i
    session=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    table=$(printf '[session]\nid = "%s"\nparties = %s\nthreshold = 3\nbound = 100000.0\njoin_timeout_secs = %s\nround_timeout_secs = %s\n' \
        "$session" "${#PARTIES[@]}" "$2" "$3")
    printf 'listen = "%s:4433"\ncerts = "%s"\n%s\n' "$address" "$WORK/pki" "$table" >"$WORK/aggregator.toml"
    for i in "${PARTIES[@]}"; do
        printf 'id = %s\naggregator = "%s:4433"\ncerts = "%s"\n%s\n' "$i" "$address" "$WORK/pki" "$table" \
            >"$WORK/party-$i.toml"
    done
}
