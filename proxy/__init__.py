"""The OpenAI-compatible proxy: routes, upstreams, recorder, injection, local serving."""
