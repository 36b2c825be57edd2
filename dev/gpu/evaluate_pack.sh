#!/usr/bin/env bash
# After a pretraining pair: evaluate /tmp/ck/A and /tmp/ck/B side by side (figures into
# their meta.json) and pack each as OUT/<run>.tar (the device returns at most 8 files).
# usage: dev/gpu/evaluate_pack.sh OUT   (called by pretrain_pair.sh and pretrain_legs.sh)
set -u
out=$1
for r in A B; do
  grep -v Writing "$out/$r.log" | tail -n 3
  python -m bench.policy.evaluate --path /tmp/ck/$r --device cuda --batch-size 64 --threads 2 --write-meta > "$out/$r.eval" 2>&1 &
done
wait
for r in A B; do
  grep -v Loading "$out/$r.eval"
  tar -C /tmp/ck -cf "$out/$r.tar" "$r"
done
