"""The tiny policy: a small Llama trained from scratch on toolworld conversations.

``CHECKPOINT_DIR`` holds the shipped checkpoint (``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained(CHECKPOINT_DIR)``); ``DEFAULT_SYSTEM_PROMPT`` is
the agent system prompt it saw most in pretraining. Train with
``python -m bench.policy.pretrain``, measure with ``python -m bench.policy.evaluate``.
"""

from bench.policy.chat import parse_reply
from bench.policy.data import DEFAULT_SYSTEM_PROMPT
from bench.policy.model import CHECKPOINT_DIR

__all__ = ["CHECKPOINT_DIR", "DEFAULT_SYSTEM_PROMPT", "parse_reply"]
