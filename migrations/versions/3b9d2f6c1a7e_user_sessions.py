"""user sessions: one row per login, so that logout and a password change end sessions
server-side

Revision ID: 3b9d2f6c1a7e
Revises: 0e367b4ad02d
Create Date: 2026-12-01 21:20:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql


# revision identifiers, used by Alembic.
revision = '3b9d2f6c1a7e'
down_revision = '0e367b4ad02d'
branch_labels = None
depends_on = None


def upgrade():
    # Written by hand; the same shape `flask db migrate` gives (checked by
    # tests/test_migrations.py::test_models_and_migrations_agree). utf8mb4 and DATETIME(6) on
    # MySQL/MariaDB, as in the initial schema.
    op.create_table('user_session',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_user_session_user_id_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_session')),
    mysql_charset='utf8mb4',
    )
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_session_user_id'), ['user_id'], unique=False)


def downgrade():
    # Dropping the table drops its index (dropping the index first fails on MySQL/MariaDB:
    # the foreign key needs it).
    op.drop_table('user_session')
