"""The database of the embedded Prefect server: the project's own, checked before it starts.

With no Prefect server configured, a command starts a temporary one (``runtime.prefect_api``).
Its database used to be ``$PREFECT_HOME/prefect.db``, the one every Prefect on the machine
shares: after a newer Prefect had migrated it, the server failed in its migrations ("Can't
locate revision") and the command waited for it until Prefect's start-up timeout (180 s)
and printed only "Timed out while attempting to connect to ephemeral Prefect API server".

So the embedded server keeps its runs in a database of the project's own,
``$AGIR_CACHE_DIR/prefect/prefect.db``, which no other Prefect touches, unless the user
chose one (``PREFECT_HOME`` or a database setting, in the environment, a profile or
``prefect.toml``). Whichever it is, a SQLite database stamped with a revision this Prefect
does not know is refused before the server starts, in one line that says what to do.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agir_retrain.tasks.errors import ConfigError
from agir_retrain.tasks.io import default_cache_dir

SQLITE_PREFIX = "sqlite+aiosqlite:///"
# Database settings that choose a database (the others tune the connection to it).
_CHOOSING = frozenset({"connection_url", "driver", "host", "port", "user", "name", "password"})
_REVISION = re.compile(r"""^revision\s*=\s*["']([0-9A-Za-z_]+)["']""", re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedDatabase:
    """The database the embedded server will open, and whose choice it is."""

    url: str  # a SQLAlchemy URL, as Prefect takes it
    ours: bool  # the project's own (True) or the one the user's Prefect settings name

    @property
    def sqlite_path(self) -> Path | None:
        """The file of a SQLite database (None for any other kind, or in memory)."""
        if not self.url.startswith(SQLITE_PREFIX):
            return None
        path = self.url.removeprefix(SQLITE_PREFIX).split("?", 1)[0]
        return None if not path or path.startswith(("file::memory:", ":memory:")) else Path(path)


def embedded_database() -> EmbeddedDatabase:
    """The database for a temporary server: the user's if their settings chose one, else ours."""
    from prefect.settings import Settings

    settings = Settings()  # read now: the environment may have changed since Prefect's import
    database = settings.server.database
    if "home" in settings.model_fields_set or _CHOOSING & database.model_fields_set:
        return EmbeddedDatabase(url=database.connection_url.get_secret_value(), ours=False)
    path = default_cache_dir() / "prefect" / "prefect.db"
    return EmbeddedDatabase(url=f"{SQLITE_PREFIX}{path}", ours=True)


def check_database(database: EmbeddedDatabase) -> None:
    """Refuse, in one line, a SQLite database that a newer Prefect has migrated.

    A database this Prefect cannot open would fail the server's start-up only after its
    whole timeout. Other databases (PostgreSQL) and a missing file pass: the server reports
    its own errors for those, and creates the file.

    Raises:
        ConfigError: the database's alembic revision is not one of this Prefect's migrations.
    """
    path = database.sqlite_path
    if path is None or not path.is_file():
        return
    revision = database_revision(path)
    known = known_revisions()
    if revision is None or not known or revision in known:
        return
    import prefect

    if database.ours:
        remedy = (
            "remove it (it holds only agir-retrain's local flow runs), or set PREFECT_API_URL "
            "to a running Prefect server"
        )
    else:
        remedy = (
            "set PREFECT_API_URL to a server of that Prefect, or leave PREFECT_HOME and the "
            f"database settings unset so agir-retrain uses its own database under "
            f"{default_cache_dir() / 'prefect'}"
        )
    raise ConfigError(
        f"the Prefect database {path} was migrated by a newer Prefect (revision {revision!r} "
        f"is unknown to Prefect {prefect.__version__}, which cannot open it): {remedy}"
    )


def database_revision(path: Path) -> str | None:
    """The alembic revision a SQLite database is stamped with (None: not stamped, or unreadable)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None  # not a Prefect database yet, or locked: the server will say
    return row[0] if row else None


@cache
def known_revisions() -> frozenset[str]:
    """Every revision of this Prefect's SQLite migrations (empty if they cannot be found)."""
    import prefect.server.database

    folder = Path(prefect.server.database.__file__).parent / "_migrations" / "versions" / "sqlite"
    revisions: set[str] = set()
    for migration in folder.glob("*.py"):
        revisions.update(_REVISION.findall(migration.read_text()))
    return frozenset(revisions)
