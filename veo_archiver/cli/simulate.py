"""``veo-archiver simulate``: plays a provider on loopback (a real MP4, a correctly signed callback) and waits
for the manifest."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

from veo_archiver import archive_keys
from veo_archiver.cli import arguments, local_env
from veo_archiver.errors import ConfigError


def kie_key(args: argparse.Namespace) -> str:
    if args.key:
        return str(args.key)
    configured = local_env.environ().get("KIE_WEBHOOK_HMAC_KEYS", "").split(",")[0].strip()
    if configured:
        return configured
    dev = Path(args.data_dir) / local_env.DEV_ENV_FILE
    if dev.exists():
        return local_env.dev_keys(Path(args.data_dir))["KIE_WEBHOOK_HMAC_KEYS"].split(",")[0]
    raise ConfigError("no signing key: pass --key, set KIE_WEBHOOK_HMAC_KEYS, or run `veo-archiver up` first")


def _signing_key(args: argparse.Namespace) -> str | None:
    configured = local_env.environ().get("CALLBACK_SIGNING_KEYS", "").split(",")[0].strip()
    if configured:
        return configured
    dev = Path(args.data_dir) / local_env.DEV_ENV_FILE
    if dev.exists():
        return local_env.dev_keys(Path(args.data_dir)).get("CALLBACK_SIGNING_KEYS", "").split(",")[0] or None
    return None


def cmd_simulate(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from receiver import tokens
    from veo_archiver.sim.cloud import ProviderCloud
    from veo_archiver.sim.media import sample_mp4_padded

    provider = args.provider
    target = args.to
    if provider != "kie" and "token=" not in (urlsplit(target).query or ""):
        key = _signing_key(args)
        if key is None:
            raise ConfigError(
                f"{provider} callbacks need a callback-URL token: pass the URL printed by "
                f"`veo-archiver callback-url {provider}`, or set CALLBACK_SIGNING_KEYS"
            )
        target = tokens.callback_url(
            target.split("/callbacks/")[0], provider, tokens.mint(provider, [key], now=time.time())
        )
    hmac_key = None if (provider != "kie" or args.unsigned) else kie_key(args)
    with ProviderCloud(port=args.serve_port) as cloud:
        task_id = args.task_id or cloud.new_task_id(provider)
        video = sample_mp4_padded(args.size_kib)  # a real, playable H.264 sample, padded by a `free` box
        urls = [cloud.add_video(f"/videos/{provider}/{n}-{uuid.uuid4().hex[:8]}.mp4", video) for n in range(args.count)]
        if args.fail:
            cloud.set_task(provider, task_id, "failed", failure_code=str(args.fail), failure_message=None)
        else:
            cloud.set_task(provider, task_id, "succeeded", urls=urls)
        variant = args.form if provider == "kie" else None
        response = cloud.send_callback(provider, task_id, target, variant=variant, hmac_key=hmac_key)
        shown = target.split("?")[0]
        print(f"POST {shown} -> {response.status_code} {response.text.strip()[:200]}")
        if response.status_code != 200:
            return 1
        print(f"{provider} task {task_id}: {0 if args.fail else len(urls)} video(s) served from {cloud.base_url}")
        return _await_manifest(provider, task_id, args.wait, expect_failure=bool(args.fail))


def _await_manifest(provider: str, task_id: str, wait_s: float, *, expect_failure: bool = False) -> int:
    from workers.storage import open_archive

    settings = local_env.settings()
    archive = open_archive(settings.storage)
    key = archive_keys.manifest_key(provider, task_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        manifest = archive.get_json(key)
        if manifest is not None:
            return print_manifest(manifest, archive.location(key), expect_failure=expect_failure)
        time.sleep(0.25)
    print(f"not archived within {wait_s:.0f} s: is a worker running against {settings.storage.describe()}?")
    return 1


def print_manifest(manifest: dict[str, object], location: str, *, expect_failure: bool) -> int:
    """What the archive holds for the simulated task, in words that never read as success when it failed."""
    files = manifest.get("files")
    files = files if isinstance(files, list) else []
    if manifest.get("status") == "succeeded" and not manifest.get("failure"):
        print(f"archived: {location}")
        for f in files:
            print(f"  {f['key']}  {f['size']} bytes  sha256 {f['sha256']}")
        return arguments.OK
    failure = manifest.get("failure")
    print(f"the task did not succeed (status {manifest.get('status')}); no video archived")
    if failure:
        print(f"  provider's failure: {json.dumps(failure)}")
    print(f"  the failure is recorded in {location}")
    # a failure callback that was asked for (--fail) is the simulation working; any other is a failure
    return arguments.OK if expect_failure else arguments.FOUND_PROBLEM


# --------------------------------------------------------------------------------------------- callback-url
