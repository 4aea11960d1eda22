"""workers/manifest.py: ``urls_verified`` says whether anything authenticated the archived URLs."""

from __future__ import annotations

import pytest

from veo_archiver.event import TaskEvent, TaskStatus, Verification
from workers.manifest import urls_verified


def event(provider: str, verification: Verification) -> TaskEvent:
    return TaskEvent(provider=provider, task_id="t", status=TaskStatus.SUCCEEDED, verification=verification)


@pytest.mark.parametrize(
    ("provider", "verification", "confirmed", "verified"),
    [
        ("kie", Verification.SIGNATURE, False, False),  # kie signs task id + time, not the URLs
        ("kie", Verification.SIGNATURE, True, True),  # ... unless the status API confirmed them
        ("kie", Verification.TOKEN, False, True),
        ("apixo", Verification.UNSIGNED, False, False),
        ("apixo", Verification.UNSIGNED, True, True),
        ("standard-acme", Verification.SIGNATURE, False, True),  # Standard Webhooks sign the body
        ("evolink", Verification.PROVIDER_API, False, True),  # read from the provider (reconciliation)
        ("useapi", Verification.OPERATOR, False, False),  # an operator's replay proves nothing about URLs
    ],
)
def test_urls_verified(provider: str, verification: Verification, confirmed: bool, verified: bool) -> None:
    assert urls_verified(event(provider, verification), confirmed=confirmed) is verified
