#!/bin/bash
# peak RSS of `extract --layers all --pool grid:8192` at N and 4N images (fresh cache each), Lite0 @224
cd /work/wt-h2t
export PYTHONPATH=$PWD
while pgrep -f extract_avg.sh >/dev/null; do sleep 10; done
for n in 64 256; do
  rm -rf /tmp/h2t-rss-$n
  echo "== N=$n $(date -u +%T)"
  /usr/bin/time -v nice -n 10 python3 -m featx extract --data elpv --limit $n --layers all --pool grid:8192 \
     --cache-dir /tmp/h2t-rss-$n --quiet 2>&1 | grep -E "error|Elapsed|Maximum resident|layer|features"
  du -sm /tmp/h2t-rss-$n
  rm -rf /tmp/h2t-rss-$n
done
echo "== done $(date -u +%T)"
