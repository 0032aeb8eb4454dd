#!/bin/bash
# full ELPV, Lite0 @224, 60/15/25 split: every layer avg, then grid:1024; peak RSS via /usr/bin/time
cd /work/wt-h2t
export PYTHONPATH=$PWD
for pool in avg grid:1024; do
  echo "== $pool $(date -u +%T)"
  /usr/bin/time -v nice -n 10 python3 -m featx extract --data elpv --layers all --pool $pool --split 0.6,0.15,0.25 \
     --cache-dir /work/elpv-cache --quiet 2>&1 | grep -v "^\s*\(Average\|Exit\|Minor\|Major\|Voluntary\|Involuntary\|Swaps\|File system\|Socket\|Signals\|Page size\|Percent\|System time\|User time\)"
done
echo "== done $(date -u +%T)"
