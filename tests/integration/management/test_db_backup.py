"""opmas db backup / restore round-trip on a real embedded PostgreSQL (pg_dump/pg_restore of the package)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg

from opmas.cli import main
from opmas.runtime.embedded import start_postgres


def _count(url: str, sql: str):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def test_backup_then_restore_round_trip(tmp_path, monkeypatch):
    data_dir = Path(tempfile.mkdtemp(prefix="opmas-backup-")) / "data"  # not under basetemp: see conftest
    server = start_postgres(data_dir / "postgres")
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE findings_copy (id INT PRIMARY KEY, title TEXT)")
            conn.execute("INSERT INTO findings_copy SELECT g, 'finding ' || g FROM generate_series(1, 500) g")
        monkeypatch.delenv("OPMAS_DB_URL", raising=False)
        dump = tmp_path / "backups" / "opmas.dump"
        # the embedded server is running (as under `opmas up`): the command uses it and leaves it running
        assert main(["db", "backup", str(dump), "--data-dir", str(data_dir)]) == 0
        assert dump.stat().st_size > 0
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("DELETE FROM findings_copy WHERE id > 10")
            conn.execute("UPDATE findings_copy SET title = 'changed'")
        assert main(["db", "restore", str(dump), "--db-url", server.url]) == 0
        assert _count(server.url, "SELECT count(*) FROM findings_copy") == 500
        assert _count(server.url, "SELECT title FROM findings_copy WHERE id = 7") == "finding 7"
    finally:
        server.stop()
    # with the server stopped, the command starts it for itself and stops it again
    assert main(["db", "restore", str(dump), "--data-dir", str(data_dir)]) == 0
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_restore_of_a_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["db", "restore", str(tmp_path / "nope.dump"), "--db-url", "postgresql://x@/y"]) == 2
    assert "no such backup file" in capsys.readouterr().err
