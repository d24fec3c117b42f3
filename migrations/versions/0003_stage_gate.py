"""stage gate: candidate model versions, and each task's canary set

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02

A version that fails the promotion gate is registered as `candidate` (never aliased); each task
stores its canaries (`{"samples_sha256", "n", "outputs_sha256", "dtype", "device"}`, NULL for tasks
registered before this revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('ready', 'retired')"
NEW_STATUSES = "status IN ('ready', 'retired', 'candidate')"
# 0001 passed full names through the naming convention, so its checks are named twice over
# ("ck_model_versions_ck_model_versions_status"); the new check gets the convention's own name.
OLD_CHECK, NEW_CHECK = "ck_model_versions_ck_model_versions_status", "ck_model_versions_status"


def _swap_status_check(drop: str, create: str, condition: str) -> None:
    # op.f: the names are final (no second pass through the convention). On SQLite batch mode copies
    # the table (the reflected old check is dropped from the copy); on PostgreSQL it ALTERs in place.
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f(drop), type_="check")
        batch.create_check_constraint(op.f(create), condition)


def upgrade() -> None:
    _swap_status_check(OLD_CHECK, NEW_CHECK, NEW_STATUSES)
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("canary", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Candidates have no place in the old schema; they were never served, so they become retired.
    op.execute("UPDATE model_versions SET status = 'retired' WHERE status = 'candidate'")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("canary")
    _swap_status_check(NEW_CHECK, OLD_CHECK, OLD_STATUSES)
