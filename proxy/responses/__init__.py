"""OpenAI Responses (`POST /v1/responses`) over molt's one internal form, the chat body.

- `input_items`: Responses input items -> chat messages;
- `request`: a Responses request, checked and translated to a chat body;
- `output`: a chat completion -> a Response object (and the item builders);
- `stream`: chat SSE chunks -> the Responses streaming events;
- `followup`: `previous_response_id`, the conversation a recorded turn continues.

Everything here is pure except `followup.resolve`, which reads the store.
"""
