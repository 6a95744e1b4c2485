//! Group commit for the single store writer: a caller that finds no transaction in flight
//! becomes the leader and, until the queue is empty, writes everything queued by then in one
//! transaction, so partitions and concurrent appenders share one fsync instead of queueing for
//! the writer one by one. The others wait on their own channel (no thundering herd). Each piece
//! of work stays all-or-nothing: a transaction commits whole or not at all.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// A failed group write, as each of its members sees it: the leader's error, as text (the
/// error itself went to no one in particular).
#[derive(Debug)]
pub enum Failed {
    Shared(String),
}

type Reply<W, R> = Sender<(W, Result<R, Failed>)>;

struct Queue<W, R> {
    leader_active: bool,
    pending: Vec<(W, Reply<W, R>)>,
}

/// The queue of work waiting for the next group write; `E` is the writer's error.
pub struct GroupCommit<W, R, E> {
    queue: Mutex<Queue<W, R>>,
    _error: std::marker::PhantomData<fn() -> E>,
}

impl<W, R, E> Default for GroupCommit<W, R, E> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                leader_active: false,
                pending: Vec::new(),
            }),
            _error: std::marker::PhantomData,
        }
    }
}

impl<W, R, E: std::fmt::Display> GroupCommit<W, R, E> {
    /// Queues `work` and returns it with its result once a group write that holds it is done;
    /// `write` turns a batch of work into one result per piece, in order, all or nothing.
    pub fn submit(
        &self,
        work: W,
        write: impl Fn(&[W]) -> Result<Vec<R>, E>,
    ) -> (W, Result<R, Failed>) {
        let (tx, rx) = channel();
        let lead = {
            let mut q = self.lock();
            q.pending.push((work, tx));
            !std::mem::replace(&mut q.leader_active, true)
        };
        if lead {
            // Hands leadership back even if a write panics, so later callers can lead.
            struct Release<'a, W, R, E>(&'a GroupCommit<W, R, E>);
            impl<W, R, E> Drop for Release<'_, W, R, E> {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
                        q.leader_active = false;
                    }
                }
            }
            let _release = Release(self);
            loop {
                let batch = {
                    let mut q = self.lock();
                    if q.pending.is_empty() {
                        // Cleared under the lock, so a caller queueing now becomes the leader.
                        q.leader_active = false;
                        break;
                    }
                    std::mem::take(&mut q.pending)
                };
                let (works, senders): (Vec<W>, Vec<_>) = batch.into_iter().unzip();
                match write(&works) {
                    Ok(results) => {
                        for ((w, tx), r) in works.into_iter().zip(senders).zip(results) {
                            let _ = tx.send((w, Ok(r)));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for (w, tx) in works.into_iter().zip(senders) {
                            let _ = tx.send((w, Err(Failed::Shared(message.clone()))));
                        }
                    }
                }
            }
        }
        rx.recv()
            .expect("the leader answers every queued piece of work before it returns")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<W, R>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Work queued for the next group write.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_submitter_gets_its_own_result_and_writes_are_shared() {
        let g: Arc<GroupCommit<u32, u32, String>> = Arc::new(GroupCommit::default());
        let writes = Arc::new(AtomicUsize::new(0));
        // The first submitter leads; its write waits until the seven others have queued, so
        // they must all go in the one write after it.
        let (leading_tx, leading) = std::sync::mpsc::channel();
        let first = {
            let (g, writes) = (g.clone(), writes.clone());
            std::thread::spawn(move || {
                let (w, r) = g.submit(0, |batch| {
                    if writes.fetch_add(1, Ordering::Relaxed) == 0 {
                        leading_tx.send(()).unwrap();
                        let deadline =
                            std::time::Instant::now() + std::time::Duration::from_secs(30);
                        while g.queued() < 7 {
                            assert!(
                                std::time::Instant::now() < deadline,
                                "the others never queued"
                            );
                            std::thread::yield_now();
                        }
                    }
                    Ok(batch.iter().map(|w| w * 10).collect())
                });
                assert_eq!((w, r.unwrap()), (0, 0));
            })
        };
        leading.recv().unwrap();
        let others: Vec<_> = (1..8u32)
            .map(|i| {
                let (g, writes) = (g.clone(), writes.clone());
                std::thread::spawn(move || {
                    let (w, r) = g.submit(i, |batch| {
                        writes.fetch_add(1, Ordering::Relaxed);
                        Ok(batch.iter().map(|w| w * 10).collect())
                    });
                    assert_eq!(w, i);
                    assert_eq!(r.unwrap(), i * 10);
                })
            })
            .collect();
        for t in others {
            t.join().unwrap();
        }
        first.join().unwrap();
        assert_eq!(
            writes.load(Ordering::Relaxed),
            2,
            "eight submitters, two writes"
        );
        let (_, r) = g.submit(1, |_| Err("disk full".to_owned()));
        assert!(matches!(r, Err(Failed::Shared(m)) if m == "disk full"));
    }
}
