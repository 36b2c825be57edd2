#!/usr/bin/env bash
# The local-serving tests (tests/proxy/test_local_*.py) on a GPU machine, then a direct cuda check.
# usage (device `run`, carry [".whl"]): bash dev/gpu/serving_tests.sh
# .whl/: the wheels the device image lacks (fastapi, starlette, uvicorn, pydantic*, openai,
# sqlalchemy, aiosqlite, greenlet, pytest 9 + pytest-asyncio, ...), same versions as .venv.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/dev/gpu PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
unset MOLT_TEST_PG_URL
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; export OUT
nvidia-smi -L
python3 - <<'PY'
import sys, torch, transformers, peft
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("transformers", transformers.__version__, "peft", peft.__version__)
PY
set -o pipefail
timeout 420 python3 -m pytest -q -rfEs -p no:cacheprovider -p serving_probe \
  tests/proxy/test_local_serving.py tests/proxy/test_local_hot_swap.py tests/proxy/test_local_policy.py \
  2>&1 | tee "$OUT/pytest.log"
echo "pytest rc=$?"
echo "--- models loaded during the tests ($OUT/loads.log):"; cat "$OUT/loads.log" 2>/dev/null
python3 - <<'PY' 2>&1 | tee "$OUT/cuda_check.log"
import torch
from modeling.loading import load_base
b = load_base("bench/policy/checkpoint", device="cuda")
p = next(b.model.parameters())
print("loaded:", b.device, b.dtype, "params on", p.device, p.dtype)
msgs = [{"role": "user", "content": "Tell Ann Berg: running late"}]
ids = b.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
ids = {k: v.to(b.device) for k, v in ids.items()}
with torch.no_grad():
    out = b.model.generate(**ids, max_new_tokens=24, do_sample=False)
print("generated:", repr(b.tokenizer.decode(out[0, ids["input_ids"].shape[1]:])), "on", out.device)
print("max cuda mem MiB", torch.cuda.max_memory_allocated() // 2**20)
PY
