"""A client for OpenAI-compatible chat endpoints (`vllm serve`, SGLang, hosted APIs): qbench's
chat messages with the images inlined as base64 data URLs, a bounded number of requests in
flight, and retries with exponential backoff on timeouts, dropped connections, 429 and 5xx.
Other 4xx and malformed responses are not retried: they fail the sample with a reason."""
from __future__ import annotations

import base64
import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class EndpointError(Exception):
    """A request that failed for good; one line."""


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 3           # extra attempts after the first
    backoff_s: float = 1.0     # wait before retry k is backoff_s * 2**k
    concurrency: int = 4       # requests in flight at once


def image_data_url(image: Image.Image) -> str:
    """The image as a PNG data URL (lossless: the model sees the pixels qbench decoded)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict], images: Sequence[Image.Image]) -> list[dict]:
    """qbench's chat messages in the OpenAI format: each `{"type": "image"}` placeholder takes
    the next image, as an image_url part; a system turn becomes plain text."""
    pending = iter(images)
    out = []
    for message in messages:
        if message["role"] == "system":
            out.append({"role": "system",
                        "content": "".join(p["text"] for p in message["content"])})
            continue
        parts = []
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


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    try:
        detail = exc.read()[:200].decode("utf-8", "replace").replace("\n", " ")
    except OSError:
        detail = ""
    return f"HTTP {exc.code} {exc.reason}: {detail}".strip()


class ChatClient:
    """POSTs to {base_url}/chat/completions."""

    def __init__(self, settings: EndpointSettings):
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    def _post(self, payload: dict[str, Any]) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(),
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
            return response.read()

    def complete(self, payload: dict[str, Any]) -> list[str]:
        """The answer texts for one request, retrying what may pass on a second try."""
        last = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                return response_texts(self._post(payload))
            except urllib.error.HTTPError as exc:
                last = _http_error_message(exc)
                if exc.code not in RETRY_STATUS:
                    raise EndpointError(last) from None
            except (TimeoutError, socket.timeout):
                last = f"timed out after {self.settings.timeout_s:g} s"
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    last = f"timed out after {self.settings.timeout_s:g} s"
                else:
                    last = f"cannot reach {self.url}: {reason}"
        raise EndpointError(f"{last} (gave up after {self.settings.retries + 1} attempts)")

    def complete_many(self, payloads: Sequence[dict[str, Any]]
                      ) -> list[tuple[list[str] | None, str | None]]:
        """(texts, None) or (None, why) per payload, at most `concurrency` in flight."""
        def one(payload: dict[str, Any]) -> tuple[list[str] | None, str | None]:
            try:
                return self.complete(payload), None
            except EndpointError as exc:
                return None, str(exc)

        with ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency)) as pool:
            return list(pool.map(one, payloads))
