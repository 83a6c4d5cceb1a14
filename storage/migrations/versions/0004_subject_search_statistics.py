"""subject search statistics (PostgreSQL)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 07:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Without statistics on lower(subject), PostgreSQL guesses a subject search matches a
    # handful of rows and scans the whole ticket table instead of the partner's index range
    # (bench/history_plan.py, 100 000 tickets). Extended statistics fix the estimate; they
    # are not an index and cost nothing on writes. SQLite has no equivalent and needs none.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE STATISTICS ticket_subject_lower ON (lower(subject)) FROM ticket')
        op.execute('ANALYZE ticket')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP STATISTICS IF EXISTS ticket_subject_lower')
