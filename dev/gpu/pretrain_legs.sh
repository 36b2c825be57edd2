#!/usr/bin/env bash
# Two pretraining runs side by side on one GPU, each in two legs: STEPS1 steps at
# the default lr, then STEPS2 more from that checkpoint at lr 1.5e-3 with no
# warm-up (the recipe of the shipped checkpoint, whose second leg ran on CPU);
# then each is evaluated and comes back as one tarball.
# usage: dev/gpu/pretrain_legs.sh OUT STEPS1 STEPS2 "ARGS A" "ARGS B"   (dev/LOG.md)
set -u
out=$1; s1=$2; s2=$3; a=$4; b=$5
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__, torch.cuda.get_device_name())"
mkdir -p "$out"
leg() {  # name, args
  python -m bench.policy.pretrain --device cuda --workers 7 --threads 1 --minutes 7 --max-steps "$s1" $2 \
    --out /tmp/ck1/$1 > "$out/$1.log" 2>&1 &&
  python -m bench.policy.pretrain --device cuda --workers 7 --threads 1 --minutes 3 --max-steps "$s2" $2 \
    --init /tmp/ck1/$1 --lr 1.5e-3 --warmup-frac 0 --out /tmp/ck/$1 >> "$out/$1.log" 2>&1
}
leg A "$a" &
leg B "$b" &
wait
"$(dirname "$0")/evaluate_pack.sh" "$out"
