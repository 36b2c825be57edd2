"""The one safety check: what every evolver proposal and context line passes before serving.

Whatever wrote it (the rule-based miner, an evolver model), a skill edit or a
context line reaches serving only through `check_ops` or `check_line`.
Serving shows that text to the agent's model as molt's own instructions, so
it is the one place where traffic could turn into commands.

Two kinds of text meet here:

- Instructions: molt's own templates and an evolver model's words. They may
  tell the agent how to call its tools; the general rules below apply.
- Data: anything copied from traffic (tool results, user messages,
  feedback, arguments the agent sent). It is untrusted. It may appear only
  quoted, between « and » (see `quote`), as in "the tool said: «...»"; the
  miner quotes everything it copies. Each quoted span must also pass the
  data rules, because an instruction inside quotes is still read by a model.

General rules (every served field: name, description, body, category, tools;
every context line). Refused is text that
- tells the model to ignore, disregard or forget instructions;
- moves private data out (send/post/forward... a key, password, secret,
  token, credentials, the conversation or its history), or mentions
  exfiltration;
- contacts an outside address: a URL, ``www.``, an e-mail address, curl/wget;
- hides things from the user, or reveals the system prompt;
- carries role tags or chat-template markers (``<system>``, ``</molt-skills>``,
  ``<|im_start|>``, ``[INST]``, a line opening with ``system:``);
- carries markup that renders or restructures the prompt: HTML tags, Markdown
  links, images, code fences, headings (a heading would open another skill in
  the skills block);
- holds invisible or control characters (zero-width, bidi overrides);
- has unbalanced or nested quote marks « »;
- is over its length cap.

Data rules (each «...» span, on top of the general rules). Refused is data that
- is longer than `MAX_QUOTED` characters;
- holds an imperative addressed to the model: a sentence opening with a verb
  about the conversation rather than a tool's arguments (ignore, send, reveal,
  tell, respond, execute, visit...), or words such as "you are now",
  "from now on", "new instructions", "as an AI";
- names secrets or the conversation: api key, password, secret, token,
  credentials, private key, cookie, the conversation, its history, the
  prompt or instructions.

Names and tool lists are slugs and identifiers; a name is also read as data
(its words, without dashes), since the miner derives it from copied text.
The rules are general: they know nothing of any particular tool or benchmark.

A refused edit becomes an `invalid` proposal and a refused context line is
dropped (both with the reason). A reason names the field and the rule, never
the refused text: reasons may reach logs, and the text is traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from evolver.errors import ProposalRejected

OPEN, CLOSE = "«", "»"
MAX_QUOTED = 200
MAX_LINE = 300  # one context line
MAX_FIELD = {"name": 64, "description": 400, "body": 4000, "category": 64}
MAX_TOOLS = 32
_IDENT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

_I = re.IGNORECASE | re.DOTALL
_INVISIBLE = re.compile("[\u0000-\u0008\u000b-\u001f\u007f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u2069\ufeff]")
_SECRET = (r"passwords?|passphrases?|api[ _-]?keys?|secrets?|tokens?|credentials?|private[ _-]?keys?|"
           r"ssh[ _-]?keys?|cookies?|conversations?|(?:chat |message )?history|personal data|private data")
_GENERAL: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(user|previous|prior|above|earlier|"
                r"system|all|any|your)\b.{0,20}\b(instructions?|requests?|prompts?|messages?|rules?|"
                r"guidelines?)", _I), "tells the model to ignore instructions"),
    (re.compile(r"\b(send|post|upload|forward|e-?mail|leak|exfiltrat\w*|transmit|share|copy)\b.{0,60}\b("
                + _SECRET + r")\b", _I), "moves private data out"),
    (re.compile(r"\bexfiltrat", _I), "mentions exfiltration"),
    (re.compile(r"\b[a-z][a-z0-9+.-]{1,15}://|\bwww\.|\bcurl\b|\bwget\b", _I), "contacts an outside address"),
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", _I), "contains an e-mail address"),
    (re.compile(r"\b(do not|don't|never)\b.{0,20}\b(tell|inform|show)\b.{0,20}\buser\b", _I),
     "hides things from the user"),
    (re.compile(r"\b(system prompt|developer message)\b.{0,40}\b(reveal|print|repeat|output)\b|"
                r"\b(reveal|print|repeat|output)\b.{0,40}\b(system prompt|developer message)\b", _I),
     "leaks the prompt"),
    (re.compile(r"<\s*/?\s*(system|assistant|user|developer|tool|human|im_start|im_end|molt-[\w-]*)\b[^>]*>|"
                r"<\|[^|>]{0,40}\|>|\[/?(inst|sys)\]|<<\s*/?\s*sys\s*>>|"
                r"^\s*(system|assistant|developer|human)\s*:", _I | re.MULTILINE),
     "carries a role tag or chat-template marker"),
    (re.compile(r"<\s*[a-z!/][^<>]*>|!\[|\[[^\]\n]*\]\([^)\n]*\)|```|~~~|^\s{0,3}#{1,6}\s", _I | re.MULTILINE),
     "carries markup (HTML, a Markdown link, image, code fence or heading)"),
    (_INVISIBLE, "holds invisible or control characters"),
]
_VERBS = (r"ignore|disregard|forget|override|bypass|pretend|act|roleplay|reveal|print|output|repeat|say|"
          r"tell|respond|reply|answer|send|forward|e-?mail|post|upload|transmit|share|leak|exfiltrate|"
          r"execute|run|download|install|visit|open|browse|click|fetch|obey|follow|comply|disable|enable")
# a verb opening a sentence, followed by what an order to the model names (not "Post code must ...")
_IMPERATIVE = (re.compile(
    r"(?:^|[.!?;:]\s*|\band\s+|\bthen\s+)(?:(?:please|now|also|first|immediately|instead)[,\s]+)*"
    r"(?:" + _VERBS + r")\s+(?:all|any|every|everything|the|your|my|our|this|these|those|that|what|"
    r"previous|prior|above|following|me|us|it|them|to|a|an|as|like)\b", _I),
    "holds an imperative addressed to the model")
_ADDRESS = (re.compile(
    r"\b(you are now|you're now|you will now|from now on|new instructions|your instructions|"
    r"your (?:system )?prompt|as an ai|as a language model|developer mode|jailbreak)\b", _I),
    "speaks to the model")
_SECRETS = (re.compile(r"\b(" + _SECRET + r"|prompts?|instructions?)\b", _I), "names secrets or the conversation")
_DATA = [_IMPERATIVE, _ADDRESS, _SECRETS]
_SECRET_NAME = (re.compile(r"\b(" + _SECRET + r")\b", _I), "names secrets or the conversation")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A piece of text the check refused, and why."""

    text: str
    reason: str


