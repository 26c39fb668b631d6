"""psycopg 3 against a real braid server: prepared statements with parameters, binary
results, errors with SQLSTATEs, COPY FROM STDIN. Prints 'N passed, N failed'."""

import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from decimal import Decimal

import psycopg
from psycopg import errors


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="braid-psycopg-")
        self.port = free_port()
        self.log = open(os.path.join(self.tmp.name, "braid.log"), "w")
        self.proc = subprocess.Popen(
            [os.environ["BRAID_BIN"], "--data-dir", os.path.join(self.tmp.name, "data"),
             "--listen", f"127.0.0.1:{self.port}",
             # A port of its own: the default one may belong to another braid.
             "--http-listen", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("braid did not start: " + open(self.log.name).read())
                time.sleep(0.05)

    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, f"braid exited with {code}"


def test_prepared_parameters(conn):
    with conn.cursor() as cur:
        cur.execute("CREATE STREAM t (id bigint, name text, score double precision, "
                    "happened timestamptz, n numeric(10,2)) WITH (partitions = 2)")
        for i in range(5):
            cur.execute("INSERT INTO t (id, name, score, happened) VALUES (%s, %s, %s, %s)",
                        (i, f"n{i}", i * 1.5,
                         datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)),
                        prepare=True)
            assert cur.rowcount == 1
        cur.execute("SELECT id, name, score FROM t WHERE id >= %s ORDER BY id", (3,), prepare=True)
        assert cur.fetchall() == [(3, "n3", 4.5), (4, "n4", 6.0)]


def test_text_timestamps_in_the_session_zone(conn):
    # A str parameter goes as text with no type: braid types it as the column's timestamptz
    # and reads it as PostgreSQL does, in the session's TimeZone when it has no offset.
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE tz_params (id int PRIMARY KEY, at timestamptz)")
        cur.execute("SET TIME ZONE 'Europe/Berlin'")
        cur.execute("INSERT INTO tz_params VALUES (%s, %s)", (1, "2024-01-01 12:00"), prepare=True)
        cur.execute("INSERT INTO tz_params VALUES (%s, %s)", (2, "2024-07-01 12:00:00+00"),
                    prepare=True)
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute("SELECT id, extract(epoch FROM at)::bigint FROM tz_params ORDER BY id")
        assert cur.fetchall() == [(1, 1704106800), (2, 1719835200)]
        cur.execute("SELECT count(*) FROM tz_params WHERE at < %s", ("2024-01-01 11:00:01",),
                    prepare=True)
        assert cur.fetchone() == (1,)


def test_binary_results(conn):
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, name, score, happened FROM t WHERE id = %s", (2,))
        row = cur.fetchone()
        assert row[0] == 2 and row[1] == "n2" and row[2] == 3.0, row
        assert row[3] == datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), row
        cur.execute("SELECT _partition, _offset FROM t WHERE id = %s", (2,))
        p, o = cur.fetchone()
        assert isinstance(p, int) and isinstance(o, int)


def test_errors(conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        for sql, exc in [("SELECT * FROM missing", errors.UndefinedTable),
                         ("SELECT nope FROM t", errors.UndefinedColumn),
                         ("SELEC 1", errors.SyntaxError),
                         ("SELECT 1/0", errors.DivisionByZero),
                         ("UPDATE t SET id = 1", errors.FeatureNotSupported)]:
            try:
                cur.execute(sql)
            except exc:
                pass
            else:
                raise AssertionError(f"{sql} did not fail with {exc.__name__}")
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone()[0] == 5


def test_transaction_abort(conn):
    conn.autocommit = False
    with conn.cursor() as cur:
        try:
            cur.execute("SELECT * FROM missing")
        except errors.UndefinedTable:
            pass
        try:
            cur.execute("SELECT 1")
        except errors.InFailedSqlTransaction:
            pass
        else:
            raise AssertionError("statement in an aborted transaction succeeded")
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.commit()
    conn.autocommit = True


def test_copy(conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        with cur.copy("COPY t (id, name) FROM STDIN") as copy:
            copy.write_row((100, "c1"))
            copy.write_row((101, None))
        with cur.copy("COPY t (id, name) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(b'102,"x,y"\n103,\n')
        cur.execute("SELECT id, name FROM t WHERE id >= 100 ORDER BY id")
        assert cur.fetchall() == [(100, "c1"), (101, None), (102, "x,y"), (103, None)]


def test_intervals_and_column_sizes(conn):
    # RowDescription carries pg_type.typlen (psycopg's internal_size), as PostgreSQL's does.
    with conn.cursor() as cur:
        cur.execute("SELECT 1::int4 AS a, 2::int8 AS b, 'x'::text AS c, "
                    "interval '1 day 02:00' AS d, now() AS e")
        assert [c.internal_size for c in cur.description] == [4, 8, None, 16, 8]
        # timedelta parameters (psycopg's text "1 day 2:00:00" and "-1 day 23:59:58.500000")
        # are read as PostgreSQL reads them; results load back as the same timedelta.
        cur.execute("CREATE TABLE spans_py (id int PRIMARY KEY, d interval)")
        cur.execute("INSERT INTO spans_py VALUES (%s, %s), (%s, %s)",
                    (1, datetime.timedelta(days=1, hours=2),
                     2, datetime.timedelta(seconds=-1.5)), prepare=True)
        cur.execute("SELECT d, d::text FROM spans_py ORDER BY id")
        assert cur.fetchall() == [
            (datetime.timedelta(days=1, hours=2), "1 day 02:00:00"),
            (datetime.timedelta(seconds=-1.5), "-1 days +23:59:58.5"),
        ]
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id FROM spans_py WHERE d > %s ORDER BY id",
                    (datetime.timedelta(hours=25),))
        assert cur.fetchall() == [(1,)]


def main():
    server = Server()
    passed = failed = 0
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            for test in [test_prepared_parameters, test_binary_results, test_errors,
                         test_transaction_abort, test_copy,
                         test_text_timestamps_in_the_session_zone,
                         test_intervals_and_column_sizes]:
                try:
                    test(conn)
                    passed += 1
                    print(f"test {test.__name__} ... ok")
                except Exception:
                    failed += 1
                    print(f"test {test.__name__} ... FAILED")
                    traceback.print_exc()
    finally:
        server.stop()
    print(f"psycopg: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
