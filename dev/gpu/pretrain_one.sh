#!/usr/bin/env bash
# One pretraining run on a GPU machine, its evaluation, and the checkpoint as one tarball.
# usage: dev/gpu/pretrain_one.sh OUT MINUTES "PRETRAIN ARGS"   (dev/LOG.md)
set -u
out=$1; minutes=$2; args=$3
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p "$out"
python -m bench.policy.pretrain --device cuda --workers 14 --threads 1 --minutes "$minutes" $args \
  --out /tmp/ck/R > "$out/R.log" 2>&1
grep -v Writing "$out/R.log" | tail -n 2
python -m bench.policy.evaluate --path /tmp/ck/R --device cuda --batch-size 64 --threads 2 \
  --write-meta 2>&1 | grep -v Loading | tee "$out/R.eval"
tar -C /tmp/ck -cf "$out/R.tar" R
