"""Retry notices reach the listener of the stream that retries, and no other."""
from __future__ import annotations

import asyncio

from upstage_magic.errors import APIConnectionError
from upstage_magic.retries import announce, listening


def test_each_stream_hears_only_its_own_retries():
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def stream(name: str, retries: int):
        async def gen():
            for i in range(retries):
                announce(i + 1, 3, 0.5 * (i + 1), APIConnectionError("Could not connect (host x: [Errno 111] refused)."))
                await asyncio.sleep(0)
            yield name
        return gen

    async def consume(name: str, retries: int) -> list[str]:
        return [x async for x in listening(stream(name, retries), lambda n: heard[name].append(n.describe()))]

    async def main():
        return await asyncio.gather(consume("a", 2), consume("b", 0))

    assert asyncio.run(main()) == [["a"], ["b"]]
    assert heard["a"] == ["retrying (1/3) in 0.5 s: Could not connect.", "retrying (2/3) in 1.0 s: Could not connect."]
    assert heard["b"] == []
    announce(1, 3, 1.0, "nobody listens")  # outside a stream: nothing, no error
