"""Downstream notifications: each ``veo:outcomes`` entry POSTed, signed, to every ``NOTIFY_URLS`` URL.

The outcome stream is the pipeline-facing record (consumers may read it with their own group); this is the
optional push on top of it. At least once per (entry, URL):

- the notifier reads the stream in its own consumer group ``notifier``; an entry stays pending in the group
  until every URL answered 2xx or was dead-lettered, and only then is acknowledged;
- a failed POST (non-2xx, a redirect, which is never followed, a timeout, a refused connection) is retried
  with exponential backoff. The schedule is the zset ``veo:notify:retry`` (member ``"<entry id> <url hash>"``,
  score = due time), shared by every notifier, so a retry outlives the process that scheduled it; a due
  retry is taken with ``ZREM`` (only the notifier whose ``ZREM`` removed it sends it);
- per-entry state is the hash ``veo:notify:entry:<entry id>``: url hash → ``{"state", "attempts", "error"}``;
- after ``max_attempts`` the (entry, URL) goes to the list ``veo:notify:dead`` (newest first) and counts as
  done;
- entries pending longer than ``claim_after_s`` in a notifier that died are taken over with ``XAUTOCLAIM``;
  a URL that is neither done nor scheduled for a retry is then sent again.

Each POST: ``{"type": "veo.outcome.<outcome>", "timestamp": "...", "data": {<entry fields>, "stream_id"}}``
with Standard Webhooks headers: ``webhook-id`` = ``<entry id>-<url hash>`` (stable across retries, so the
receiver can dedupe on it), ``webhook-timestamp`` (time of the attempt) and ``webhook-signature`` (``v1``,
HMAC with ``NOTIFY_SECRET``, which must be a ``whsec_`` secret).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso, retry_after_seconds
from veo_archiver.errors import ConfigError
from veo_archiver.settings import Settings
from veo_archiver.standard_webhooks import SECRET_PREFIX, parse_secrets, sign
from veo_archiver.text import text

log = logging.getLogger(__name__)

GROUP = redis_keys.NOTIFY_GROUP
RETRY_ZSET = redis_keys.NOTIFY_RETRY_ZSET
DEAD_LIST = redis_keys.NOTIFY_DEAD_LIST
DEAD_MAXLEN = 10_000
ENTRY_TTL_S = 30 * 24 * 3600
READ_COUNT = 50
USER_AGENT = "veo-archiver-notifier"
DONE = frozenset({"done", "dead"})
CONSUMER_IDLE_MS = 24 * 3600 * 1000


def entry_key(entry_id: str) -> str:
    return redis_keys.notify_entry_key(entry_id)


@dataclass(frozen=True)
class NotifyPolicy:
    max_attempts: int = 10
    retry_base_s: float = 10.0
    retry_cap_s: float = 3600.0
    #: an entry pending this long in another consumer is taken over (well above one entry's send time)
    claim_after_s: float = 300.0
    timeout_s: float = 10.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Backoff after ``attempts`` failed attempts: base · 2^(n-1), capped, jittered down by up to 20%."""
        delay = min(self.retry_cap_s, self.retry_base_s * 2.0 ** (attempts - 1)) * random.uniform(0.8, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_cap_s))
        return delay


@dataclass(frozen=True)
class Target:
    url: str
    hash: str


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def check_config(settings: Settings) -> tuple[tuple[Target, ...], str]:
    """The URLs and the secret, validated: :class:`ConfigError` names the variable to fix."""
    if not settings.notify_urls:
        raise ConfigError("NOTIFY_URLS is empty: nothing to notify")
    targets: list[Target] = []
    for url in settings.notify_urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"NOTIFY_URLS entry {url!r}: expected an http(s) URL")
        targets.append(Target(url, url_hash(url)))
    secret = (settings.notify_secret or "").strip()
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(
            "NOTIFY_SECRET must be a Standard Webhooks secret whsec_<base64 of >= 24 bytes>; "
            "generate one with: python3 -c 'import base64, os; "
            'print("whsec_" + base64.b64encode(os.urandom(32)).decode())\''
        )
    try:
        parse_secrets([secret])
    except ConfigError as exc:
        raise ConfigError(f"NOTIFY_SECRET: {exc.message}") from None
    return tuple(targets), secret


