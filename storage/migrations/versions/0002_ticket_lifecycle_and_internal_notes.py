"""ticket lifecycle and internal notes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:29:44.331921
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        # Existing rows are ordinary messages.
        batch_op.add_column(
            sa.Column('internal', sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('closed_at', storage.types.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.drop_column('closed_at')

    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('internal')

