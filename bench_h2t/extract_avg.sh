#!/bin/bash
cd /work/wt-h2t
export PYTHONPATH=$PWD
echo "== avg all $(date -u +%T)"
/usr/bin/time -v nice -n 10 python3 -m featx extract --data elpv --layers all --pool avg --split 0.6,0.15,0.25 \
   --cache-dir /tmp/h2t-avg --quiet 2>&1 | grep -E "error|Elapsed|Maximum resident|layer"
echo "== done $(date -u +%T)"
