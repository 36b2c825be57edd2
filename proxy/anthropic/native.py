"""The request a natively speaking Messages upstream gets: the client's, plus molt's blocks.

The request hooks work on the internal chat body. What of their work reaches
a native upstream is molt's own system blocks (skills, the context block):
each system message of the hooked chat body that `modeling.blocks` marks as
molt's becomes a text block at the end of the Messages `system`, which is
where the chat form has it (right after the agent's own system messages).
The rest of the client's body is sent as it came. Changes a hook makes to
the tools (TAFC, tool-description overlays) have no Messages counterpart here
and are not carried: on a native route the client's tools go as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeling.blocks import is_molt_block

JSON = dict[str, Any]


def molt_blocks(chat_body: Mapping[str, Any]) -> list[str]:
    """The texts of molt's own system messages in a (hooked) chat body."""
    messages = chat_body.get("messages")
    return [m["content"] for m in (messages if isinstance(messages, list) else ())
            if isinstance(m, Mapping) and m.get("role") == "system" and is_molt_block(m.get("content"))]


def with_molt_blocks(native: Mapping[str, Any], chat_body: Mapping[str, Any]) -> JSON:
    """The client's Messages body with molt's blocks appended to its `system`."""
    out = dict(native)
    blocks = [{"type": "text", "text": t} for t in molt_blocks(chat_body)]
    if not blocks:
        return out
    system = native.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system}, *blocks]
    elif isinstance(system, list):
        out["system"] = [*system, *blocks]
    else:
        out["system"] = blocks
    return out
