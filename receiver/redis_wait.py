"""The receiver's wait for Redis at start: it does not block startup (a verified callback is spooled, or
answered 503 with the spool off, and ``/readyz`` says which), but it says where it waits and at what pace, and
probes the intake again once Redis answers, with the same pace and log lines as a worker's wait
(:mod:`veo_archiver.redis_client`)."""

from __future__ import annotations

import asyncio
import logging

from veo_archiver.errors import ConfigError
from veo_archiver.intake import Intake
from veo_archiver.redis_client import RedisWait, retry_delays

log = logging.getLogger(__name__)


async def watch(intake: Intake, url: str, *, spooling: bool) -> None:
    """Return at once when Redis answers now; else PING with the shared backoff until it does, then let the
    intake probe the server (durability, script) before the first batch needs it."""
    if await intake.ping():
        return
    meanwhile = "callbacks are spooled meanwhile" if spooling else "callbacks are answered 503 meanwhile (no spool)"
    wait = RedisWait(url, f"receiver serving; {meanwhile}")
    wait.waiting("no answer to PING")
    for delay in retry_delays():
        await asyncio.sleep(delay)
        if await intake.ping():
            wait.answered()
            try:
                await intake.start()
            except ConfigError as exc:  # REDIS_DURABILITY=waitaof against a server without it: each batch fails
                log.error("%s", exc)
            return
        wait.failed()
