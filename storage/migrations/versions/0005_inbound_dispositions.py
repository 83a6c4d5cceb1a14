"""inbound mail: dispositions, reply text, sanitised HTML, flags, inline images

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        # Every message stored so far was forwarded (or, for internal notes, kept on purpose).
        batch_op.add_column(
            sa.Column(
                "disposition", sa.String(length=20), nullable=False, server_default="forwarded"
            )
        )
        batch_op.add_column(sa.Column("disposition_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("quoted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("html", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("flags", sa.JSON(), nullable=False, server_default="{}"))
        # The loop guard counts an alias's recent messages on every inbound email.
        batch_op.create_index("ix_message_alias_created", ["alias_id", "created_at"])

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attention", sa.String(length=200), nullable=True))

    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_id", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_column("content_id")

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("attention")

    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index("ix_message_alias_created")
        batch_op.drop_column("flags")
        batch_op.drop_column("html")
        batch_op.drop_column("quoted")
        batch_op.drop_column("disposition_reason")
        batch_op.drop_column("disposition")
