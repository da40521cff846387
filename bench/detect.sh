#!/usr/bin/env bash
# Times the traffic detectors on N generated connection records (default
# 10 million) in one run, two ways:
#   1. end to end: `tcpsentry analyze` over a Zeek conn.log that
#      bench/conngen writes (parsing included), with GNU time's peak RSS;
#   2. in process: BenchmarkTrafficDetectors and ...Parallel
#      (internal/detect), the detectors alone on the same kind of records,
#      on one goroutine and split over every core, with peak RSS.
# Prints records per second and peak RSS for each, and checks that the 20
# planted beacons and the planted 200 MB upload were found.
#
#   bench/detect.sh                 # N=10000000
#   N=1000000 bench/detect.sh       # quicker
#
# The conn.log (~1.3 GB at 10M) is kept in bench/out/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000000}
out=bench/out
mkdir -p "$out"
command -v /usr/bin/time >/dev/null || { echo "detect.sh: needs GNU time (apt-get install time)" >&2; exit 2; }
bin=$out/tcpsentry
go build -o "$bin" ./cmd/tcpsentry
log=$out/conn-$N.log
if [[ ! -s $log ]]; then
	echo "writing $N records to $log"
	go run ./bench/conngen -n "$N" -o "$log.tmp"
	mv "$log.tmp" "$log"
fi

echo "== analyze (parse + detect), $N records"
/usr/bin/time -f '%e %M' -o "$out/time.txt" "$bin" analyze --no-store --json "$log" >"$out/alerts.jsonl" 2>"$out/analyze.err" || [[ $? == 1 ]]
# GNU time writes "Command exited with non-zero status 1" first when
# analyze found something (exit 1): the figures are on the last line.
read -r secs rss_kb < <(tail -n 1 "$out/time.txt")
beacons=$(grep -c '"detector":"beacon".*"dst":"198.51.100.' "$out/alerts.jsonl" || true)
upload=$(grep -c '"detector":"exfiltration".*"dst":"198.51.100.250"' "$out/alerts.jsonl" || true)
awk -v n="$N" -v s="$secs" -v m="$rss_kb" -v b="$beacons" -v u="$upload" 'BEGIN {
	printf "  %.1f s, %.0f records/s, peak RSS %.0f MiB; planted beacons found %d/20, upload found %d/1\n", s, n / s, m / 1024, b, u }'

echo "== BenchmarkTrafficDetectors (detectors only; one goroutine, then on every core as analyze runs them), $N records"
go test ./internal/detect -run '^$' -bench 'BenchmarkTrafficDetectors(Parallel)?$' -benchtime "${N}x" -count 1 | grep -E '^Benchmark'
