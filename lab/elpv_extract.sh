#!/bin/bash
# shared ELPV caches (i-tailx): split 60/15/25 seed 0, all 2,624 cells, EfficientNet-Lite0 @224
cd /work/wt-tailx
export PYTHONPATH=/work/wt-tailx
set -x
date -u
nice -n 5 featx extract --data elpv --backbone efficientnet_lite0 --layers block5c_add,block6a_project_bn,block6b_add,block6c_add,block6d_add,block7a_project_bn --pool none --split 0.6,0.15,0.25 --seed 0 --quiet --cache-dir /work/elpv-cache
date -u
nice -n 5 featx extract --data elpv --backbone efficientnet_lite0 --layers blocks,final --split 0.6,0.15,0.25 --seed 0 --quiet --cache-dir /work/elpv-cache
date -u
nice -n 5 featx extract --data elpv --backbone efficientnet_lite0 --layers blocks,final --split 0.6,0.15,0.25 --seed 0 --views d4 --quiet --cache-dir /work/elpv-cache
date -u
