"""The PostgreSQL store shared by 1 and 3 nodes: messages/s and commits with waiting writers.

Each "node" is a PostgresStore on one fresh database (as several server processes would
be); `--threads` threads spread over them each append one message and wait for its commit,
for `--seconds`. Their message commits take turns on the id counter (store/postgres.py),
which is what limits a large cluster (docs/scaling.md).

    python -m bench.pg_store_bench [--threads 16] [--seconds 3]

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust); the database is dropped after.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

# The tests' helper: a fresh database, dropped afterwards.
from store_backends import postgres_database

from threadchat.store.postgres import PostgresStore

TEXT = "a typical chat line of about sixty characters, give or take."


def run(nodes: int, threads: int, seconds: float) -> tuple[float, list[int]]:
    with postgres_database() as url:
        stores = [PostgresStore(url) for _ in range(nodes)]
        stop = time.monotonic() + seconds
        counts: list[int] = []

        def write(store: PostgresStore) -> None:
            written = 0
            while time.monotonic() < stop:
                store.append(sender="a", room="r", text=TEXT)
                written += 1
            counts.append(written)

        workers = [
            threading.Thread(target=write, args=(stores[i % nodes],)) for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        commits = [store.commits for store in stores]
        for store in stores:
            store.close()
        return sum(counts) / seconds, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for nodes in (1, 3):
        rate, commits = run(nodes, args.threads, args.seconds)
        print(f"{nodes} node(s): {rate:.0f} messages/s, commits per node {commits}")


if __name__ == "__main__":
    main()
