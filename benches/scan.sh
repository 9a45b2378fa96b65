#!/usr/bin/env bash
# The library scan's two budgets, measured in one run on this machine:
#
#  1. Cold scan read speed on one large safetensors-shaped file (SIZE bytes, default 1 GiB) next
#     to `cat FILE > /dev/null` (the raw sequential read), `sha256sum FILE` (read + the same hash)
#     and, when installed, `openssl dgst -sha256` (the same hash with SHA-NI where the CPU has it),
#     ROUNDS times each, median. The scan computes two hashes (SHA-256 and AutoV3). Two passes: from the disk (page cache dropped before each
#     command; needs root, skipped otherwise) and from the page cache (each command's file warmed
#     by a `cat` first), where the hash is the limit. Aim: civitai-dl >= 0.9x sha256sum.
#  2. Rescan of FILES small unchanged files (default 30,000 of 4 KiB): the cold scan that fills
#     the index, then the warm rescan that must reuse every hash. Aim: warm < 10 s. Peak RSS of
#     both, from /usr/bin/time when present.
#
#   bash benches/scan.sh
#   SIZE=2147483648 ROUNDS=5 FILES=30000 bash benches/scan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1073741824}
ROUNDS=${ROUNDS:-3}
FILES=${FILES:-30000}
SMALL=${SMALL:-4096}

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/civitai-dl
WORK=$(mktemp -d "${TMPDIR:-/tmp}/civitai-dl-scan-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mibps() { awk -v s="$SIZE" -v a="$1" -v b="$2" 'BEGIN {printf "%.1f\n", s/(b-a)/1048576}'; }
can_drop() { [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# A safetensors-shaped file: 8-byte little-endian header length, a small JSON header, random
# tensor bytes (so the scan computes AutoV3 as well as SHA-256, as for a real model).
BIG="$WORK/big/model.safetensors"
mkdir -p "$WORK/big"
HEADER='{"w":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}'
{ printf "\\x$(printf %02x ${#HEADER})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$HEADER";
  head -c "$((SIZE - 8 - ${#HEADER}))" /dev/urandom; } >"$BIG"

timed() { # label, then the command; appends MiB/s to $WORK/<label>
  local label=$1; shift
  local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
  mibps "$t0" "$t1" >>"$WORK/$label"
}
ours() { rm -f "$WORK/big.sqlite"*; "$BIN" -q --no-progress scan --index "$WORK/big.sqlite" "$WORK/big" 2>/dev/null; }
cat_file() { cat "$BIG"; }
sha_file() { sha256sum "$BIG"; }
ossl_file() { openssl dgst -sha256 "$BIG"; }
tools="cat_file sha_file ours"
if command -v openssl >/dev/null; then tools="cat_file sha_file ossl_file ours"; fi

passes="cache"
if can_drop; then passes="disk cache"; else echo "not root: the from-disk pass is skipped" >&2; fi
for pass in $passes; do
  for round in $(seq 1 "$ROUNDS"); do
    for tool in $tools; do
      if [ "$pass" = disk ]; then drop_caches; else cat "$BIG" >/dev/null; fi
      timed "$pass-$tool" "$tool"
    done
    echo "$pass round $round: cat $(tail -1 "$WORK/$pass-cat_file"), sha256sum $(tail -1 "$WORK/$pass-sha_file"), civitai-dl scan $(tail -1 "$WORK/$pass-ours") MiB/s" >&2
  done
done

# Many small files.
mkdir -p "$WORK/lib"
python3 - "$WORK/lib" "$FILES" "$SMALL" <<'PY'
import os, sys
root, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    folder = os.path.join(root, f"d{i // 1000:03d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"m{i:06d}.safetensors"), "wb") as f:
        f.write(os.urandom(size))
PY
rescan() { # label; prints seconds and peak RSS (KiB) into $WORK/<label>
  local t0 t1 rss=0
  t0=$(now)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" -q --no-progress scan --index "$WORK/lib.sqlite" "$WORK/lib" >/dev/null 2>&1
    rss=$(cat "$WORK/rss")
  else
    "$BIN" -q --no-progress scan --index "$WORK/lib.sqlite" "$WORK/lib" >/dev/null 2>&1
  fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v r="$rss" 'BEGIN {printf "%.2f %d\n", b-a, r/1024}' >"$WORK/$1"
}
rescan cold-small
rescan warm-small

echo
echo "civitai-dl scan, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); one file of $SIZE bytes, $ROUNDS rounds, median MiB/s:"
printf '%-31s %8s %10s %8s %16s %8s %13s\n' "pass" "cat" "sha256sum" "openssl" "civitai-dl scan" "vs cat" "vs sha256sum"
for pass in $passes; do
  c=$(median <"$WORK/$pass-cat_file"); s=$(median <"$WORK/$pass-sha_file"); o=$(median <"$WORK/$pass-ours")
  x=-; [ -s "$WORK/$pass-ossl_file" ] && x=$(median <"$WORK/$pass-ossl_file")
  label="from the page cache"; [ "$pass" = disk ] && label="from the disk (caches dropped)"
  printf '%-31s %8s %10s %8s %16s %7.2fx %12.2fx\n' "$label" "$c" "$s" "$x" "$o" \
    "$(awk -v o="$o" -v c="$c" 'BEGIN {print o/c}')" "$(awk -v o="$o" -v s="$s" 'BEGIN {print o/s}')"
done
read -r cold_s cold_rss <"$WORK/cold-small"
read -r warm_s warm_rss <"$WORK/warm-small"
echo "$FILES files of $SMALL bytes: cold scan ${cold_s} s (peak RSS ${cold_rss} MiB), warm rescan ${warm_s} s (peak RSS ${warm_rss} MiB; aim < 10 s)"
