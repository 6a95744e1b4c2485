//! Opening a data dir: created with its N and partitioner, or checked against the ones asked
//! for; read-only for the commands that only read.

use std::path::Path;

use super::*;

impl EmbeddedLog {
    /// Opens (or creates) the data directory `dir`, checking N and the partitioner.
    pub fn open(dir: &Path, opts: OpenOptions) -> Result<Self, LogError> {
        Self::open_file(dir, &dir.join(DB_FILE), opts)
    }

    /// Opens (or creates) the database `file` of data directory `dir`; `ordo repartition`
    /// builds the next generation of a data dir beside the live one this way.
    pub fn open_file(dir: &Path, file: &Path, opts: OpenOptions) -> Result<Self, LogError> {
        let _ = OPENED.set(file.to_path_buf());
        let cache = opts.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
        if opts.read_only {
            let db = store::open_read_only(dir, file, cache)?;
            let (partitions, partitioner) = read_meta(&db, dir, opts)?;
            return Ok(Self {
                db,
                path: dir.to_path_buf(),
                partitions,
                partitioner,
                created: false,
                appended: Arc::new(Signal::default()),
                group_commit: GroupCommit::default(),
            });
        }
        store::check_not_empty(dir, file)?;
        if !file.exists() {
            if !opts.create {
                return Err(LogError::NotFound {
                    path: dir.to_path_buf(),
                });
            }
            std::fs::create_dir_all(dir).map_err(|source| LogError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::builder()
            .set_cache_size(cache)
            .create(file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => LogError::InUse {
                    path: dir.to_path_buf(),
                },
                other => store("open")(other),
            })?;
        let txn = db.begin_write().map_err(store("begin write"))?;
        let mut created = false;
        let (partitions, partitioner) = {
            let mut meta = txn.open_table(META).map_err(store("open meta"))?;
            let format = meta
                .get("format")
                .map_err(store("read meta"))?
                .map(|v| v.value().to_owned());
            let (partitions, partitioner) = match format.as_deref() {
                None => {
                    let n = opts
                        .partitions
                        .unwrap_or(PartitionCount::new(1).expect("1 > 0"));
                    let p = opts.partitioner.unwrap_or_default();
                    meta.insert("format", FORMAT).map_err(store("write meta"))?;
                    meta.insert("partitions", n.to_string().as_str())
                        .map_err(store("write meta"))?;
                    meta.insert("partitioner", p.name())
                        .map_err(store("write meta"))?;
                    created = true;
                    (n, p)
                }
                Some(FORMAT) => {
                    let foreign = |detail: &str| LogError::Foreign {
                        path: dir.to_path_buf(),
                        detail: detail.to_owned(),
                    };
                    let n = meta
                        .get("partitions")
                        .map_err(store("read meta"))?
                        .and_then(|v| v.value().parse().ok())
                        .and_then(PartitionCount::new)
                        .ok_or_else(|| foreign("no partition count"))?;
                    let p: Partitioner = meta
                        .get("partitioner")
                        .map_err(store("read meta"))?
                        .and_then(|v| v.value().parse().ok())
                        .ok_or_else(|| foreign("no partitioner"))?;
                    (n, p)
                }
                Some(other) => {
                    return Err(LogError::Foreign {
                        path: dir.to_path_buf(),
                        detail: format!("format {other}"),
                    });
                }
            };
            check_requested(dir, opts, partitions, partitioner)?;
            (partitions, partitioner)
        };
        for role in Role::ALL {
            txn.open_table(table(role)).map_err(store("create topic"))?;
        }
        txn.open_table(POSITIONS)
            .map_err(store("create positions"))?;
        txn.open_table(EPOCHS).map_err(store("create epochs"))?;
        txn.commit().map_err(store("commit"))?;
        Ok(Self {
            db: Store::Writer(db),
            path: dir.to_path_buf(),
            partitions,
            partitioner,
            created,
            appended: Arc::new(Signal::default()),
            group_commit: GroupCommit::default(),
        })
    }
}

/// N and the partitioner stored in a data dir opened read-only, checked against `opts`.
fn read_meta(
    db: &Store,
    dir: &Path,
    opts: OpenOptions,
) -> Result<(PartitionCount, Partitioner), LogError> {
    let foreign = |detail: &str| LogError::Foreign {
        path: dir.to_path_buf(),
        detail: detail.to_owned(),
    };
    let txn = db.begin_read()?;
    let meta = txn.open_table(META).map_err(|_| foreign("no metadata"))?;
    let get = |key: &str| -> Result<Option<String>, LogError> {
        Ok(meta
            .get(key)
            .map_err(store("read meta"))?
            .map(|v| v.value().to_owned()))
    };
    match get("format")?.as_deref() {
        Some(FORMAT) => {}
        Some(other) => return Err(foreign(&format!("format {other}"))),
        None => return Err(foreign("no format")),
    }
    let partitions = get("partitions")?
        .and_then(|v| v.parse().ok())
        .and_then(PartitionCount::new)
        .ok_or_else(|| foreign("no partition count"))?;
    let partitioner: Partitioner = get("partitioner")?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| foreign("no partitioner"))?;
    check_requested(dir, opts, partitions, partitioner)?;
    Ok((partitions, partitioner))
}

/// Refuses a data dir whose stored N or partitioner differs from what the caller asked for.
fn check_requested(
    dir: &Path,
    opts: OpenOptions,
    partitions: PartitionCount,
    partitioner: Partitioner,
) -> Result<(), LogError> {
    if let Some(requested) = opts.partitions
        && requested != partitions
    {
        return Err(LogError::PartitionMismatch {
            path: dir.to_path_buf(),
            stored: partitions.get(),
            requested: requested.get(),
        });
    }
    if let Some(requested) = opts.partitioner
        && requested != partitioner
    {
        return Err(LogError::PartitionerMismatch {
            path: dir.to_path_buf(),
            stored: partitioner,
            requested,
        });
    }
    Ok(())
}