def quote(text: str) -> str:
    """Copied text as a data span: one line, no quote marks or invisible characters of its own.

    Only the structure is neutralised here; what the text says is judged by
    the data rules, so an instruction inside is refused, not hidden. Text
    longer than twice `MAX_QUOTED` is cut there (marked with "..."): still too
    long to pass, but a proposal never carries megabytes of it.
    """
    flat = _INVISIBLE.sub(" ", text).replace(OPEN, '"').replace(CLOSE, '"')
    flat = " ".join(flat.split())
    if len(flat) > 2 * MAX_QUOTED:
        flat = flat[: 2 * MAX_QUOTED] + "..."
    return f"{OPEN}{flat}{CLOSE}"


def _spans(text: str) -> tuple[list[str], str | None]:
    """The quoted spans of `text`, or the reason its quote marks are refused."""
    spans: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == OPEN:
            if depth:
                return spans, "has nested quote marks"
            depth, start = 1, i + 1
        elif ch == CLOSE:
            if not depth:
                return spans, "has unbalanced quote marks"
            depth = 0
            spans.append(text[start:i])
    return spans, "has unbalanced quote marks" if depth else None


def _first(rules: Sequence[tuple[re.Pattern[str], str]], text: str) -> str | None:
    return next((why for pattern, why in rules if pattern.search(text)), None)


