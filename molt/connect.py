"""What an agent needs to go through molt: variables, code lines, config lines.

`molt connect AGENT` prints one `Recipe`. Its `env` is what a shell exports; `code`
shows the same settings as the agent's own code or config, for clients that read no
variables (litellm, LangChain with an explicit client). The recipes are data: the
command line mints the key and prints them, a test drives each SDK with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AGENTS = ("openai", "claude-code", "anthropic", "litellm", "openai-agents", "langchain")


@dataclass(frozen=True, slots=True)
class Target:
    """Where molt is and what to send it: its root URL (no /v1), a key, a model alias."""

    url: str
    key: str
    model: str

    @property
    def v1(self) -> str:
        return self.url.rstrip("/") + "/v1"


@dataclass(frozen=True, slots=True)
class Recipe:
    agent: str
    title: str
    env: dict[str, str]
    code: str
    code_where: str  # what `code` is: "Python", a config file's path
    notes: tuple[str, ...] = field(default=())


def recipe(agent: str, t: Target) -> Recipe:
    """The recipe for `agent` (one of AGENTS); ValueError for any other name."""
    try:
        build = _BUILDERS[agent]
    except KeyError:
        raise ValueError(f"unknown agent {agent!r}: one of {', '.join(AGENTS)}") from None
    return build(t)


def _openai(t: Target) -> Recipe:
    return Recipe(
        "openai", "Any OpenAI-compatible client (the openai SDKs, curl, most agent frameworks)",
        {"OPENAI_BASE_URL": t.v1, "OPENAI_API_KEY": t.key},
        "from openai import OpenAI\n"
        "client = OpenAI()  # reads OPENAI_BASE_URL and OPENAI_API_KEY\n"
        f"client.chat.completions.create(model={t.model!r}, messages=[...])\n"
        f"client.responses.create(model={t.model!r}, input=...)",
        "Python",
        ("Chat Completions (/v1/chat/completions) and Responses (/v1/responses) both work.",),
    )


def _claude_code(t: Target) -> Recipe:
    # Claude Code appends /v1/messages itself, and sends ANTHROPIC_AUTH_TOKEN as a Bearer
    # token; an ANTHROPIC_API_KEY left set would win over it, so it is emptied.
    return Recipe(
        "claude-code", "Claude Code",
        {"ANTHROPIC_BASE_URL": t.url, "ANTHROPIC_AUTH_TOKEN": t.key, "ANTHROPIC_API_KEY": "",
         "ANTHROPIC_MODEL": t.model, "ANTHROPIC_DEFAULT_OPUS_MODEL": t.model,
         "ANTHROPIC_DEFAULT_SONNET_MODEL": t.model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": t.model},
        '{\n  "env": {\n'
        f'    "ANTHROPIC_BASE_URL": "{t.url}",\n'
        f'    "ANTHROPIC_AUTH_TOKEN": "{t.key}",\n'
        f'    "ANTHROPIC_MODEL": "{t.model}"\n'
        "  }\n}",
        "~/.claude/settings.json (instead of the variables)",
        ("ANTHROPIC_API_KEY is emptied: a key left there would win over ANTHROPIC_AUTH_TOKEN.",
         "Never put the key in a project's .claude/settings.json: that file is shared.",
         ("Every tier (opus, sonnet, haiku) goes to one molt model alias; set them apart to "
          "route tiers to different aliases.")),
    )


def _anthropic(t: Target) -> Recipe:
    return Recipe(
        "anthropic", "The anthropic SDK (Messages API)",
        {"ANTHROPIC_BASE_URL": t.url, "ANTHROPIC_API_KEY": t.key},
        "import anthropic\n"
        "client = anthropic.Anthropic()  # reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY\n"
        f"client.messages.create(model={t.model!r}, max_tokens=1024, messages=[...])",
        "Python",
    )


def _litellm(t: Target) -> Recipe:
    return Recipe(
        "litellm", "litellm (the SDK, or a LiteLLM proxy in front of molt)",
        {"MOLT_API_KEY": t.key},
        "import os, litellm\n"
        f"litellm.completion(model='openai/{t.model}', api_base={t.v1!r},\n"
        "                   api_key=os.environ['MOLT_API_KEY'], messages=[...])\n"
        "\n"
        "# or, in a LiteLLM proxy's config.yaml:\n"
        "# model_list:\n"
        f"#   - model_name: {t.model}\n"
        "#     litellm_params:\n"
        f"#       model: openai/{t.model}\n"
        f"#       api_base: {t.v1}\n"
        "#       api_key: os.environ/MOLT_API_KEY",
        "Python",
        ("The `openai/` prefix tells litellm that molt speaks the OpenAI protocol.",),
    )


def _openai_agents(t: Target) -> Recipe:
    # The Agents SDK uploads traces to OpenAI with OPENAI_API_KEY by default: that would
    # send molt's key to a third party, so tracing is turned off (molt records the turns).
    return Recipe(
        "openai-agents", "The OpenAI Agents SDK",
        {"OPENAI_BASE_URL": t.v1, "OPENAI_API_KEY": t.key, "OPENAI_DEFAULT_MODEL": t.model,
         "OPENAI_AGENTS_DISABLE_TRACING": "1"},
        "from agents import Agent, Runner\n"
        "agent = Agent(name='assistant', instructions='...')  # model: OPENAI_DEFAULT_MODEL\n"
        "result = Runner.run_sync(agent, 'Hello')  # the Responses API, through molt\n"
        "\n"
        "# or on Chat Completions:\n"
        "from agents import OpenAIChatCompletionsModel\n"
        "from openai import AsyncOpenAI\n"
        f"model = OpenAIChatCompletionsModel(model={t.model!r}, openai_client=AsyncOpenAI())\n"
        "agent = Agent(name='assistant', instructions='...', model=model)",
        "Python",
        (("OPENAI_AGENTS_DISABLE_TRACING=1 keeps the SDK from sending its traces (and this "
          "key) to OpenAI; molt records every turn itself."),),
    )


def _langchain(t: Target) -> Recipe:
    return Recipe(
        "langchain", "LangChain (langchain-openai)",
        {"OPENAI_BASE_URL": t.v1, "OPENAI_API_KEY": t.key},
        "from langchain_openai import ChatOpenAI\n"
        f"llm = ChatOpenAI(model={t.model!r})  # reads OPENAI_BASE_URL and OPENAI_API_KEY\n"
        "llm.invoke('Hello')\n"
        "# or explicitly:\n"
        f"# ChatOpenAI(model={t.model!r}, base_url={t.v1!r}, api_key=...)",
        "Python",
    )


_BUILDERS = {
    "openai": _openai,
    "claude-code": _claude_code,
    "anthropic": _anthropic,
    "litellm": _litellm,
    "openai-agents": _openai_agents,
    "langchain": _langchain,
}
