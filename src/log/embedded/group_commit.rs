//! Group commit for the single store writer: a caller that finds no transaction in flight
//! becomes the leader and, until the queue is empty, writes everything queued by then in one
//! transaction, so partitions and concurrent appenders share one fsync instead of queueing for
//! the writer one by one. The others wait on their own channel (no thundering herd). Each piece
//! of work stays all-or-nothing: a transaction commits whole or not at all.
//!
//! An async caller (the HTTP gateway) queues its work with [`GroupCommit::enqueue`] and awaits
//! the answer on its task: it takes no thread while it waits, and only when it finds no leader
//! does it hand the leader's loop ([`GroupCommit::lead`]) to a blocking thread.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

/// A failed group write, as each of its members sees it: the leader's error, as text (the
/// error itself went to no one in particular).
#[derive(Debug)]
pub enum Failed {
    Shared(String),
}

/// Where a piece of work's answer goes: a thread blocked on it, or an async task.
enum Reply<W, R> {
    Thread(Sender<(W, Result<R, Failed>)>),
    Task(tokio::sync::oneshot::Sender<(W, Result<R, Failed>)>),
}

impl<W, R> Reply<W, R> {
    fn send(self, answer: (W, Result<R, Failed>)) {
        // A caller that stopped waiting (a dropped HTTP request) needs no answer.
        let _ = match self {
            Reply::Thread(tx) => tx.send(answer).map_err(|_| ()),
            Reply::Task(tx) => tx.send(answer).map_err(|_| ()),
        };
    }
}

/// What [`GroupCommit::enqueue`] gives back: the answer to await and whether the caller must
/// have [`GroupCommit::lead`] run (no leader was active, so nothing else will write it).
pub struct Queued<W, R> {
    pub answer: tokio::sync::oneshot::Receiver<(W, Result<R, Failed>)>,
    pub lead: bool,
}

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
        if self.push(work, Reply::Thread(tx)) {
            self.lead(write);
        }
        rx.recv()
            .expect("the leader answers every queued piece of work before it returns")
    }

    /// Queues `work` for an async caller. When [`Queued::lead`] is set, the caller must run
    /// [`GroupCommit::lead`] (on a thread that may block) for the answer to come.
    pub fn enqueue(&self, work: W) -> Queued<W, R> {
        let (tx, answer) = tokio::sync::oneshot::channel();
        let lead = self.push(work, Reply::Task(tx));
        Queued { answer, lead }
    }

    /// Queues `work`; whether the caller became the leader.
    fn push(&self, work: W, reply: Reply<W, R>) -> bool {
        let mut q = self.lock();
        q.pending.push((work, reply));
        !std::mem::replace(&mut q.leader_active, true)
    }

    /// The leader's loop: writes everything queued, one group at a time, until the queue is
    /// empty; then the next caller to queue leads. Only for a caller that became the leader.
    pub fn lead(&self, write: impl Fn(&[W]) -> Result<Vec<R>, E>) {
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
            let (works, replies): (Vec<W>, Vec<_>) = batch.into_iter().unzip();
            match write(&works) {
                Ok(results) => {
                    for ((w, reply), r) in works.into_iter().zip(replies).zip(results) {
                        reply.send((w, Ok(r)));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for (w, reply) in works.into_iter().zip(replies) {
                        reply.send((w, Err(Failed::Shared(message.clone()))));
                    }
                }
            }
        }
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

    /// An async caller leads only when no one does; one that finds work queued joins its
    /// group, and leadership is handed back once the queue is empty.
    #[test]
    fn an_async_caller_leads_only_when_no_one_does() {
        let g: GroupCommit<u32, u32, String> = GroupCommit::default();
        let first = g.enqueue(1);
        let second = g.enqueue(2);
        assert!(first.lead, "no leader was active");
        assert!(!second.lead, "the first caller leads");
        let writes = AtomicUsize::new(0);
        g.lead(|batch| {
            writes.fetch_add(1, Ordering::Relaxed);
            Ok(batch.iter().map(|w| w * 10).collect())
        });
        assert_eq!(writes.load(Ordering::Relaxed), 1, "both in one write");
        let (w, r) = first.answer.blocking_recv().unwrap();
        assert_eq!((w, r.unwrap()), (1, 10));
        let (w, r) = second.answer.blocking_recv().unwrap();
        assert_eq!((w, r.unwrap()), (2, 20));
        let third = g.enqueue(3);
        assert!(third.lead, "leadership was handed back");
        g.lead(|_| Err("disk full".to_owned()));
        let (_, r) = third.answer.blocking_recv().unwrap();
        assert!(matches!(r, Err(Failed::Shared(m)) if m == "disk full"));
    }
}