def data_reason(text: str) -> str | None:
    """Why copied text may not be served even quoted (None: it may, as data)."""
    if len(text) > MAX_QUOTED:
        return f"is {len(text)} characters long (quoted data holds at most {MAX_QUOTED})"
    if "\n" in text:
        return "spans lines"
    return _first(_DATA, text) or _first(_GENERAL, text)


def text_reason(text: str, *, limit: int | None = None) -> str | None:
    """Why a served text is refused (None: it passes). Quoted spans get the data rules too."""
    if limit is not None and len(text) > limit:
        return f"is {len(text)} characters long, over the limit of {limit}"
    spans, bad = _spans(text)
    if bad:
        return bad
    for span in spans:
        why = data_reason(span)
        if why:  # the reason never repeats the text: it may go to logs, the text is traffic
            return f"quotes data that {why}"
    return _first(_GENERAL, text)


def _field_reason(key: str, value: object) -> str | None:
    if key == "tools":
        tools = list(value) if isinstance(value, (list, tuple)) else []
        if len(tools) > MAX_TOOLS:
            return f"lists {len(tools)} tools, over the limit of {MAX_TOOLS}"
        bad = next((i for i, t in enumerate(tools) if not _IDENT.match(str(t))), None)
        return f"names a tool that is not an identifier (item {bad})" if bad is not None else None
    if key in ("name", "sources"):
        names = list(value) if isinstance(value, (list, tuple)) else [value]
        for name in names:
            words = re.sub(r"[-_]+", " ", str(name))
            why = text_reason(str(name), limit=MAX_FIELD["name"]) or _first(_GENERAL, words) \
                or _first([_SECRET_NAME], words)
            if why:
                return why
        return None
    if isinstance(value, str):
        return text_reason(value, limit=MAX_FIELD.get(key))
    return None


SERVED = ("description", "body", "name", "sources", "category", "tools")


def op_reason(op: BaseModel) -> str | None:
    """Why one edit operation may not reach serving: ``the body quotes data that ...``."""
    data = op.model_dump(exclude_none=True)
    for key in SERVED:
        if key in data and (why := _field_reason(key, data[key])):
            return f"the {key} {why}"
    return None


def check_ops(ops: Iterable[BaseModel]) -> None:
    """The check every proposal passes, whatever its source; ProposalRejected names the edit and why."""
    for op in ops:
        why = op_reason(op)
        if why:
            data = op.model_dump(exclude_none=True)
            raise ProposalRejected(f"unsafe {data.get('op', 'edit')} of {data.get('name')!r}: {why}")


def line_reason(line: str) -> str | None:
    """Why a context line may not be served (None: it may)."""
    return text_reason(line, limit=MAX_LINE)


def safe_lines(text: str) -> tuple[list[str], list[Refusal]]:
    """The lines of a context block that pass the check, and those refused (with the reason)."""
    kept: list[str] = []
    refused: list[Refusal] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        why = line_reason(line)
        if why:
            refused.append(Refusal(line[:MAX_LINE], why))
        else:
            kept.append(line)
    return kept, refused


MAX_PARAM_DESCRIPTION = 600  # a rewritten tool parameter description, whole


def description_reason(description: str, base: str | None) -> str | None:
    """Why a rewritten parameter description may not be laid over a tool (None: it may).

    The agent's own description (`base`) is its text, already served to its
    model; what molt adds to it (all of it, when the rewrite does not keep the
    base as its start) gets the general rules, and the whole stays on one line
    of at most `MAX_PARAM_DESCRIPTION` characters.
    """
    if len(description) > MAX_PARAM_DESCRIPTION:
        return f"is {len(description)} characters long, over the limit of {MAX_PARAM_DESCRIPTION}"
    if not description.strip():
        return "is empty"
    added = description[len(base):] if base and description.startswith(base) else description
    if "\n" in added:
        return "spans lines"
    return text_reason(added)
