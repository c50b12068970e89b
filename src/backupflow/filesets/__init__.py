"""File sets (configuration, application logs, user uploads): what is read, how it is stored
and how it is put back.

* :mod:`~backupflow.filesets.members`: selecting, scanning and listing a set's files;
* :mod:`~backupflow.filesets.contents`: content-addressed storage (one object per distinct
  content) and the pre-backup hook;
* :mod:`~backupflow.filesets.engine`: the dump / restore / install steps of a file set;
* :mod:`~backupflow.filesets.unpack`: unpacking a backup into scratch, verified entry by
  entry;
* :mod:`~backupflow.filesets.undo`: replacing a live folder in place (what is replaced is
  kept aside) and undoing it.

File sets are not database engines: they share the backup and restore runs, not the
database engine interface's chain rules.
"""

from __future__ import annotations

from backupflow.filesets.members import (
    FILE_SETS,
    MAX_MEMBER_LINE,
    MAX_MEMBERS,
    FileSetName,
    Member,
    ScanReport,
    content_key,
    decode_members,
    encode_members,
    hash_file,
    is_content_addressed,
    open_private,
    open_source,
    scan,
    select,
    write_tar,
)

__all__ = [
    "FILE_SETS",
    "MAX_MEMBERS",
    "MAX_MEMBER_LINE",
    "FileSetName",
    "Member",
    "ScanReport",
    "content_key",
    "decode_members",
    "encode_members",
    "hash_file",
    "is_content_addressed",
    "open_private",
    "open_source",
    "scan",
    "select",
    "write_tar",
]
