#!/usr/bin/env bash
# Memory under a random-source SYN flood: writes captures of 250k, 500k, 1M
# and 2M spoofed SYNs (bench/floodgen, 50k packets/s of capture time) and
# prints `tcpsentry analyze`'s wall time and peak RSS for each. Flat RSS
# from 500k on means the flow table (SYN timeout) and every detector's
# state are bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
go build -o "$out/tcpsentry" ./cmd/tcpsentry
for n in 250000 500000 1000000 2000000; do
	f=$out/flood-$n.pcap
	[ -s "$f" ] || go run ./bench/floodgen -o "$f" -packets "$n"
	/usr/bin/time -f "$n SYNs: %e s, peak RSS %M KiB" "$out/tcpsentry" analyze "$f" 2>&1 >/dev/null | tail -1 || true # exit 1: the flood was found
done
