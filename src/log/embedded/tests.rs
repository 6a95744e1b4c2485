//! Unit tests of the embedded log.
use super::*;

fn rec(key: &str, value: &str) -> NewRecord {
    NewRecord {
        key: key.into(),
        value: value.into(),
        timestamp: 7,
        headers: vec![("h".into(), "v".into())],
    }
}

fn opts(n: u32) -> OpenOptions {
    OpenOptions {
        partitions: PartitionCount::new(n),
        create: true,
        ..OpenOptions::default()
    }
}

#[test]
fn append_read_and_offsets_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), opts(2)).unwrap();
    let offsets = log
        .append(
            Role::Events,
            vec![
                (Partition(0), rec("a", "1")),
                (Partition(1), rec("b", "2")),
                (Partition(0), rec("c", "3")),
            ],
        )
        .unwrap();
    assert_eq!(offsets, [0, 0, 1].map(Offset));
    let offsets = log
        .append(Role::Events, vec![(Partition(0), rec("d", "4"))])
        .unwrap();
    assert_eq!(offsets, [Offset(2)]);
    let read = log.read(Role::Events, Partition(0), Offset(1), 10).unwrap();
    assert_eq!(
        read.iter()
            .map(|r| (r.offset, r.key.clone()))
            .collect::<Vec<_>>(),
        vec![(Offset(1), b"c".to_vec()), (Offset(2), b"d".to_vec())]
    );
    assert_eq!(read[0].headers, vec![("h".to_owned(), "v".to_owned())]);
    assert_eq!(
        log.end_offset(Role::Events, Partition(0)).unwrap(),
        Offset(3)
    );
    assert_eq!(
        log.end_offset(Role::Events, Partition(1)).unwrap(),
        Offset(1)
    );
    assert_eq!(
        log.end_offset(Role::State, Partition(1)).unwrap(),
        Offset(0)
    );
}

#[test]
fn reopening_checks_n_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), opts(4)).unwrap();
        log.append(Role::Events, vec![(Partition(3), rec("a", "1"))])
            .unwrap();
    }
    let err = EmbeddedLog::open(dir.path(), opts(6)).unwrap_err();
    assert!(matches!(
        err,
        LogError::PartitionMismatch {
            stored: 4,
            requested: 6,
            ..
        }
    ));
    assert!(err.to_string().contains("ordo repartition"), "{err}");
    let log = EmbeddedLog::open(dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(log.partitions().get(), 4);
    assert_eq!(
        log.end_offset(Role::Events, Partition(3)).unwrap(),
        Offset(1)
    );
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedLog::open(dir.path(), opts(1)).unwrap();
    let err = EmbeddedLog::open(dir.path(), opts(1)).unwrap_err();
    assert!(matches!(err, LogError::InUse { .. }), "{err:?}");
}

#[test]
fn missing_dir_is_not_created_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedLog::open(&dir.path().join("nope"), OpenOptions::default()).unwrap_err();
    assert!(matches!(err, LogError::NotFound { .. }));
}

#[test]
fn epochs_grow_and_commit_moves_position_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), opts(1)).unwrap();
    let m1 = log.begin_epoch(Partition(0), "a", Epoch(0)).unwrap();
    let m2 = log.begin_epoch(Partition(0), "b", Epoch(0)).unwrap();
    assert!(m2.epoch > m1.epoch);
    let m3 = log.begin_epoch(Partition(0), "c", Epoch(10)).unwrap();
    assert_eq!(m3.epoch, Epoch(11));
    let (_, r) = log.commit(
        Partition(0),
        Effects {
            state: vec![(b"k".to_vec(), b"{}".to_vec())],
            dead_letters: vec![rec("x", "bad")],
        },
        Offset(5),
    );
    r.unwrap();
    assert_eq!(log.position(Partition(0)).unwrap(), Offset(5));
    assert_eq!(
        log.end_offset(Role::State, Partition(0)).unwrap(),
        Offset(4)
    );
    assert_eq!(
        log.end_offset(Role::DeadLetters, Partition(0)).unwrap(),
        Offset(1)
    );
    let m4 = log.begin_epoch(Partition(0), "d", Epoch(0)).unwrap();
    assert_eq!(m4.resume_offset, Offset(5));
}

#[test]
fn a_read_only_open_never_writes_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), opts(2)).unwrap();
        log.append(Role::Events, vec![(Partition(1), rec("a", "1"))])
            .unwrap();
    }
    let before = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    let log = EmbeddedLog::open(dir.path(), OpenOptions::reading()).unwrap();
    assert_eq!(log.partitions().get(), 2);
    assert_eq!(
        log.end_offset(Role::Events, Partition(1)).unwrap(),
        Offset(1)
    );
    let refused = log
        .append(Role::Events, vec![(Partition(0), rec("b", "2"))])
        .unwrap_err();
    assert!(refused.to_string().contains("read-only"), "{refused}");
    drop(log);
    assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), before);
}

#[test]
fn a_zero_byte_store_is_refused_not_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
    for options in [opts(1), OpenOptions::reading()] {
        let err = EmbeddedLog::open(dir.path(), options).unwrap_err();
        assert!(err.to_string().contains("empty (0 bytes)"), "{err}");
    }
    assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap().len(), 0);
}

/// An async append whose leader the runtime never runs (it is shutting down) is still
/// written, and the writers after it (an owner's commit) are not left waiting for a leader.
#[test]
fn an_async_append_is_written_when_the_runtime_drops_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts(1)).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.shutdown_timeout(std::time::Duration::ZERO);
    let appending = {
        let _inside = handle.enter();
        log.append_async(Role::Events, vec![(Partition(0), rec("a", "1"))])
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(writer.append(Role::Events, vec![(Partition(0), rec("b", "2"))]));
    });
    let next = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("a blocking append after it was left waiting for a leader")
        .unwrap();
    assert_eq!(next, vec![Offset(1)]);
    let first = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(appending)
        .unwrap();
    assert_eq!(first, vec![Offset(0)]);
}
