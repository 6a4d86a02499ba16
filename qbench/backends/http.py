"""A client for OpenAI-compatible chat endpoints (`vllm serve`, SGLang, hosted APIs) on httpx2,
the maintained HTTP client the openai SDK and huggingface_hub are built on.

- qbench's chat messages go out with the images inlined as base64 PNG data URLs.
- Each attempt has a deadline for the whole exchange (connect, send, wait, read every byte):
  a server that trickles a byte now and then cannot hold a request past `timeout_s`.
- A response is read as a stream and refused once it passes `max_response_bytes` (a declared
  Content-Length over the cap is refused before reading).
- Dropped connections, malformed status lines, deadlines, 408, 429 and 5xx (not 501) are
  retried with exponential backoff, or after the server's Retry-After when it sends one (up to
  `max_wait_s`). Other 4xx, malformed bodies and oversize answers fail the sample at once.
- At most `concurrency` requests are in flight; every failure is returned per request, one line.

httpx2 is imported when the first request goes out, so the model catalogue loads without it.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")
Result = tuple[list[str] | None, str | None]  # (answer texts, None) or (None, why it failed)


class EndpointError(Exception):
    """A request that failed for good; one line."""


class _Oversize(Exception):
    pass


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0              # deadline of one attempt, start to last byte
    retries: int = 3                      # extra attempts after the first
    backoff_s: float = 1.0                # wait before retry k is backoff_s * 2**(k-1)
    max_wait_s: float = 60.0              # the longest Retry-After honoured
    concurrency: int = 4                  # requests in flight at once
    max_response_bytes: int = 4 * 2**20  # a chat answer is kilobytes; refuse more than this

    def check(self) -> list[str]:
        """What is wrong with these settings (empty when nothing)."""
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url must start with http:// or https://, got "
                            f"{self.base_url!r}")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.max_wait_s < 0:
            problems.append("need timeout_s > 0, backoff_s >= 0, max_wait_s >= 0")
        if self.retries < 0 or self.concurrency < 1 or self.max_response_bytes < 1:
            problems.append("need retries >= 0, concurrency >= 1, max_response_bytes >= 1")
        return problems


def image_data_url(image: Image.Image) -> str:
    """The image as a PNG data URL (lossless: the model sees the pixels qbench decoded)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict], images: Sequence[Image.Image]) -> list[dict]:
    """qbench's chat messages in the OpenAI format: each `{"type": "image"}` placeholder takes
    the next image, as an image_url part; a system turn becomes plain text."""
    pending = iter(images)
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "system":
            out.append({"role": "system",
                        "content": "".join(p["text"] for p in message["content"])})
            continue
        parts: list[dict[str, Any]] = []
        for part in message["content"]:
            if part["type"] == "image":
                image = next(pending, None)
                if image is None:
                    raise ValueError("the prompt has more image places than the sample images")
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    if next(pending, None) is not None:
        raise ValueError("the sample has more images than the prompt has places")
    return out


def response_texts(body: bytes) -> list[str]:
    """The choices' message contents of a chat-completions response, or EndpointError."""
    try:
        data = json.loads(body)
        texts = [choice["message"]["content"] for choice in data["choices"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointError(f"malformed response ({type(exc).__name__}): "
                            f"{body[:120].decode('utf-8', 'replace')!r}") from None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise EndpointError(f"response has no text content: {body[:120]!r}")
    return texts


def retryable(status: int) -> bool:
    return status in (408, 429) or (status >= 500 and status != 501)


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), else None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to completion from synchronous code, also when the caller already runs an event
    loop (a notebook): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class ChatClient:
    """POSTs to {base_url}/chat/completions."""

    def __init__(self, settings: EndpointSettings):
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}

    def complete_many(self, payloads: Sequence[dict[str, Any]]) -> list[Result]:
        """(texts, None) or (None, why) per payload, at most `concurrency` in flight."""
        return run_coroutine(self._complete_all(payloads))

    async def _complete_all(self, payloads: Sequence[dict[str, Any]]) -> list[Result]:
        import httpx2
        limit = asyncio.Semaphore(self.settings.concurrency)
        timeout = httpx2.Timeout(self.settings.timeout_s)  # per operation; the deadline is ours
        limits = httpx2.Limits(max_connections=self.settings.concurrency)
        async with httpx2.AsyncClient(timeout=timeout, limits=limits) as client:
            async def one(payload: dict[str, Any]) -> Result:
                async with limit:
                    try:
                        return await self._complete(client, payload), None
                    except EndpointError as exc:
                        return None, str(exc)
            return list(await asyncio.gather(*(one(p) for p in payloads)))

    async def _complete(self, client, payload: dict[str, Any]) -> list[str]:
        """The answer texts for one request, retrying what may pass on a second try."""
        import httpx2
        settings = self.settings
        last, wait = "", 0.0
        for attempt in range(settings.retries + 1):
            await asyncio.sleep(wait)
            wait = settings.backoff_s * 2 ** attempt
            try:
                status, headers, body = await asyncio.wait_for(
                    self._post(client, payload), timeout=settings.timeout_s)
            except asyncio.TimeoutError:
                last = f"no complete answer within the {settings.timeout_s:g} s deadline"
                continue
            except _Oversize as exc:
                raise EndpointError(f"response larger than max_response_bytes="
                                    f"{settings.max_response_bytes} ({exc})") from None
            except httpx2.TransportError as exc:
                last = f"cannot reach {self.url} or lost the answer: " \
                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                continue
            if status == 200:
                texts = response_texts(body)
                asked_for = payload.get("n", 1)
                if len(texts) != asked_for:   # an answer of other samples is not this one's
                    raise EndpointError(f"the response has {len(texts)} choices, {asked_for} "
                                        "asked for")
                return texts
            detail = body[:200].decode("utf-8", "replace").replace("\n", " ")
            last = f"HTTP {status}: {detail}".strip()
            if not retryable(status):
                raise EndpointError(last)
            asked = retry_after_s(headers)
            if asked is not None:
                if asked > settings.max_wait_s:
                    raise EndpointError(f"{last}; the server asks to retry after {asked:g} s, "
                                        f"more than max_wait_s={settings.max_wait_s:g}")
                wait = asked
        raise EndpointError(f"{last} (gave up after {settings.retries + 1} attempts)")

    async def _post(self, client, payload: dict[str, Any]) -> tuple[int, Any, bytes]:
        cap = self.settings.max_response_bytes
        async with client.stream("POST", self.url, json=payload,
                                 headers=self.headers) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _Oversize(f"Content-Length {declared}")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _Oversize(f"more than {cap} bytes received")
                chunks.append(chunk)
            return response.status_code, response.headers, b"".join(chunks)
