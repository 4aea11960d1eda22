"""The one read model of the queue, for ``veo-archiver status``, ``/ops`` and ``/metrics``.

Read-only answers to "what is queued, running, dead and stuck, and why", from RQ's keys and ours; no
printing, no writes. One set of types (:mod:`.model`: one :class:`WorkerInfo`, one :class:`Snapshot`) is
filled by one set of reads (:mod:`.reads`), written once as plans (:mod:`.plan`) that run on either Redis
client:

- the receiver awaits :func:`read_snapshot` (``/metrics``), :func:`read_ops` (``/ops``) and :func:`read_task`
  (``/ops/tasks/…``): bounded work, and an unreachable Redis is a snapshot that says so, never an exception;
- the command line calls :func:`status` (the snapshot with every failed job classified, plus retries, tracked
  tasks, recent deliveries and problems), and lists or requeues jobs through RQ's own API (:mod:`.jobs`).

Every snapshot carries the refused callbacks of the last hour and day (:mod:`.activity`, from
:mod:`veo_archiver.records.refusals`); the page adds per-minute rates over the last hour and operator actions.

Dead letters are classified by :mod:`veo_archiver.records.dead_letter`, tracked tasks decoded by
:mod:`veo_archiver.records.tracked`, download progress by :mod:`veo_archiver.records.progress`: every reader
names the same reason for the same job.
"""

from __future__ import annotations

from veo_archiver.queue_view.activity import Rates
from veo_archiver.queue_view.jobs import dead_letters, fetch_jobs, queue_of, state_of
from veo_archiver.queue_view.model import (
    Failure,
    JsonRecord,
    OpsData,
    ScheduledRetry,
    Snapshot,
    Status,
    TrackedTask,
    WaitingJob,
    WorkerInfo,
    duration,
)
from veo_archiver.queue_view.reads import (
    DEAD_LETTER_SCAN,
    MAX_LABEL,
    as_int,
    read_ops,
    read_snapshot,
    snapshot,
)
from veo_archiver.queue_view.status_report import problems, status
from veo_archiver.queue_view.task import DeliveryInfo, TaskFile, TaskJob, TaskView, read_task, task_view

__all__ = [
    "DEAD_LETTER_SCAN",
    "MAX_LABEL",
    "DeliveryInfo",
    "Failure",
    "JsonRecord",
    "OpsData",
    "Rates",
    "ScheduledRetry",
    "Snapshot",
    "Status",
    "TaskFile",
    "TaskJob",
    "TaskView",
    "TrackedTask",
    "WaitingJob",
    "WorkerInfo",
    "as_int",
    "dead_letters",
    "duration",
    "fetch_jobs",
    "problems",
    "queue_of",
    "read_ops",
    "read_snapshot",
    "read_task",
    "snapshot",
    "state_of",
    "status",
    "task_view",
]
