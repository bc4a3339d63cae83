"""A small JSON-over-HTTP client for the intensity APIs (stdlib urllib, no new dependency).

Why not a library: each API is two or three GET endpoints; what matters is the
policy, kept here in one place:

* 429: wait ``Retry-After`` (seconds or an HTTP date) when it is short, else
  give up with ``retry_after_s`` set so the caller can come back later;
* 5xx, timeouts, refused connections: a few retries with exponential backoff
  and jitter (``util.backoff``, the deliverer's rule too);
* other 4xx: no retry; the provider turns the status into advice (401: check
  the token; 404: check the zone).

Secrets (tokens, passwords) travel in headers only and are scrubbed from every
message this module makes, including server bodies quoted in errors.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wattledger.carbon.base import CarbonProviderError
from wattledger.util.backoff import backoff_s, parse_retry_after

log = logging.getLogger("wattledger.carbon")

# Retry-After is honoured up to a day: longer than max_wait_s is not slept but
# handed back (CarbonProviderError.retry_after_s) for the next sync to respect.
MAX_RETRY_AFTER_S = 86_400.0

Hint = Callable[[int, str], str]


def _no_hint(status: int, body: str) -> str:
    return ""


class JsonClient:
    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        secrets: Iterable[str] = (),
        timeout_s: float = 20.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        max_wait_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        hint: Hint = _no_hint,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._secrets = [s for s in secrets if s]
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.hint = hint
        self._rng = rng

    def add_secret(self, secret: str) -> None:
        if secret:
            self._secrets.append(secret)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def get_json(
        self, path: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        shown = self.scrub(path)  # never the query or headers in messages
        last_error = ""
        for attempt in range(1, self.attempts + 1):
            req = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    body = resp.read()
                try:
                    return json.loads(body)
                except ValueError:
                    raise CarbonProviderError(
                        f"{self.provider}: {shown} answered with something that is not JSON; "
                        "check [carbon] api_url points at the API"
                    ) from None
            except urllib.error.HTTPError as e:
                last_error = self._after_http_error(e, attempt, shown) or last_error  # raises when it is final
                continue
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last_error = self.scrub(str(reason))
                if self._retry_later(attempt, f"cannot reach {shown} ({last_error})"):
                    continue
                raise CarbonProviderError(
                    f"{self.provider}: cannot reach {self.scrub(self.base_url)} ({last_error}); "
                    "check the network and [carbon] api_url"
                ) from None
        raise CarbonProviderError(f"{self.provider}: no answer from {shown} ({last_error})")  # pragma: no cover

    def _after_http_error(self, e: urllib.error.HTTPError, attempt: int, shown: str) -> str:
        """Wait as the answer asks and return what went wrong when another attempt follows; else raise."""
        status = e.code
        body_text = self.scrub(_read_body(e))
        if status == 429:
            wait_s = parse_retry_after(e.headers.get("Retry-After"), cap_s=MAX_RETRY_AFTER_S)
            if wait_s is None:
                wait_s = self._backoff(attempt)
            if wait_s > self.max_wait_s or attempt == self.attempts:
                raise CarbonProviderError(
                    f"{self.provider}: rate limited (HTTP 429) on {shown}; "
                    f"retry after {wait_s:.0f} s (the agent will try again at its next sync)",
                    status=429,
                    retry_after_s=wait_s,
                ) from None
            log.info("%s: rate limited on %s; waiting %.1f s as Retry-After asks", self.provider, shown, wait_s)
            self.sleep(wait_s)
            return ""
        if status >= 500:
            last_error = f"HTTP {status} {body_text[:200]}".strip()
            if self._retry_later(attempt, f"{last_error} on {shown}"):
                return last_error
            raise CarbonProviderError(
                f"{self.provider}: server error on {shown} after {attempt} tries ({last_error}); "
                "the service is having trouble, try again later",
                status=status,
            ) from None
        advice = self.hint(status, body_text)
        raise CarbonProviderError(
            f"{self.provider}: HTTP {status} on {shown}: {body_text[:200] or e.reason}"
            + (f"; {advice}" if advice else ""),
            status=status,
        ) from None

    def _retry_later(self, attempt: int, why: str) -> bool:
        """Sleep a backoff and say True when another attempt is left, else False (the caller raises)."""
        if attempt >= self.attempts:
            return False
        wait_s = self._backoff(attempt)
        log.info("%s: %s; retrying in %.1f s", self.provider, why, wait_s)
        self.sleep(wait_s)
        return True

    def _backoff(self, attempt: int) -> float:
        return backoff_s(attempt, self.backoff_s, self.max_wait_s, self._rng)


def _read_body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - a body we cannot read is just no body
        return ""


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
