"""initial registry schema: versions, components, tasks, modalities, aliases, datasets, jobs,
api keys and the prediction audit

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Plain SQLAlchemy types only (no imports from `service`), so this file keeps working as the models
evolve. Constraint names follow `service.orm.NAMING_CONVENTION`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
VERSION_FK = "model_versions.id"


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("status IN ('ready', 'retired')", name="ck_model_versions_status"),
        sa.ForeignKeyConstraint(["parent_id"], [VERSION_FK], name="fk_model_versions_parent_id_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
    )
    op.create_index("ix_model_versions_digest", "model_versions", ["digest"])
    op.create_index("ix_model_versions_parent_id", "model_versions", ["parent_id"])

    op.create_table(
        "components",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("weight", sa.String(256), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("n_params", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.CheckConstraint("rank IS NULL OR rank > 0", name="ck_components_rank_positive"),
        sa.ForeignKeyConstraint(["version_id"], [VERSION_FK], name="fk_components_version_id_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_components"),
        sa.UniqueConstraint("version_id", "stage", "weight", name="uq_components_version_id_stage_weight"),
    )
    op.create_index("ix_components_version_id", "components", ["version_id"])

    op.create_table(
        "modalities",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('timeseries', 'tabular', 'text', 'embedding', 'image')",
                           name="ck_modalities_kind"),
        sa.ForeignKeyConstraint(["version_id"], [VERSION_FK], name="fk_modalities_version_id_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_modalities"),
        sa.UniqueConstraint("name", "version_id", name="uq_modalities_name_version_id"),
    )
    op.create_index("ix_modalities_name", "modalities", ["name"])
    op.create_index("ix_modalities_version_id", "modalities", ["version_id"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("model_card", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["version_id"], [VERSION_FK], name="fk_tasks_version_id_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("name", "version_id", name="uq_tasks_name_version_id"),
    )
    op.create_index("ix_tasks_name", "tasks", ["name"])
    op.create_index("ix_tasks_version_id", "tasks", ["version_id"])

    op.create_table(
        "aliases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["version_id"], [VERSION_FK], name="fk_aliases_version_id_model_versions"),
        sa.PrimaryKeyConstraint("name", name="pk_aliases"),
    )
    op.create_index("ix_aliases_version_id", "aliases", ["version_id"])

    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.String(32), nullable=True),
        sa.Column("to_version", sa.String(32), nullable=False),
        sa.Column("moved_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("moved_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["from_version"], [VERSION_FK],
                                name="fk_alias_history_from_version_model_versions"),
        sa.ForeignKeyConstraint(["to_version"], [VERSION_FK], name="fk_alias_history_to_version_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_alias_history"),
    )
    op.create_index("ix_alias_history_alias", "alias_history", ["alias"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("digest", name="uq_datasets_digest"),
    )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parent_version", sa.String(32), nullable=True),
        sa.Column("result_version", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed')", name="ck_jobs_state"),
        sa.ForeignKeyConstraint(["parent_version"], [VERSION_FK], name="fk_jobs_parent_version_model_versions"),
        sa.ForeignKeyConstraint(["result_version"], [VERSION_FK], name="fk_jobs_result_version_model_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )

    op.create_table(
        "prediction_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("modalities_present", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("caller_key_id", sa.String(36), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prediction_audit"),
    )
    op.create_index("ix_prediction_audit_created_at", "prediction_audit", ["created_at"])
    op.create_index("ix_prediction_audit_request_id", "prediction_audit", ["request_id"])
    op.create_index("ix_prediction_audit_task_created_at", "prediction_audit", ["task", "created_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before the versions they reference.
    for table in ("prediction_audit", "api_keys", "jobs", "datasets", "alias_history", "aliases", "tasks",
                  "modalities", "components", "model_versions"):
        op.drop_table(table)
