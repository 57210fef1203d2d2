"""Embedding cache: an in-memory LRU in front of an on-disk SQLite table.

Keyed by (encoder id, normalised text), so a different encoder or encoder version never returns a
stale vector. The disk layer survives restarts; a memory hit costs microseconds and a disk hit well
under a millisecond, against 5-100 ms for running an encoder. Both layers are bounded: the disk layer
keeps at most ``max_disk_entries`` rows and evicts the least recently used (a caller sending endless
distinct texts cannot fill the disk). Its recency is updated when a row is written or read from disk;
entries served from the memory layer are not rewritten on every hit.
"""
from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, disk_path: str | Path | None, max_memory_entries: int = 1024,
                 max_disk_entries: int = 100_000) -> None:
        """Args:
            disk_path: SQLite file for the persistent layer, or None for memory only.
            max_memory_entries: LRU capacity of the memory layer.
            max_disk_entries: LRU capacity of the disk layer.
        """
        if max_memory_entries < 1:
            raise ValueError(f"max_memory_entries={max_memory_entries} must be >= 1")
        if max_disk_entries < 1:
            raise ValueError(f"max_disk_entries={max_disk_entries} must be >= 1")
        self._disk_capacity = max_disk_entries
        self._clock = 0  # recency of disk rows (a counter, not wall time: clocks jump)
        self._disk_count = 0
        self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._capacity = max_memory_entries
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if disk_path is not None:
            path = Path(disk_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " encoder_id TEXT NOT NULL, text TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (encoder_id, text))"
            )
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(embeddings)")]
            if "last_used" not in columns:  # a cache written before the disk layer was bounded
                self._db.execute("ALTER TABLE embeddings ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0")
            self._db.execute("CREATE INDEX IF NOT EXISTS embeddings_last_used ON embeddings (last_used)")
            self._clock = int(self._db.execute("SELECT COALESCE(MAX(last_used), 0) FROM embeddings").fetchone()[0])
            self._disk_count = int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            self._evict()

    def get(self, encoder_id: str, text: str) -> np.ndarray | None:
        key = (encoder_id, text)
        with self._lock:
            vector = self._memory.get(key)
            if vector is not None:
                self._memory.move_to_end(key)
                return vector
            if self._db is None:
                return None
            row = self._db.execute(
                "SELECT dim, vector FROM embeddings WHERE encoder_id = ? AND text = ?", key
            ).fetchone()
            if row is None:
                return None
            self._clock += 1
            self._db.execute("UPDATE embeddings SET last_used = ? WHERE encoder_id = ? AND text = ?",
                             (self._clock, *key))
            vector = np.frombuffer(row[1], dtype=np.float32, count=row[0])
            self._remember(key, vector)
            return vector

    def put(self, encoder_id: str, text: str, vector: np.ndarray) -> None:
        vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)  # (D,)
        vector.setflags(write=False)
        key = (encoder_id, text)
        with self._lock:
            self._remember(key, vector)
            if self._db is not None:
                self._clock += 1
                existed = self._db.execute("SELECT 1 FROM embeddings WHERE encoder_id = ? AND text = ?",
                                           key).fetchone() is not None
                self._db.execute(
                    "INSERT OR REPLACE INTO embeddings (encoder_id, text, dim, vector, last_used) VALUES (?, ?, ?, ?, ?)",
                    (encoder_id, text, int(vector.shape[0]), vector.tobytes(), self._clock),
                )
                self._disk_count += 0 if existed else 1
                self._evict()

    def clear_memory(self) -> None:
        """Drop the memory layer (the disk layer stays); used to measure disk hits."""
        with self._lock:
            self._memory.clear()

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._memory)
            return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _evict(self) -> None:
        """Drop the least recently used disk rows beyond capacity (caller holds the lock)."""
        excess = self._disk_count - self._disk_capacity
        if self._db is None or excess <= 0:
            return
        self._db.execute("DELETE FROM embeddings WHERE rowid IN "
                         "(SELECT rowid FROM embeddings ORDER BY last_used LIMIT ?)", (excess,))
        self._disk_count -= excess

    def _remember(self, key: tuple[str, str], vector: np.ndarray) -> None:
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self._capacity:
            self._memory.popitem(last=False)
