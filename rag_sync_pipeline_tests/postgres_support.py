"""A fresh database on the real PostgreSQL server per test module, and the environment that points
deploy/postgres/dagster.yaml at it.

The server is the machine's PostgreSQL at 127.0.0.1:5432 (trust authentication for `postgres`); override with
RAG_TEST_PG_HOST / RAG_TEST_PG_USER / RAG_TEST_PG_PASSWORD. There is no skip: a test that needs the server fails
with a message naming it when it cannot be reached.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from rag_sync_pipeline_tests.e2e_support import REPO_ROOT

PG_HOST = os.environ.get("RAG_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("RAG_TEST_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("RAG_TEST_PG_PASSWORD", "")
POSTGRES_INSTANCE_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"


def connect(database: str = "postgres"):
    try:
        connection = psycopg2.connect(host=PG_HOST, port=5432, user=PG_USER, password=PG_PASSWORD,
                                      dbname=database, connect_timeout=10)
    except psycopg2.OperationalError as error:
        raise AssertionError(f"PostgreSQL at {PG_HOST}:5432 (user {PG_USER}) cannot be reached: {error}") from error
    connection.autocommit = True
    return connection


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database, dropped (with its connections) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def postgres_home(directory: Path) -> Path:
    """A DAGSTER_HOME holding the production instance configuration, unchanged."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(POSTGRES_INSTANCE_YAML, directory / "dagster.yaml")
    return directory


def instance_environment(database: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/postgres/dagster.yaml reads."""
    return {"DAGSTER_PG_USERNAME": PG_USER, "DAGSTER_PG_PASSWORD": PG_PASSWORD, "DAGSTER_PG_HOST": PG_HOST,
            "DAGSTER_PG_DB": database}


def query(database: str, statement: str, parameters: tuple = ()) -> list[dict[str, Any]]:
    connection = connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, parameters)
            columns = [c.name for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()
