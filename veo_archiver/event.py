"""The provider-neutral description of one callback: what every provider module produces.

An event is plain data with a JSON form (``to_json``/``from_json``) because it travels inside an RQ job;
the receiver and the workers share nothing else but the job's dotted path and this shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TaskStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


class Verification(enum.StrEnum):
    """How the receiver convinced itself the callback is genuine."""

    SIGNATURE = "signature"  # provider HMAC headers (kie.ai)
    TOKEN = "token"  # noqa: S105  (our own signed callback-URL token, not a password)
    UNSIGNED = "unsigned"  # the operator explicitly allowed unsigned callbacks
    OPERATOR = "operator"  # replayed by an operator
    PROVIDER_API = "provider_api"  # read from the provider's status API (confirmation, reconciliation)


@dataclass(frozen=True)
class TaskEvent:
    provider: str
    task_id: str
    status: TaskStatus
    result_urls: tuple[str, ...] = ()
    failure_code: str | None = None
    failure_message: str | None = None
    kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    verification: Verification = Verification.UNSIGNED
    #: provider's own status string, kept verbatim (useful when ``status`` is UNKNOWN)
    provider_status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "status": self.status.value,
            "result_urls": list(self.result_urls),
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "kind": self.kind,
            "extra": self.extra,
            "verification": self.verification.value,
            "provider_status": self.provider_status,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskEvent:
        return cls(
            provider=str(data["provider"]),
            task_id=str(data["task_id"]),
            status=TaskStatus(data["status"]),
            result_urls=tuple(data.get("result_urls") or ()),
            failure_code=data.get("failure_code"),
            failure_message=data.get("failure_message"),
            kind=data.get("kind"),
            extra=dict(data.get("extra") or {}),
            verification=Verification(data.get("verification", Verification.UNSIGNED.value)),
            provider_status=data.get("provider_status"),
        )
