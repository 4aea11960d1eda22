"""A real headless browser for page tests: Debian's ``chromium``, driven from the command line.

Playwright's browser download does not work on our machines, so the system package is used directly:
``--dump-dom`` prints the DOM after load (redirects followed, cookies kept in the profile directory between
calls) and ``--screenshot`` writes a PNG. A missing chromium FAILS the test that needs it, never skips it:
CI installs it (``.ci/run``), and so must a developer (``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
)


def find_chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "chromium is not installed: the ops page is tested in a real headless browser. "
        "Install Debian's package: apt-get update && apt-get install -y --no-install-recommends chromium "
        "(.ci/run does this in CI; Playwright's browser download is not used).",
        pytrace=False,
    )


class Chromium:
    """One browser profile (``profile``): cookies set by one call are sent by the next."""

    def __init__(self, profile: Path, *, binary: str | None = None, timeout_s: float = 90.0) -> None:
        self.binary = binary or find_chromium()
        self.profile = profile
        self.timeout_s = timeout_s
        profile.mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.profile)}  # chromium writes caches under $HOME
        command = [self.binary, *FLAGS, f"--user-data-dir={self.profile}", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, env=env, check=False)
        if result.returncode != 0:
            raise AssertionError(f"chromium exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def dump_dom(self, url: str) -> str:
        """The serialized DOM of ``url`` after load (and after any redirect)."""
        return self._run("--dump-dom", url).stdout

    def screenshot(self, url: str, path: Path, *, width: int = 1400, height: int = 1800) -> Path:
        self._run(f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars", url)
        if not path.exists() or path.stat().st_size < 1000:
            raise AssertionError(f"chromium wrote no screenshot at {path}")
        return path
