//! One answer shared by the requests that need it at once ("single flight", with freshness):
//! the association lookups each need where every partition's input ends, and on Kafka that is
//! a round trip to the brokers. A request may use a round's answer only if the round began
//! after the request arrived, since the answer must cover every append made before it. So
//! requests arriving while a round is under way wait for it to end and share the next one: the
//! brokers see one round at a time however many requests wait, and each request waits for at
//! most two rounds. A round that fails fails every request it serves, with its error: asking
//! again, one request after another, would make the last of many wait for as many timeouts.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

/// Rounds of one question; `T` is its answer, `E` its failure.
#[derive(Debug)]
pub struct Rounds<T, E> {
    /// Tickets, in the order requests arrive and rounds begin.
    tickets: AtomicU64,
    /// The last round's outcome and the ticket it began with; the lock is held while a round
    /// is under way.
    last: tokio::sync::Mutex<Option<(u64, Result<T, E>)>>,
}

impl<T, E> Default for Rounds<T, E> {
    fn default() -> Self {
        Rounds {
            tickets: AtomicU64::new(0),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone, E: Clone> Rounds<T, E> {
    /// The outcome of a round that began after this call: the one a concurrent caller started
    /// meanwhile, or one this call runs with `ask`.
    pub async fn get<F, Fut>(&self, ask: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = self.tickets.fetch_add(1, Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if let Some((began, outcome)) = last.as_ref()
            && *began > arrived
        {
            return outcome.clone();
        }
        let began = self.tickets.fetch_add(1, Ordering::SeqCst);
        // Dropped mid-round (its request gone), this leaves no outcome: the next caller asks.
        *last = None;
        let outcome = ask().await;
        *last = Some((began, outcome.clone()));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Waits (yielding, no timer) until `n` tickets have been handed out.
    async fn tickets_reach<E>(rounds: &Rounds<u32, E>, n: u64) {
        while rounds.tickets.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn callers_one_after_another_each_get_a_round_of_their_own() {
        let rounds = Rounds::<u32, ()>::default();
        let asked = AtomicU32::new(0);
        for want in 1..=3 {
            let got: Result<u32, ()> = rounds
                .get(|| async { Ok(asked.fetch_add(1, Ordering::SeqCst) + 1) })
                .await;
            assert_eq!(got, Ok(want));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    /// A caller whose round (answering 1) stays open until the returned sender is used; back
    /// once that round has begun.
    async fn first_round<E: Clone + Send + 'static>(
        rounds: &Arc<Rounds<u32, E>>,
        asked: &Arc<AtomicU32>,
    ) -> (
        tokio::task::JoinHandle<Result<u32, E>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (r, a) = (rounds.clone(), asked.clone());
        let first = tokio::spawn(async move {
            r.get(|| async move {
                a.fetch_add(1, Ordering::SeqCst);
                released.await.expect("released");
                Ok(1)
            })
            .await
        });
        tickets_reach(rounds, 2).await; // its arrival and its round's start
        (first, release)
    }

    /// `n` callers arriving during the round under way, each answering `answer` if it runs a
    /// round itself; back once all have arrived.
    async fn callers_during<E: Clone + Send + 'static>(
        rounds: &Arc<Rounds<u32, E>>,
        asked: &Arc<AtomicU32>,
        n: u64,
        answer: Result<u32, E>,
    ) -> Vec<tokio::task::JoinHandle<Result<u32, E>>> {
        let before = rounds.tickets.load(Ordering::SeqCst);
        let mut later = Vec::new();
        for _ in 0..n {
            let (r, a, answer) = (rounds.clone(), asked.clone(), answer.clone());
            later.push(tokio::spawn(async move {
                r.get(|| async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    answer
                })
                .await
            }));
        }
        tickets_reach(rounds, before + n).await;
        later
    }

    #[tokio::test]
    async fn callers_arriving_during_a_round_share_the_next_one_not_that_one() {
        let rounds = Arc::new(Rounds::<u32, ()>::default());
        let asked = Arc::new(AtomicU32::new(0));
        let (first, release) = first_round(&rounds, &asked).await;
        let later = callers_during(&rounds, &asked, 5, Ok(2)).await;
        release.send(()).expect("round 1 waits");
        assert_eq!(first.await.unwrap(), Ok(1));
        for caller in later {
            assert_eq!(
                caller.await.unwrap(),
                Ok(2),
                "not the round begun before it"
            );
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "five callers, one round");
    }

    #[tokio::test]
    async fn a_failed_round_fails_the_callers_it_serves_and_the_next_asks_again() {
        let rounds = Arc::new(Rounds::<u32, &str>::default());
        let asked = Arc::new(AtomicU32::new(0));
        let (first, release) = first_round(&rounds, &asked).await;
        let later = callers_during(&rounds, &asked, 3, Err("down")).await;
        release.send(()).expect("round 1 waits");
        assert_eq!(first.await.unwrap(), Ok(1));
        for caller in later {
            assert_eq!(caller.await.unwrap(), Err("down"));
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "three callers, one failed round"
        );
        // A caller after the failure asks again.
        assert_eq!(rounds.get(|| async { Ok(7) }).await, Ok(7));
    }
}
