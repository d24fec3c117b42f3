"""job leases: heartbeat_at, cancel_requested and the `cancelled` state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

A running job's attempt touches `heartbeat_at`; a reaper re-queues a job whose heartbeat is older
than FLAME_JOB_HEARTBEAT_TIMEOUT_S. `cancel_requested` asks a running job to stop at its next epoch.
Batch mode rebuilds the table on SQLite, which cannot alter a CHECK constraint in place.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "state IN ('queued', 'running', 'succeeded', 'failed')"
NEW_STATES = "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def _state_checks() -> list[str]:
    """The CHECK constraints on jobs.state as the database names them: 0001 made `ck_jobs_state` on
    SQLite but `ck_jobs_ck_jobs_state` on PostgreSQL (the naming convention applied twice)."""
    checks = sa.inspect(op.get_bind()).get_check_constraints("jobs")
    return [c["name"] for c in checks if c["name"] and "state" in c["sqltext"]]


def upgrade() -> None:
    old = _state_checks()
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        for name in old:
            batch.drop_constraint(op.f(name), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), NEW_STATES)


def downgrade() -> None:
    op.execute("UPDATE jobs SET state = 'failed' WHERE state = 'cancelled'")
    with op.batch_alter_table("jobs") as batch:
        for name in _state_checks():
            batch.drop_constraint(op.f(name), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), OLD_STATES)
        batch.drop_column("cancel_requested")
        batch.drop_column("heartbeat_at")
