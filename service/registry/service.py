"""The registry's service API in one place: keyword-only functions that take the session explicitly.

    from service.registry import service as registry
    with session_scope(factory) as session:
        version = registry.register_version(session=session, store=store, parent="v1", files=..., ...)
        registry.mark_succeeded(session=session, job_id=job.id, result_version=version.id)

Functions flush but never commit, so one `session_scope` can commit several of them together.
"""

from service.registry.aliases import swap_alias
from service.registry.audit import list_predictions, record_prediction
from service.registry.datasets import create_dataset, find_dataset, get_dataset, list_datasets
from service.registry.jobs import (
    count_jobs_by_state,
    create_job,
    create_or_get_job,
    get_job,
    list_jobs,
    mark_failed,
    mark_running,
    mark_succeeded,
    set_parent,
    update_progress,
)
from service.registry.leases import (
    claim_job,
    heartbeat,
    hold_lease,
    mark_cancelled,
    release,
    request_cancel,
    requeue_stale,
    stale_jobs,
    unfinished_jobs,
)
from service.registry.lineage import get_version, lineage, lineage_ids, list_versions
from service.registry.records import ComponentRecord, ModalityRecord, TaskRecord
from service.registry.tasks import get_task, list_modalities, list_tasks, update_model_card
from service.registry.versions import (
    alias_history,
    check_capacity,
    list_aliases,
    list_components,
    manifest_digest,
    move_alias,
    register_version,
    reserved_rank,
    resolve_alias,
    retire_version,
)

__all__ = [
    "ComponentRecord",
    "ModalityRecord",
    "TaskRecord",
    "alias_history",
    "check_capacity",
    "claim_job",
    "count_jobs_by_state",
    "create_dataset",
    "create_job",
    "create_or_get_job",
    "find_dataset",
    "get_dataset",
    "get_job",
    "get_task",
    "get_version",
    "heartbeat",
    "hold_lease",
    "lineage",
    "lineage_ids",
    "list_aliases",
    "list_components",
    "list_datasets",
    "list_jobs",
    "list_modalities",
    "list_predictions",
    "list_tasks",
    "list_versions",
    "manifest_digest",
    "mark_cancelled",
    "mark_failed",
    "mark_running",
    "mark_succeeded",
    "move_alias",
    "record_prediction",
    "register_version",
    "release",
    "request_cancel",
    "requeue_stale",
    "reserved_rank",
    "resolve_alias",
    "retire_version",
    "set_parent",
    "stale_jobs",
    "swap_alias",
    "unfinished_jobs",
    "update_model_card",
    "update_progress",
]
