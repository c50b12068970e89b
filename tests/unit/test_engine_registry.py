"""One registry of engines: every engine the settings accept has a spec, its own fields are
part of the database settings, and generic modules never branch on an engine's name."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from backupflow.config import DatabaseSettings, Settings
from backupflow.engines.registry import ENGINES, engine_spec, open_engine
from backupflow.errors import ConfigError
from backupflow.targets import allowed_roots

CORE = Path(__file__).resolve().parents[2] / "src" / "backupflow"
GENERIC = ["targets.py", "catalog.py", "maintenance.py", "backup_run.py", "verify/tier.py"]


def test_every_engine_the_settings_accept_has_a_spec() -> None:
    names = get_args(DatabaseSettings.model_fields["engine"].annotation)
    assert list(ENGINES) == list(names)
    for spec in ENGINES.values():
        assert issubclass(DatabaseSettings, spec.fields), spec.name
        assert set(spec.fields.model_fields) <= set(DatabaseSettings.model_fields)


def test_an_unknown_engine_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"^database engine 'oracle' is not available\.$"):
        engine_spec("oracle")


@pytest.mark.parametrize(
    ("engine", "root"),
    [("sqlite", "/srv/db"), ("sqlserver", "/srv/db"), ("postgres", "/srv/pg")],
)
def test_the_live_database_folder_is_the_engines_restore_root(engine: str, root: str) -> None:
    database = DatabaseSettings(
        engine=engine,  # type: ignore[arg-type]
        sqlite_path=Path("/srv/db/app.db"),
        pg_data_dir=Path("/srv/pg/data"),
    )
    assert allowed_roots(Settings(database=database))[0] == Path(root)


def test_open_engine_builds_the_named_engine(tmp_path: Path) -> None:
    settings = Settings(database=DatabaseSettings(sqlite_path=tmp_path / "app.db"))
    assert open_engine(settings).name == "sqlite"


@pytest.mark.parametrize("module", GENERIC)
def test_generic_modules_never_compare_an_engine_name(module: str) -> None:
    tree = ast.parse((CORE / module).read_text(encoding="utf-8"))
    literals = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not literals & set(ENGINES), module
