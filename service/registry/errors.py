"""Domain exceptions of the registry, artifacts and auth.

Each carries a stable `code` and an optional `field`, the parts of the API's error body
`{"error": {"code", "message", "field"}}`; one HTTP handler maps the classes to status codes
(NotFound 404, Conflict 409, CapacityExceeded 409, DatasetUnsuitable 422, PermissionDenied 403,
ArtifactCorrupt 500).
"""

from __future__ import annotations


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def extra(self) -> dict[str, object]:
        """Fields the error body carries beside code, message and field (e.g. a dataset's line)."""
        return {}


class NotFound(DomainError):
    code = "not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ArtifactNotFound(NotFound):
    code = "artifact_not_found"


class Conflict(DomainError):
    """The request clashes with stored state (duplicate id, reused idempotency key, bad transition)."""

    code = "conflict"


class LeaseLost(Conflict):
    """The job is no longer this attempt's: it was re-queued (a stale heartbeat), taken over or finished
    elsewhere. The attempt stops and writes nothing more; whoever holds the job now finishes it."""

    code = "lease_lost"


class JobCancelled(Conflict):
    """A running job was asked to stop (`POST /jobs/{id}/cancel`); raised at its next epoch boundary."""

    code = "job_cancelled"


class CapacityExceeded(Conflict):
    """A stage would push some weight's cumulative reserved rank past the configured budget."""

    code = "capacity_exceeded"

    def __init__(self, message: str, *, over: dict[str, tuple[int, int]], budget: int) -> None:
        super().__init__(message, field="components")
        self.over = over  # weight -> (rank already reserved, rank requested)
        self.budget = budget


class TaskExists(Conflict):
    """A stage would add a task the active model already serves, or that a pending job already adds."""

    code = "task_exists"


class AliasMoved(Conflict):
    """A compare-and-swap of an alias found it pointing elsewhere than expected: nothing moved."""

    code = "alias_moved"


class DatasetUnsuitable(DomainError):
    """A stored dataset cannot train what a stage asks of it (no labels for a new task, or samples
    without any of its modalities); known from the dataset's summary before a job exists."""

    code = "dataset_unsuitable"


class ArtifactCorrupt(DomainError):
    """A stored blob no longer hashes to its name: the store was tampered with or the disk failed."""

    code = "artifact_corrupt"


class PermissionDenied(DomainError):
    code = "forbidden"
