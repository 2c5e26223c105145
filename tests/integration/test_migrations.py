"""Schema migrations apply in order, once, and are tracked."""
import psycopg

from opmas.connectors.postgres.migrations import discover, migrate


async def test_migrations_apply_once(postgres):
    async with await psycopg.AsyncConnection.connect(postgres.url) as conn:
        first = await migrate(conn)
        assert first == [m.version for m in discover()]
        assert await migrate(conn) == []
        cur = await conn.execute("SELECT count(*) FROM schema_migrations")
        assert (await cur.fetchone())[0] == len(first)
        cur = await conn.execute("SELECT to_regclass('findings') IS NOT NULL")
        assert (await cur.fetchone())[0] is True


def test_duplicate_versions_are_refused(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1")
    (tmp_path / "001_b.sql").write_text("SELECT 1")
    try:
        discover(tmp_path)
    except ValueError as exc:
        assert "version 1" in str(exc)
    else:
        raise AssertionError("duplicate versions were accepted")
