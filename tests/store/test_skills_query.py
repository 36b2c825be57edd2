"""The retrieval query is the task, not the chat-channel noise around it."""

from __future__ import annotations

from store.skills.query import QueryCache, clean_task_text, query_key, task_query

TOOLS = [{"type": "function", "function": {"name": "search_flights", "parameters": {}}},
         {"type": "function", "function": {"name": "book_hotel", "parameters": {}}}]


def test_channel_headers_timestamps_and_ids_are_removed() -> None:
    a = clean_task_text("[Slack #general 10:32] <@U024BE7LH> book a flight to Oslo (id: 7f3a9c2e11d4)")
    b = clean_task_text("[Telegram @bob 2024-05-01 09:15] book a flight to Oslo "
                        "msg_id=01HZX3Q9J8K7M6N5P4R3S2T1V0 https://t.me/x/123")
    assert a == b == "book a flight to Oslo"
    assert clean_task_text("meet at 2024-05-01T09:00:00Z, ref 3fa85f64-5717-4562-b3fc-2c963f66afa6") == \
        "meet at , ref"


def test_query_is_latest_user_task_plus_tools_and_stable_across_a_loop() -> None:
    first = {"messages": [{"role": "system", "content": "You are an agent."},
                          {"role": "user", "content": "[Slack #ops 10:32] find a flight to Oslo"}],
             "tools": TOOLS}
    loop = {"messages": [*first["messages"],
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "c1", "type": "function",
                              "function": {"name": "search_flights", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "3 flights found"}],
            "tools": TOOLS}
    assert task_query(first) == task_query(loop) == "find a flight to Oslo\ntools: search_flights, book_hotel"
    cached = QueryCache(capacity=1)
    assert cached(first) == cached(loop) == task_query(first)
    assert cached({"messages": [{"role": "user", "content": "other task"}]}) == "other task"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "summarize this"},
                                                       {"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert task_query(parts) == "summarize this"
    assert task_query({"messages": [{"role": "system", "content": "only a system prompt"}]}) == ""


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    # json.loads('"\\ud800"') gives such a string; it cannot be encoded, embedded or stored.
    body = {"messages": [{"role": "user", "content": "book a flight \ud83d to Oslo"}]}
    query = task_query(body)
    assert query == "book a flight \ufffd to Oslo"
    assert QueryCache()(body) == query
    assert len(query_key("tail \udc00")) == 32
