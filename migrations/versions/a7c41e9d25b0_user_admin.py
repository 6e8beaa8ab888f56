"""user admin: the admin role, NULL = as ADMINS says, True/False = promoted/demoted

Revision ID: a7c41e9d25b0
Revises: 3b9d2f6c1a7e
Create Date: 2026-12-01 22:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7c41e9d25b0'
down_revision = '3b9d2f6c1a7e'
branch_labels = None
depends_on = None


def upgrade():
    # Written by hand; what `flask db migrate` gives (checked by
    # tests/test_migrations.py::test_models_and_migrations_agree). Nullable, no default:
    # existing users stay "as ADMINS says". The batch form rebuilds the table on SQLite and is a
    # plain ALTER TABLE on PostgreSQL and MariaDB.
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admin', sa.Boolean(), nullable=True))


def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('admin')
