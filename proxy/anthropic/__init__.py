"""Anthropic's Messages protocol, translated to and from molt's internal form.

molt's internal form is the OpenAI chat completions body and response (what
the hooks, the recorder and the evolver read). `request` turns a Messages
request into a chat body, `response` a chat completion into a Message,
`stream` an OpenAI chunk stream into Messages' event stream, `errors` renders
molt's errors in Anthropic's shape, and `tokens` estimates what
`/v1/messages/count_tokens` answers. All pure: no I/O, no settings, and no
import of the `anthropic` SDK (a test-only dependency).
"""
