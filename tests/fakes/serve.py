"""`python -m tests.fakes.serve openai`: run a fake provider in its own process (benchmarks).

Every request gets the same streamed text reply; the base URL is printed on the first line.
"""

from __future__ import annotations

import argparse
import asyncio

from .gemini_server import FakeGeminiServer
from .gemini_server import text_reply as gemini_text
from .openai_server import FakeOpenAIServer
from .openai_server import text_reply as openai_text
from .scripted import ScriptedServer


async def serve(provider: str, text: str, pieces: int) -> None:
    server: ScriptedServer
    if provider == "openai":
        server = FakeOpenAIServer(default=openai_text(text, pieces))
        await server.start()
        print(server.base_url, flush=True)
    else:
        server = FakeGeminiServer(default=gemini_text(text, pieces))
        await server.start()
        print(server.origin, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("provider", choices=["openai", "gemini"])
    parser.add_argument("--text", default="Hello! This is a streamed reply from the fake server.")
    parser.add_argument("--pieces", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(serve(args.provider, args.text, args.pieces))


if __name__ == "__main__":
    main()
