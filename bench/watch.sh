#!/usr/bin/env bash
# Live capture under load: `tcpsentry watch --capture` on the victim's end of
# a veth pair between two fresh namespaces, first idle, then under an hping3
# SYN flood (--flood, random sources, bounded by `timeout`). Prints packets
# captured and kernel drops (from /metrics), packets per second, and the
# daemon's CPU and RSS, idle and under load.
#
#   sudo bench/watch.sh [SECONDS]      default 5 s of flood
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
[[ $(id -u) == 0 ]] || { echo "bench/watch.sh: needs root (namespaces, capture)" >&2; exit 2; }
for t in ip hping3 curl; do command -v "$t" >/dev/null || { echo "bench/watch.sh: $t is not installed" >&2; exit 2; }; done

out=bench/out
mkdir -p "$out"
go build -o "$out/tcpsentry" ./cmd/tcpsentry
tag=tsw$$
a=${tag}a v=${tag}v
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$a" 2>/dev/null || true
	ip netns del "$v" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$a"; ip netns add "$v"
ip link add "${tag}x" netns "$a" type veth peer name "${tag}y" netns "$v"
ip -n "$a" addr add 10.249.9.1/24 dev "${tag}x"; ip -n "$v" addr add 10.249.9.2/24 dev "${tag}y"
ip -n "$a" link set "${tag}x" up; ip -n "$v" link set "${tag}y" up
ip -n "$v" route add default via 10.249.9.1

dir=$(mktemp -d)
port=$((20000 + $$ % 20000))
cat >"$dir/watch.yaml" <<YAML
sinks:
  stdout: {enabled: false}
  jsonl: {enabled: true, path: $dir/alerts.jsonl}
watch:
  interval: 1h
  metrics_listen: 127.0.0.1:$port
  store: $dir/store.db
YAML
"$out/tcpsentry" watch --config "$dir/watch.yaml" --capture "${tag}y" --netns "$v" 2>"$dir/watch.log" &
wpid=$!
pids+=("$wpid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$wpid/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$wpid/status"; }
metric() { curl -sf "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1==m {print $2}'; }

c0=$(cpu); sleep 5; c1=$(cpu)
echo "idle: CPU $(awk -v d=$((c1 - c0)) -v t="$ticks" 'BEGIN{printf "%.1f", 100*d/t/5}')% of one core, RSS $(( $(rss) / 1024 )) MiB"

p0=$(metric tcpsentry_packets_total); d0=$(metric tcpsentry_kernel_drops_total)
c0=$(cpu); t0=$(date +%s.%N)
ip netns exec "$a" timeout "$secs" hping3 -q -S --rand-source -p 80 --flood 10.249.9.2 >/dev/null 2>&1 || true
sleep 1 # the ring's last blocks and one progress tick
t1=$(date +%s.%N); c1=$(cpu)
p1=$(metric tcpsentry_packets_total); d1=$(metric tcpsentry_kernel_drops_total)
pk=$(awk -v a="$p0" -v b="$p1" 'BEGIN{printf "%d", b-a}')
dr=$(awk -v a="${d0:-0}" -v b="${d1:-0}" 'BEGIN{printf "%d", b-a}')
echo "flood ($secs s of hping3 --flood): $pk packets captured, $(awk -v p="$pk" -v s="$secs" 'BEGIN{printf "%.0f", p/s}') packets/s, $dr kernel drops"
echo "under load: CPU $(awk -v d=$((c1 - c0)) -v t="$ticks" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" 'BEGIN{printf "%.1f", 100*d/t/s}')% of one core, RSS $(( $(rss) / 1024 )) MiB"
echo "alerts: $(grep -c . "$dir/alerts.jsonl" 2>/dev/null || echo 0) ($(grep -o '"detector":"[a-z-]*"' "$dir/alerts.jsonl" 2>/dev/null | sort | uniq -c | tr '\n' ' '))"
rm -rf "$dir"