def payload(entry_id: str, fields: Mapping[str, str], now: float) -> bytes:
    data: dict[str, Any] = {**fields, "stream_id": entry_id}
    try:
        data["files"] = json.loads(fields.get("files") or "[]")
    except ValueError:
        pass
    if str(fields.get("bytes", "")).isdigit():
        data["bytes"] = int(fields["bytes"])
    body = {"type": f"veo.outcome.{fields.get('outcome') or 'unknown'}", "timestamp": iso(now), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class Notifier:
    """One consumer of the ``notifier`` group. :meth:`run` loops until ``stop()`` is true."""

    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings,
        *,
        policy: NotifyPolicy | None = None,
        client: httpx.Client | None = None,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets, self._secret = check_config(settings)
        self._by_hash = {t.hash: t for t in self.targets}
        self._redis = connection
        self.policy = policy or NotifyPolicy()
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(self.policy.timeout_s),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._clock = clock
        self._stream = redis_keys.outcomes_stream()
        self._next_claim = 0.0

    # -- group -------------------------------------------------------------------------------------------

    def ensure_group(self, *, from_start: bool = False) -> None:
        """Create the group (at the stream's end unless ``from_start``); an existing group is kept as is."""
        try:
            self._redis.xgroup_create(self._stream, GROUP, id="0" if from_start else "$", mkstream=True)
            log.info("consumer group created", extra={"group": GROUP, "from_start": from_start})
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def close(self) -> None:
        """Leave the group if nothing is pending on this consumer (else the next notifier claims it)."""
        try:
            for info in self._redis.xinfo_consumers(self._stream, GROUP):
                if text(info["name"]) == self.consumer and int(info["pending"]) == 0:
                    self._redis.xgroup_delconsumer(self._stream, GROUP, self.consumer)
        except redis.RedisError as exc:
            log.warning("could not leave the consumer group: %s", exc)
        self._client.close()

    # -- loop --------------------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            try:
                self.step()
            except redis.RedisError as exc:
                if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                    log.warning("the consumer group is gone (stream deleted?); creating it again")
                    self._recreate_group()
                    continue
                log.warning("redis error; retrying in 1 s: %s", exc)
                time.sleep(1.0)

    def _recreate_group(self) -> None:
        try:
            self.ensure_group()
        except redis.RedisError as exc:
            log.warning("could not create the consumer group: %s", exc)
            time.sleep(1.0)

    def step(self, block_ms: int = 1000) -> int:
        """Claim abandoned entries, send new ones, send due retries; returns how many POSTs were made."""
        sent = 0
        now = self._clock()
        if now >= self._next_claim:
            self._next_claim = now + max(1.0, self.policy.claim_after_s / 2)
            sent += self.claim()
        wait = self._next_due_ms(block_ms)
        # RESP2 (the client's default): a list of [stream, entries]
        reply = cast(
            list[Any],
            self._redis.xreadgroup(
                GROUP, self.consumer, {self._stream: ">"}, count=READ_COUNT, block=wait if wait > 0 else None
            ),
        )
        for _stream, entries in reply or []:
            for raw_id, fields in entries:
                sent += self.process(text(raw_id), {text(k): text(v) for k, v in fields.items()})
        return sent + self.retry_due()

    def _next_due_ms(self, block_ms: int) -> int:
        first = self._redis.zrange(RETRY_ZSET, 0, 0, withscores=True)
        if not first:
            return block_ms
        return max(0, min(block_ms, int((float(first[0][1]) - self._clock()) * 1000)))

    def claim(self) -> int:
        """Take over entries idle for ``claim_after_s`` (their notifier died) and finish them."""
        sent = 0
        cursor = "0-0"
        for _ in range(20):  # bounded per step; the next step continues
            # not JUSTID: redis-py then drops the cursor from the reply
            reply = self._redis.xautoclaim(
                self._stream,
                GROUP,
                self.consumer,
                int(self.policy.claim_after_s * 1000),
                start_id=cursor,
                count=READ_COUNT,
            )
            cursor = text(reply[0])
            # Redis >= 7 (and late 6.2) lists entries trimmed from the stream apart (already out of the PEL)
            gone = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
            for raw_id, fields in reply[1]:
                if raw_id is not None and not fields:
                    gone.append(text(raw_id))
                elif raw_id is not None:
                    sent += self._take_over(text(raw_id), {text(k): text(v) for k, v in fields.items()})
            for entry_id in gone:
                self._redis.xack(self._stream, GROUP, entry_id)
                self._redis.delete(entry_key(entry_id))
                log.warning(
                    "pending outcome no longer in the stream (trimmed); acknowledged", extra={"entry_id": entry_id}
                )
            if cursor == "0-0":
                break
        self._prune_consumers()
        return sent

    def _prune_consumers(self) -> None:
        """Forget consumers of dead notifiers: nothing pending and silent for a day (restarts add names)."""
        for info in self._redis.xinfo_consumers(self._stream, GROUP):
            name = text(info["name"])
            if name != self.consumer and int(info["pending"]) == 0 and int(info["idle"]) > CONSUMER_IDLE_MS:
                self._redis.xgroup_delconsumer(self._stream, GROUP, name)

    def _take_over(self, entry_id: str, fields: dict[str, str]) -> int:
        sent = self.process(entry_id, fields)
        if sent:
            log.info(
                "took over an outcome left pending by another notifier",
                extra={"entry_id": entry_id, "consumer": self.consumer, "sent": sent},
            )
        return sent

    def _entry(self, entry_id: str) -> dict[str, str] | None:
        found = self._redis.xrange(self._stream, entry_id, entry_id)
        if not found or not found[0][1]:
            return None
        return {text(k): text(v) for k, v in found[0][1].items()}

    # -- one entry ---------------------------------------------------------------------------------------

    def process(self, entry_id: str, fields: Mapping[str, str]) -> int:
        """Send the entry to every URL not yet done and not waiting for a scheduled retry."""
        state = self._states(entry_id)
        sent = 0
        for target in self.targets:
            current = state.get(target.hash, {})
            if current.get("state") in DONE:
                continue
            if self._redis.zscore(RETRY_ZSET, f"{entry_id} {target.hash}") is not None:
                continue
            self._deliver(entry_id, fields, target, int(current.get("attempts", 0)))
            sent += 1
        self._finish_if_done(entry_id)
        return sent

    def retry_due(self) -> int:
        sent = 0
        for raw in self._redis.zrangebyscore(RETRY_ZSET, "-inf", self._clock(), start=0, num=READ_COUNT):
            member = text(raw)
            if not self._redis.zrem(RETRY_ZSET, member):
                continue  # another notifier took it
            entry_id, _, hashed = member.partition(" ")
            target = self._by_hash.get(hashed)
            fields = self._entry(entry_id)
            if target is None or fields is None:
                why = "URL no longer in NOTIFY_URLS" if target is None else "entry trimmed from the stream"
                self._record(entry_id, hashed, {"state": "dead", "attempts": 0, "error": why})
                log.warning("retry dropped: %s", why, extra={"entry_id": entry_id, "url_hash": hashed})
            else:
                attempts = int(self._states(entry_id).get(hashed, {}).get("attempts", 0))
                self._deliver(entry_id, fields, target, attempts)
                sent += 1
            self._finish_if_done(entry_id)
        return sent

    def _states(self, entry_id: str) -> dict[str, dict[str, Any]]:
        raw = self._redis.hgetall(entry_key(entry_id))
        return {text(k): json.loads(v) for k, v in raw.items()}

    def _record(self, entry_id: str, hashed: str, state: dict[str, Any], *, retry_at: float | None = None) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(entry_key(entry_id), hashed, json.dumps(state))
        pipe.expire(entry_key(entry_id), ENTRY_TTL_S)
        if retry_at is not None:
            pipe.zadd(RETRY_ZSET, {f"{entry_id} {hashed}": retry_at})
        pipe.execute()

    def _deliver(self, entry_id: str, fields: Mapping[str, str], target: Target, attempts: int) -> None:
        attempts += 1
        ok, error, retry_after = self._post(entry_id, fields, target)
        extra = {"entry_id": entry_id, "url": target.url, "attempt": attempts}
        if ok:
            self._record(entry_id, target.hash, {"state": "done", "attempts": attempts})
            log.info("notification delivered", extra=extra)
            return
        if attempts >= self.policy.max_attempts:
            record = {
                "entry_id": entry_id,
                "url": target.url,
                "webhook_id": f"{entry_id}-{target.hash}",
                "attempts": attempts,
                "error": error,
                "at": iso(self._clock()),
                "entry": dict(fields),
            }
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(DEAD_LIST, json.dumps(record))
            pipe.ltrim(DEAD_LIST, 0, DEAD_MAXLEN - 1)
            pipe.execute()
            self._record(entry_id, target.hash, {"state": "dead", "attempts": attempts, "error": error})
            log.error("notification dead-lettered after %d attempts: %s", attempts, error, extra=extra)
            return
        delay = self.policy.delay(attempts, retry_after)
        self._record(
            entry_id,
            target.hash,
            {"state": "retrying", "attempts": attempts, "error": error},
            retry_at=self._clock() + delay,
        )
        log.warning("notification failed, retry in %.1f s: %s", delay, error, extra=extra)

    def _post(self, entry_id: str, fields: Mapping[str, str], target: Target) -> tuple[bool, str, float | None]:
        now = self._clock()
        body = payload(entry_id, fields, now)
        msg_id = f"{entry_id}-{target.hash}"
        timestamp = int(now)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, msg_id, timestamp, body),
        }
        try:
            response = self._client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"[:300], None
        if 200 <= response.status_code < 300:
            return True, "", None
        retry_after = response.headers.get("retry-after", "")
        wait = retry_after_seconds(retry_after, cap=self.policy.retry_cap_s)
        if response.is_redirect:
            location = response.headers.get("location", "?")
            return False, f"HTTP {response.status_code} redirect to {location[:200]} (not followed)", wait
        return False, f"HTTP {response.status_code}", wait

    def _finish_if_done(self, entry_id: str) -> None:
        state = self._states(entry_id)
        if all(state.get(t.hash, {}).get("state") in DONE for t in self.targets):
            pipe = self._redis.pipeline(transaction=True)
            pipe.xack(self._stream, GROUP, entry_id)
            pipe.delete(entry_key(entry_id))
            pipe.execute()


def dead_letters(connection: redis.Redis, count: int = 100) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in connection.lrange(DEAD_LIST, 0, count - 1)]
