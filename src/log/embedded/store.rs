//! The redb database behind a data dir, opened for writing (`ordo run`, `produce`, the
//! `--apply` tools) or read-only (`state`, `export`, `replay`, the `repartition` dry run): a
//! read-only open never writes to the file, so a command that only reads cannot make a damaged
//! file worse (redb repairs a file on a writable open).

use std::path::Path;

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction};

use super::{LogError, store};

/// The database, writable or not.
pub(super) enum Store {
    Writer(Database),
    Reader(ReadOnlyDatabase),
}

impl Store {
    /// A read transaction.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, LogError> {
        match self {
            Store::Writer(db) => db.begin_read(),
            Store::Reader(db) => db.begin_read(),
        }
        .map_err(store("begin read"))
    }

    /// A write transaction; refused on a read-only open.
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, LogError> {
        match self {
            Store::Writer(db) => db.begin_write().map_err(store("begin write")),
            Store::Reader(_) => Err(LogError::ReadOnly),
        }
    }
}

/// Refuses a file that cannot be a data dir's database before redb sees it: a zero-byte file
/// would otherwise be taken for a new, empty database.
pub(super) fn check_not_empty(dir: &Path, file: &Path) -> Result<(), LogError> {
    match std::fs::metadata(file) {
        Ok(m) if m.len() == 0 => Err(LogError::Empty {
            path: dir.to_path_buf(),
            file: file.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Opens `file` read-only.
pub(super) fn open_read_only(dir: &Path, file: &Path, cache: usize) -> Result<Store, LogError> {
    if !file.exists() {
        return Err(LogError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    check_not_empty(dir, file)?;
    Database::builder()
        .set_cache_size(cache)
        .open_read_only(file)
        .map(Store::Reader)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => LogError::InUse {
                path: dir.to_path_buf(),
            },
            other => store("open read-only")(other),
        })
}
