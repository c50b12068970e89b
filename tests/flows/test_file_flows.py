"""File sets through the flows: round trips, uploads stored once, in-place with undo, hook."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from backupflow.catalog import Catalog
from backupflow.config import Settings, use_settings
from backupflow.errors import EngineError, ParameterError, RestoreTargetError
from backupflow.filesets.contents import remove_unreferenced_content
from backupflow.filesets.undo import undo_in_place
from backupflow.models import Category
from backupflow.retention import policy_for, prune_tier
from backupflow.storage import open_tier
from flows.backup_files import backup_files
from flows.restore_files import restore_files
from tests.support.trees import make_api_tree, tree

SETS = {"config": ("config/", ".env"), "logs": ("logs/",), "uploads": ("uploads/",)}


@pytest.fixture
def files_settings(settings: Settings, tmp_path: Path) -> Settings:
    api = make_api_tree(tmp_path / "api")
    files = settings.files.model_copy(
        update={
            name: getattr(settings.files, name).model_copy(update={"root": api})
            for name in ("config", "logs", "uploads")
        }
    )
    return settings.model_copy(update={"files": files, "restore_roots": [tmp_path]})


@pytest.mark.parametrize("name", ["config", "logs", "uploads"])
def test_each_set_round_trips_with_modes_and_links(
    files_settings: Settings, tmp_path: Path, name: str
) -> None:
    api = files_settings.files.config.root
    with use_settings(files_settings):
        manifest = backup_files(file_set=name)  # type: ignore[arg-type]
        report = restore_files(file_set=name, into=str(tmp_path / "out"))  # type: ignore[arg-type]
    assert report.outcome is not None
    restored = tree(tmp_path / "out", prefixes=SETS[name])
    source = tree(api, prefixes=SETS[name])
    assert restored == source
    assert not (tmp_path / "out" / "server.js").exists()
    if name == "config":
        assert restored["config/current.json"] == ("link", "app.json")
        assert restored[".env"][1] == 0o600
    assert manifest.position["files"] == sum(1 for v in source.values() if v[0] == "file")


def test_uploads_are_stored_once_and_every_point_restores_after_retention(
    files_settings: Settings, tmp_path: Path
) -> None:
    settings = files_settings.model_copy(update={"orphan_grace_minutes": 0})
    uploads = settings.files.uploads.root / "uploads" / "2026" / "11"
    states = []
    with use_settings(settings):
        for day in range(4):
            if day == 1:
                (uploads / "only-on-day-1.png").write_bytes(os.urandom(30_000))
            if day == 2:
                (uploads / "only-on-day-1.png").unlink()
                (uploads / "new-on-day-2.png").write_bytes(os.urandom(25_000))
            manifest = backup_files(file_set="uploads")
            states.append((manifest, tree(settings.files.uploads.root, prefixes=("uploads/",))))
    primary = open_tier("primary", settings)
    content = [i for i in primary.storage.list("uploads/uploads/content/")]
    distinct = {v[2] for _m, t in states for v in t.values() if v[0] == "file"}
    assert len(content) == len(distinct)  # each distinct content once, four backups
    total_files = sum(m.position["bytes"] for m, _t in states)
    stored = sum(i.size for i in content)
    assert stored < total_files / 3

    later = datetime.now(UTC) + timedelta(days=31)
    policy = policy_for(settings, "primary", Category.UPLOADS)
    _plan, report = prune_tier(
        primary, Category.UPLOADS, "uploads", policy, now=later, dry_run=False
    )
    assert report is not None and len(report.deleted) == 2
    removed = remove_unreferenced_content(
        primary.storage,
        Category.UPLOADS,
        "uploads",
        now=datetime.now(UTC),
        grace=timedelta(0),
        keyring=primary.keyring,
    )
    assert len(removed) == 1  # only-on-day-1.png's content, which no kept backup lists
    kept = [e.id for e in Catalog(primary.storage).entries(Category.UPLOADS, "uploads")]
    with use_settings(settings):
        for manifest, expected in states:
            if manifest.id not in kept:
                continue
            out = tmp_path / f"out-{manifest.id}"
            restore_files(
                file_set="uploads",
                target_time=manifest.restore_point,
                into=str(out),
                source="primary",
            )
            assert tree(out, prefixes=("uploads/",)) == expected


def test_in_place_restore_keeps_the_current_files_aside_and_can_be_undone(
    files_settings: Settings,
) -> None:
    api = files_settings.files.config.root
    with use_settings(files_settings):
        backup_files(file_set="config")
        at_backup = tree(api, prefixes=SETS["config"])
        (api / "config" / "app.json").write_text('{"port": 9999}\n')  # a bad edit
        (api / "config" / "extra.json").write_text("{}")
        (api / ".env").unlink()
        broken = tree(api, prefixes=SETS["config"])
        dry = restore_files(file_set="config", in_place=True, dry_run=True)
        assert dict(dry.changes)["config/app.json"] == "replace"
        assert dict(dry.changes)[".env"] == "create"
        assert tree(api, prefixes=SETS["config"]) == broken  # a dry run writes nothing

        report = restore_files(file_set="config", in_place=True)
    assert report.outcome is not None
    restored = tree(api, prefixes=SETS["config"])
    assert {k: v for k, v in restored.items() if k != "config/extra.json"} == at_backup
    assert restored["config/extra.json"] == broken["config/extra.json"]  # not ours: untouched
    [aside] = report.outcome.kept_aside
    undo_in_place(aside, api)
    assert tree(api, prefixes=SETS["config"]) == broken


def test_post_restore_hook_gets_its_arguments_and_a_failure_is_reported(
    files_settings: Settings, tmp_path: Path
) -> None:
    record = tmp_path / "hook.txt"
    script = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))"
    ok = files_settings.files.model_copy(
        update={
            "post_restore_hook": [
                sys.executable,
                "-c",
                script,
                str(record),
                "reload",
                "ecosystem.config.js",
                "--env",
                "production",
            ],
            "post_restore_cwd": tmp_path,
        }
    )
    settings = files_settings.model_copy(update={"files": ok})
    with use_settings(settings):
        backup_files(file_set="config")
        report = restore_files(file_set="config", in_place=True)
    assert report.hook is not None and report.hook.ok
    assert record.read_text() == "reload ecosystem.config.js --env production"

    failing = ok.model_copy(
        update={
            "post_restore_hook": [
                sys.executable,
                "-c",
                "import sys; print('pm2 down'); sys.exit(3)",
            ]
        }
    )
    (settings.files.config.root / "config" / "app.json").write_text("{}")
    with (
        use_settings(settings.model_copy(update={"files": failing})),
        pytest.raises(EngineError, match="exit code 3") as caught,
    ):
        restore_files(file_set="config", in_place=True)
    assert "pm2 down" in str(caught.value)
    assert '"port": 8080' in (settings.files.config.root / "config" / "app.json").read_text()


def test_restore_into_a_non_empty_folder_is_refused(
    files_settings: Settings, tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with use_settings(files_settings):
        backup_files(file_set="logs")
        with pytest.raises(RestoreTargetError, match="not empty"):
            restore_files(file_set="logs", into=str(busy))
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "mine"


def test_an_upload_deleted_during_the_backup_leaves_a_restorable_backup(
    files_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backupflow.filesets.contents as filebackup

    uploads = files_settings.files.uploads.root / "uploads" / "2026" / "11"
    victim = uploads / "chart-3.png"
    real_store = filebackup.store_contents

    def delete_then_store(*args: object, **kwargs: object) -> object:
        victim.unlink()  # deleted between the scan and the copy of its content
        return real_store(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(filebackup, "store_contents", delete_then_store)
    with use_settings(files_settings):
        manifest = backup_files(file_set="uploads")
        report = restore_files(file_set="uploads", into=str(tmp_path / "out"))
    assert any("vanished" in note and "chart-3.png" in note for note in manifest.notes)
    assert report.outcome is not None
    restored = tree(tmp_path / "out", prefixes=("uploads/",))
    assert restored == tree(files_settings.files.uploads.root, prefixes=("uploads/",))


def test_undo_puts_back_entries_whose_type_the_restore_changed(
    files_settings: Settings,
) -> None:
    api = files_settings.files.config.root
    with use_settings(files_settings):
        backup_files(file_set="config")
        shutil.rmtree(api / "config" / "env")
        (api / "config" / "env").write_text("now a file")  # folder -> file
        broken = tree(api, prefixes=("config/", ".env"))
        report = restore_files(file_set="config", in_place=True)
    assert report.outcome is not None
    assert (api / "config" / "env").is_dir()
    undo_in_place(report.outcome.kept_aside[0], api)
    assert tree(api, prefixes=("config/", ".env")) == broken


# -- issue 12, class 10: deployment parameters are checked like the CLI's options -------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_place": True, "into": "/tmp/x"}, "not both"),
        ({"into": "relative/out"}, "absolute"),
        ({"into": "/etc/backupflow-test"}, "allowed restore folder"),
        (
            {"target_time": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
            "out of range",
        ),
        (
            {"target_time": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
            "out of range",
        ),
    ],
    ids=[
        "in-place-and-into",
        "relative-into",
        "into-outside-roots",
        "year-1",
        "year-9999",
    ],
)
def test_class10_conflicting_or_unsafe_parameters_are_refused_before_anything_runs(
    files_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, object],
    match: str,
) -> None:
    api = files_settings.files.config.root
    monkeypatch.chdir(tmp_path)
    with use_settings(files_settings):
        backup_files(file_set="config")
        before = tree(tmp_path)
        with pytest.raises(ParameterError, match=match) as caught:
            restore_files(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert tree(tmp_path) == before  # nothing restored, not even in the working folder
    assert not (tmp_path / "relative").exists()
    assert (api / "config" / "app.json").exists()


def test_class2_a_dry_run_of_a_hostile_backup_is_refused_not_listed(
    files_settings: Settings, tmp_path: Path
) -> None:
    from backupflow.errors import IntegrityError
    from tests.support.filesets import file, link, store

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_bytes(b"guess")
    primary = open_tier("primary", files_settings).storage
    store(
        primary,
        "content",
        [link("up", ".."), file("up/outside/victim", b"guess")],
        data={"up/outside/victim": b"guess"},
    )
    api = files_settings.files.uploads.root
    before = tree(tmp_path)
    with use_settings(files_settings), pytest.raises(IntegrityError, match="below the link"):
        restore_files(file_set="uploads", in_place=True, dry_run=True)
    with use_settings(files_settings), pytest.raises(IntegrityError, match="below the link"):
        restore_files(file_set="uploads", into=str(tmp_path / "out"), dry_run=True)
    assert tree(tmp_path) == before
    assert not (api / "up").exists()


def test_an_upload_swapped_for_a_link_to_a_secret_is_not_backed_up(
    files_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write to the uploads folder replaces a listed file with a link to a
    file only the backup user can read, between the scan and the copy: the secret's content
    must not reach the tiers (anyone who can restore could read it there)."""
    import backupflow.filesets.contents as filebackup

    secret = tmp_path / "private" / "shadow"
    secret.parent.mkdir(mode=0o700)
    secret.write_bytes(b"root:SECRET-HASH-0123456789")
    victim = files_settings.files.uploads.root / "uploads" / "2026" / "11" / "chart-3.png"
    real_store = filebackup.store_contents

    def swap_then_store(*args: object, **kwargs: object) -> object:
        victim.unlink()
        victim.symlink_to(secret)  # after the scan, before its content is copied
        return real_store(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(filebackup, "store_contents", swap_then_store)
    with use_settings(files_settings):
        manifest = backup_files(file_set="uploads")
        restore_files(file_set="uploads", into=str(tmp_path / "out"))
    assert any("vanished" in note and "chart-3.png" in note for note in manifest.notes)
    restored = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"SECRET-HASH" not in restored
    import zstandard

    for path in Path(files_settings.repository.primary.url).rglob("*.zst"):
        assert b"SECRET-HASH" not in zstandard.ZstdDecompressor().decompressobj().decompress(
            path.read_bytes()
        )


def test_a_logged_file_swapped_for_another_file_is_not_read(tmp_path: Path) -> None:
    """The tar writer reads a file only if it is still the one it listed (same inode)."""
    from backupflow.filesets import open_source

    listed = tmp_path / "app.log"
    listed.write_text("listed")
    before = listed.lstat()
    secret = tmp_path / "secret"
    secret.write_text("SECRET")
    listed.unlink()
    listed.symlink_to(secret)
    with pytest.raises(FileNotFoundError, match="replaced by a link"):
        open_source(listed, before)
    listed.unlink()
    listed.write_text("another file now")
    other = tmp_path / "pad"
    other.write_text("keep the old inode from being reused")
    if listed.lstat().st_ino != before.st_ino:
        with pytest.raises(FileNotFoundError, match="replaced while being read"):
            open_source(listed, before)
    with open_source(listed) as handle:
        assert handle.read() == b"another file now"
