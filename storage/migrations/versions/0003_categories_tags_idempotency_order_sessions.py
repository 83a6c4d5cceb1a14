"""categories tags idempotency order sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 06:51:18.150632
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.types


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('category',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.String(length=1000), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('archived_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['category.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('category', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_category_parent_id'), ['parent_id'], unique=False)

    op.create_table('idempotency_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('location', sa.String(length=500), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner', 'key')
    )
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_key_expires_at'), ['expires_at'], unique=False)

    op.create_table('tag',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('keyword', sa.String(length=100), nullable=False),
    sa.Column('archived_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('keyword'),
    sa.UniqueConstraint('name')
    )
    op.create_table('ticket_tag',
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['tag_id'], ['tag.id'], ),
    sa.ForeignKeyConstraint(['ticket_id'], ['ticket.id'], ),
    sa.PrimaryKeyConstraint('ticket_id', 'tag_id')
    )
    with op.batch_alter_table('ticket_tag', schema=None) as batch_op:
        batch_op.create_index('ix_ticket_tag_tag', ['tag_id', 'ticket_id'], unique=False)

    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('category_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('callback_phone', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('agent_name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('agent_phone', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('agent_source', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('agent_updated_at', storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_ticket_category_id'), ['category_id'], unique=False)
        batch_op.create_index('ix_ticket_partner_status_created', ['partner_id', 'status', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_ticket_partner_updated', ['partner_id', 'updated_at', 'id'], unique=False)
        batch_op.create_foreign_key(
            'fk_ticket_category_id_category', 'category', ['category_id'], ['id']
        )

    # Tickets carried free-text categories before categories were a resource: each distinct
    # text becomes a category, so no ticket loses its classification.
    op.execute(
        "INSERT INTO category (name, created_at) SELECT DISTINCT category, CURRENT_TIMESTAMP"
        " FROM ticket WHERE category IS NOT NULL"
    )
    op.execute(
        "UPDATE ticket SET category_id = (SELECT id FROM category WHERE category.name ="
        " ticket.category) WHERE category IS NOT NULL"
    )
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.drop_column('category')



def downgrade() -> None:
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('category', sa.VARCHAR(length=100), nullable=True))
    op.execute(
        "UPDATE ticket SET category = (SELECT name FROM category WHERE category.id ="
        " ticket.category_id)"
    )
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.drop_constraint('fk_ticket_category_id_category', type_='foreignkey')
        batch_op.drop_index('ix_ticket_partner_updated')
        batch_op.drop_index('ix_ticket_partner_status_created')
        batch_op.drop_index(batch_op.f('ix_ticket_category_id'))
        batch_op.drop_column('agent_updated_at')
        batch_op.drop_column('agent_source')
        batch_op.drop_column('agent_phone')
        batch_op.drop_column('agent_name')
        batch_op.drop_column('callback_phone')
        batch_op.drop_column('category_id')

    with op.batch_alter_table('ticket_tag', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_tag_tag')

    op.drop_table('ticket_tag')
    op.drop_table('tag')
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_key_expires_at'))

    op.drop_table('idempotency_key')
    with op.batch_alter_table('category', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_category_parent_id'))

    op.drop_table('category')
