#!/usr/bin/env bash
# Two pretraining runs side by side on one GPU, then their evaluation; each
# checkpoint comes back as one tarball (the device returns at most 8 files).
# usage: dev/gpu/pretrain_pair.sh OUT MINUTES "ARGS A" "ARGS B"   (dev/LOG.md)
set -u
out=$1; minutes=$2; a=$3; b=$4
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python -c "import torch, transformers, tokenizers; print(torch.__version__, transformers.__version__, tokenizers.__version__, torch.cuda.get_device_name())"
mkdir -p "$out"
python -m bench.policy.pretrain --device cuda --workers 7 --threads 1 --minutes "$minutes" $a --out /tmp/ck/A > "$out/A.log" 2>&1 &
python -m bench.policy.pretrain --device cuda --workers 7 --threads 1 --minutes "$minutes" $b --out /tmp/ck/B > "$out/B.log" 2>&1 &
wait
"$(dirname "$0")/evaluate_pack.sh" "$out"
