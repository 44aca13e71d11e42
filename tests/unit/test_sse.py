"""Server-sent events as we frame them (api/sse.py) read back by the decoder our clients use,
however the bytes arrive."""

from __future__ import annotations

from localserve.api.sse import DONE, SSEDecoder, read_chunk, sse_data, sse_event


def test_events_framed_here_are_read_back_at_any_split() -> None:
    chunk = {"choices": [{"delta": {"content": "é\nx", "reasoning_content": "hm"}}]}
    stream = b": keep-alive\n\n" + sse_data(chunk) + sse_event("ping", {"a": 1}) + DONE
    for size in (1, 2, 3, 7, len(stream)):
        decoder = SSEDecoder()
        events = []
        for start in range(0, len(stream), size):
            events += decoder.feed(stream[start : start + size])
        assert len(events) == 3, size
        first = read_chunk(events[0])
        assert first is not None and (first.text, first.thought) == ("é\nx", "hm")
        assert read_chunk(events[2]) is None  # [DONE]


def test_a_chunk_carries_its_usage_finish_reason_and_error() -> None:
    parts = read_chunk('{"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"x":1}}')
    assert parts is not None and parts.finish_reason == "length" and parts.usage == {"x": 1}
    failed = read_chunk('{"error":{"message":"gone"}}')
    assert failed is not None and failed.error == {"message": "gone"}
    assert read_chunk("not json") is None and read_chunk("[1, 2]") is None
