"""SQLite backups: online snapshots sealed with AES-256-GCM, verify, restore, retention, key rotation, tampering, wrong keys."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from botcriptofy_backup._keys import BackupKeyError, Keyring
from botcriptofy_backup._sqlite import MAGIC, BackupError, create, expire, listing, restore, table_counts, verify

from .conftest import key_entry, write_rows

K1 = Keyring.parse(key_entry("k1", 1))


def test_an_online_backup_taken_while_a_writer_commits_restores_a_consistent_database(tmp_path: Path):
    source = tmp_path / "live.db"
    write_rows(source, 1000)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        connection = sqlite3.connect(source, timeout=30)
        try:
            while not stop.is_set():
                connection.execute("INSERT INTO trades (payload) VALUES (?)", ("y" * 100,))
                connection.commit()
                written[0] += 1
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 200:
            threading.Event().wait(0.01)
        made = create(source, tmp_path / "backups", "main", K1)
    finally:
        stop.set()
        thread.join()
    raw = made.path.read_bytes()
    assert raw.startswith(MAGIC) and b'"key_id": "k1"' in raw[:400] and b"CREATE TABLE" not in raw  # sealed, key id in the header
    assert oct(made.path.stat().st_mode & 0o777) == "0o600"
    assert verify(made.path, K1)["integrity"] == "ok"
    restored = tmp_path / "restored.db"
    restore(made.path, restored, K1)
    count = table_counts(restored)["trades"]
    assert 1200 <= count <= 1000 + written[0]
    connection = sqlite3.connect(restored)
    ids = [row[0] for row in connection.execute("SELECT id FROM trades ORDER BY id")]
    connection.close()
    assert ids == list(range(1, count + 1))
    with pytest.raises(BackupError, match="restore target exists"):
        restore(made.path, restored, K1)


def test_a_tampered_backup_fails_verification_naming_the_file(tmp_path: Path):
    source = tmp_path / "live.db"
    write_rows(source, 500)
    made = create(source, tmp_path / "backups", "main", K1)
    raw = bytearray(made.path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    made.path.write_bytes(bytes(raw))
    with pytest.raises(BackupError) as caught:
        verify(made.path, K1)
    assert str(made.path) in str(caught.value) and "altered" in str(caught.value)
    header_altered = bytearray(raw)
    header_altered[header_altered.index(b'"main"') + 1] = ord("n")
    made.path.write_bytes(bytes(header_altered))
    with pytest.raises(BackupError, match="altered"):
        verify(made.path, K1)
    assert not list((tmp_path / "backups").glob(".*partial"))


def test_a_wrong_key_is_a_clear_error_and_rotation_keeps_old_backups_readable(tmp_path: Path):
    source = tmp_path / "live.db"
    write_rows(source, 100)
    old = create(source, tmp_path / "backups", "main", K1)
    with pytest.raises(BackupKeyError, match=r"wrong key -- the key 'k1' .* is not the key that encrypted this backup"):
        verify(old.path, Keyring.parse(key_entry("k1", 9)))
    with pytest.raises(BackupKeyError, match=r"key 'k1' is not among the keys .* \(it holds: k2\)"):
        verify(old.path, Keyring.parse(key_entry("k2", 2)))

    rotated = Keyring.parse(f"{key_entry('k2', 2)},{key_entry('k1', 1)}")
    write_rows(source, 50)
    new = create(source, tmp_path / "backups", "main", rotated)
    assert new.key_id == "k2" and old.key_id == "k1"
    assert verify(old.path, rotated)["key_id"] == "k1" and verify(new.path, rotated)["key_id"] == "k2"
    restore(old.path, tmp_path / "old.db", rotated)
    assert table_counts(tmp_path / "old.db") == {"trades": 100}
    with pytest.raises(BackupKeyError):
        verify(new.path, K1)


def test_retention_keeps_the_newest_backups(tmp_path: Path):
    source = tmp_path / "live.db"
    write_rows(source, 10)
    made = [create(source, tmp_path / "backups", "main", K1) for _ in range(4)]
    removed = expire(tmp_path / "backups", "main", 2)
    assert sorted(removed) == sorted(item.path.name for item in made[:2])
    assert [item.path.name for item in listing(tmp_path / "backups", "main")] == [made[3].path.name, made[2].path.name]


def test_malformed_keys_are_refused_with_their_reason():
    with pytest.raises(BackupKeyError, match="decodes to 3 bytes"):
        Keyring.parse("k1:YWJj")
    with pytest.raises(BackupKeyError, match="appears twice"):
        Keyring.parse(f"{key_entry('k1', 1)},{key_entry('k1', 2)}")
    with pytest.raises(BackupKeyError, match="holds no key"):
        Keyring.parse(" , ")
