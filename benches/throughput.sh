#!/usr/bin/env bash
# Throughput and memory of one large download, civitai-dl next to curl, on loopback.
#
# Serves a SIZE-byte file (default 1 GiB) from the embedded fake Civitai with no bandwidth cap,
# downloads it with `curl -o` (no verification) and with `civitai-dl download` (streams to .part,
# SHA-256 verified, fsync, rename), ROUNDS times each alternating, and prints median throughput,
# the ratio, and civitai-dl's peak RSS (from /usr/bin/time, else /proc polling).
#
#   bash benches/throughput.sh            # 1 GiB, 3 rounds
#   SIZE=268435456 ROUNDS=5 bash benches/throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
ROUNDS=${ROUNDS:-3}
command -v curl >/dev/null || { echo "curl is needed for the comparison" >&2; exit 1; }

cargo build --release --quiet
BIN=target/release/civitai-dl
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$BIN" fake-server --uniform 1 --file-size "$SIZE" >"$WORK/server.txt" 2>&1 &
SERVER=$!
for _ in $(seq 1 600); do grep -q '^fake Civitai API' "$WORK/server.txt" 2>/dev/null && break; sleep 0.1; done
API=$(awk '/^fake Civitai API/ {print $NF}' "$WORK/server.txt")
KEY=$(awk '/^valid API key/ {print $NF}' "$WORK/server.txt")
[ -n "$API" ] || { cat "$WORK/server.txt"; echo "fake server did not start" >&2; exit 1; }

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

peak_rss_kb() { # run a command, print its peak RSS in KiB on fd 3
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -o "$WORK/rss" "$@"; cat "$WORK/rss" >&3
  else
    "$@" & local pid=$! peak=0
    while kill -0 $pid 2>/dev/null; do
      local r; r=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      [ "${r:-0}" -gt "$peak" ] && peak=$r; sleep 0.05
    done
    wait $pid; echo "$peak" >&3
  fi
}

: >"$WORK/curl"; : >"$WORK/curlsync"; : >"$WORK/ours"; : >"$WORK/rssall"
for round in $(seq 1 "$ROUNDS"); do
  URL=$(curl -s -o /dev/null -w '%{redirect_url}' -H "Authorization: Bearer $KEY" \
        "$API/api/download/models/2000?fileId=3000")
  t0=$(now); curl -s -o "$WORK/curl.bin" "$URL"; t1=$(now); sync "$WORK/curl.bin"; t2=$(now)
  echo "$SIZE $t0 $t1" | awk '{printf "%.1f\n", $1/($3-$2)/1048576}' >>"$WORK/curl"
  echo "$SIZE $t0 $t2" | awk '{printf "%.1f\n", $1/($3-$2)/1048576}' >>"$WORK/curlsync"
  rm -f "$WORK/curl.bin"

  rm -rf "$WORK/out"
  t0=$(now)
  peak_rss_kb "$BIN" --base-url "$API" --api-key "$KEY" --no-progress -q download 1000 \
      --no-metadata -o "$WORK/out" 3>>"$WORK/rssall"
  t1=$(now)
  echo "$SIZE $t0 $t1" | awk '{printf "%.1f\n", $1/($3-$2)/1048576}' >>"$WORK/ours"
  echo "round $round: curl $(tail -1 "$WORK/curl") MiB/s, civitai-dl $(tail -1 "$WORK/ours") MiB/s, peak RSS $(( $(tail -1 "$WORK/rssall") / 1024 )) MiB"
done

CURL=$(median <"$WORK/curl"); CURLSYNC=$(median <"$WORK/curlsync"); OURS=$(median <"$WORK/ours")
RSS=$(sort -n "$WORK/rssall" | tail -1)
echo
echo "file size:            $((SIZE / 1048576)) MiB, $ROUNDS rounds, loopback, no bandwidth cap"
echo "curl -o (median):     $CURL MiB/s (no verification, no fsync)"
echo "curl -o; sync FILE:   $CURLSYNC MiB/s (no verification, data on disk like civitai-dl's)"
echo "civitai-dl (median):  $OURS MiB/s (SHA-256 verified, fsync, rename; includes process start and API calls)"
awk -v o="$OURS" -v c="$CURL" -v cs="$CURLSYNC" \
  'BEGIN {printf "ratio civitai-dl/curl: %.2f (target >= 0.90); against curl + sync: %.2f\n", o/c, o/cs}'
echo "civitai-dl peak RSS:  $((RSS / 1024)) MiB (target < 40 MiB)"
