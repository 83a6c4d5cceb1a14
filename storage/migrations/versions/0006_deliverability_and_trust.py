"""deliverability and trust: bounces, suppressions, relay secrets, authentication verdicts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fleet", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_policy", sa.String(length=20), nullable=True))

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authentication", sa.JSON(), nullable=True))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounce_kind", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("bounce_status", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("bounced_at", storage.types.UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("diagnostic", sa.String(length=1000), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("created_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    op.create_table(
        "relay_secret",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("relay_secret")
    op.drop_table("suppression")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("bounced_at")
        batch_op.drop_column("bounce_status")
        batch_op.drop_column("bounce_kind")
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_column("authentication")
    with op.batch_alter_table("fleet", schema=None) as batch_op:
        batch_op.drop_column("auth_policy")
