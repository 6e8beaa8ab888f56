"""exports: the export centre's archives (one row per export, its current task)

Revision ID: c5e8f1a2b3d4
Revises: a7c41e9d25b0
Create Date: 2026-12-02 01:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql


# revision identifiers, used by Alembic.
revision = 'c5e8f1a2b3d4'
down_revision = 'a7c41e9d25b0'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'export',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('task_id', sa.String(length=36), nullable=True),
        sa.Column('storage_key', sa.String(length=255), nullable=True),
        sa.Column('filename', sa.String(length=128), nullable=True),
        sa.Column('posts_count', sa.Integer(), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=False),
        sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=True),
        sa.Column('expires_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=True),
        sa.Column('expired_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=True),
        sa.ForeignKeyConstraint(['task_id'], ['task.id'], name=op.f('fk_export_task_id_task'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_export_user_id_user'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_export')),
    )
    with op.batch_alter_table('export', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_export_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_export_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_export_user_id'), ['user_id'], unique=False)


def downgrade():
    # The table with its indexes and foreign keys at once: MariaDB refuses to drop an index
    # a foreign key still uses.
    op.drop_table('export')
