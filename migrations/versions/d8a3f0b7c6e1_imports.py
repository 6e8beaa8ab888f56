"""imports: archives brought in (import, import_problem); posts keep their origin and are
kept whole (body is TEXT)

Revision ID: d8a3f0b7c6e1
Revises: c5e8f1a2b3d4
Create Date: 2026-12-07 18:30:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql


# revision identifiers, used by Alembic.
revision = 'd8a3f0b7c6e1'
down_revision = 'c5e8f1a2b3d4'
branch_labels = None
depends_on = None

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb')
POST_BODY = sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql', 'mariadb')


def upgrade():
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.alter_column('body', existing_type=sa.String(length=280), type_=POST_BODY,
                              existing_nullable=False)
        batch_op.add_column(sa.Column('origin', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('origin_id', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('origin_key', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_post_user_origin_key', ['user_id', 'origin_key'])

    op.create_table(
        'import',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('stage', sa.String(length=16), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=True),
        sa.Column('filename', sa.String(length=255), nullable=True),
        sa.Column('storage_key', sa.String(length=255), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('task_id', sa.String(length=36), nullable=True),
        sa.Column('preview_json', sa.Text(), nullable=True),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('imported', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('skipped_json', sa.Text(), nullable=True),
        sa.Column('followed', sa.Integer(), nullable=False),
        sa.Column('created_at', DATETIME, nullable=False),
        sa.Column('confirm_by', DATETIME, nullable=True),
        sa.Column('confirmed_at', DATETIME, nullable=True),
        sa.Column('finished_at', DATETIME, nullable=True),
        sa.Column('expired_at', DATETIME, nullable=True),
        sa.ForeignKeyConstraint(['task_id'], ['task.id'], name=op.f('fk_import_task_id_task'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_import_user_id_user'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_import')),
    )
    with op.batch_alter_table('import', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_confirm_by'), ['confirm_by'], unique=False)
        batch_op.create_index(batch_op.f('ix_import_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_import_task_id'), ['task_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_import_user_id'), ['user_id'], unique=False)

    op.create_table(
        'import_problem',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('import_id', sa.String(length=32), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('item', sa.Integer(), nullable=False),
        sa.Column('original_id', sa.String(length=255), nullable=True),
        sa.Column('reason', sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(['import_id'], ['import.id'],
                                name=op.f('fk_import_problem_import_id_import'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_import_problem')),
        sa.UniqueConstraint('import_id', 'outcome', 'item', name='uq_import_problem_item'),
    )
    with op.batch_alter_table('import_problem', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_problem_import_id'), ['import_id'],
                              unique=False)


def downgrade():
    # Tables with their indexes and foreign keys at once: MariaDB refuses to drop an index
    # a foreign key still uses.
    op.drop_table('import_problem')
    op.drop_table('import')
    # Imported posts are dropped with their origin: a body longer than the old column held
    # cannot go back into it.
    op.execute("DELETE FROM post WHERE origin_key IS NOT NULL")
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_constraint('uq_post_user_origin_key', type_='unique')
        batch_op.drop_column('origin_key')
        batch_op.drop_column('origin_id')
        batch_op.drop_column('origin')
        batch_op.alter_column('body', existing_type=POST_BODY, type_=sa.String(length=280),
                              existing_nullable=False)
