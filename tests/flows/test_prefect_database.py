"""The embedded Prefect server on a user's machine whose Prefect home a newer Prefect migrated.

Before: the temporary server failed in its migrations ("Can't locate revision"), and the
command waited out Prefect's start-up timeout (180 s) to print only "Timed out while
attempting to connect to ephemeral Prefect API server".
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from agir_retrain.flows.prefect_database import (
    EmbeddedDatabase,
    check_database,
    database_revision,
    embedded_database,
    known_revisions,
)
from agir_retrain.tasks.errors import ConfigError

FUTURE = "f0e1d2c3b4a5"  # a revision id no Prefect 3.8 migration has
DATA = Path(__file__).parents[1] / "data"


def _stamp(path: Path, revision: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        db.commit()


def _stamped_copy(template: Path, folder: Path, revision: str = FUTURE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "prefect.db"
    shutil.copyfile(template, target)
    _stamp(target, revision)
    return target


@pytest.fixture
def user(monkeypatch, tmp_path) -> Path:
    """A user with no Prefect settings of their own: HOME and the cache in tmp_path."""
    for name in list(os.environ):
        if name == "PREFECT_HOME" or (name.startswith("PREFECT_") and "DATABASE" in name):
            monkeypatch.delenv(name)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGIR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


class TestWhichDatabase:
    def test_the_projects_own_unless_the_user_chose_one(self, user, monkeypatch):
        ours = embedded_database()
        assert ours.ours
        assert ours.sqlite_path == user / "cache" / "prefect" / "prefect.db"

        monkeypatch.setenv("PREFECT_HOME", str(user / "prefect-home"))
        theirs = embedded_database()
        assert (theirs.ours, theirs.sqlite_path) == (False, user / "prefect-home" / "prefect.db")

        monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://h/db")
        assert embedded_database() == EmbeddedDatabase(url="postgresql+asyncpg://h/db", ours=False)
        assert embedded_database().sqlite_path is None

    def test_this_prefects_revisions_are_read_from_its_migrations(self):
        revisions = known_revisions()
        assert len(revisions) > 100  # one per migration since Prefect 2
        assert FUTURE not in revisions


class TestCheck:
    def test_a_database_a_newer_prefect_migrated_is_refused_in_one_line(
        self, prefect_database_template, tmp_path
    ):
        path = _stamped_copy(prefect_database_template, tmp_path / "theirs")
        with pytest.raises(ConfigError) as info:
            check_database(EmbeddedDatabase(url=f"sqlite+aiosqlite:///{path}", ours=False))
        message = str(info.value)
        assert "\n" not in message
        assert str(path) in message
        assert f"revision {FUTURE!r} is unknown to Prefect 3." in message
        assert "PREFECT_API_URL" in message
        assert "leave PREFECT_HOME" in message

        ours = _stamped_copy(prefect_database_template, tmp_path / "ours")
        with pytest.raises(ConfigError, match="remove it"):
            check_database(EmbeddedDatabase(url=f"sqlite+aiosqlite:///{ours}", ours=True))

    def test_what_this_prefect_can_open_passes(self, prefect_database_template, tmp_path):
        current = database_revision(prefect_database_template)
        assert current in known_revisions()
        older = _stamped_copy(prefect_database_template, tmp_path / "older", "f92143d30c24")
        assert "f92143d30c24" in known_revisions()  # an older migration: the server upgrades it
        not_prefect = tmp_path / "empty.db"
        sqlite3.connect(not_prefect).close()
        for url in (
            f"sqlite+aiosqlite:///{prefect_database_template}",
            f"sqlite+aiosqlite:///{older}",
            f"sqlite+aiosqlite:///{not_prefect}",
            f"sqlite+aiosqlite:///{tmp_path / 'missing.db'}",
            "postgresql+asyncpg://user@host/prefect",
        ):
            check_database(EmbeddedDatabase(url=url, ours=False))  # no error


def _subprocess_env(user: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") or k == "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    }
    return (
        env
        | {
            "HOME": str(user / "home"),
            "AGIR_CACHE_DIR": str(user / "cache"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        | extra
    )


@pytest.mark.integration
@pytest.mark.slow
def test_the_command_says_what_is_wrong_at_once(prefect_database_template, tmp_path):
    """A PREFECT_HOME the user chose, migrated by a newer Prefect: one line, exit 2, no wait."""
    home = tmp_path / "prefect-home"
    _stamped_copy(prefect_database_template, home)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "agir_retrain.flows.cli", "dataset", str(DATA / "v4_kib.json"),
         "--out", str(tmp_path / "out"), "--base-model", "builtin:tiny"],
        env=_subprocess_env(tmp_path, PREFECT_HOME=str(home)),
        capture_output=True, text=True, timeout=170,  # under Prefect's 180 s start-up wait
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines[-1].startswith("error: the Prefect database "), lines[-5:]
    assert f"{home / 'prefect.db'} was migrated by a newer Prefect" in lines[-1]
    assert "Traceback" not in result.stderr
    assert elapsed < 60, elapsed  # the interpreter and imports; no server was waited for
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_a_newer_prefect_home_does_not_stop_the_embedded_server(
    prefect_database_template, tmp_path
):
    """The user's ~/.prefect was migrated by a newer Prefect; PREFECT_HOME is not set."""
    theirs = _stamped_copy(prefect_database_template, tmp_path / "home" / ".prefect")
    # Our database, already migrated (a first start migrates it: ~25 s more).
    (tmp_path / "cache" / "prefect").mkdir(parents=True)
    shutil.copyfile(prefect_database_template, tmp_path / "cache" / "prefect" / "prefect.db")
    probe = (
        "import urllib.request\n"
        "from agir_retrain.flows.runtime import prefect_api\n"
        "with prefect_api() as url:\n"
        "    print(urllib.request.urlopen(url + '/health', timeout=10).status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=_subprocess_env(tmp_path),
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "200"
    assert database_revision(theirs) == FUTURE  # the user's database was not touched
