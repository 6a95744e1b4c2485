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

    #[tokio::test]
    async fn callers_arriving_during_a_round_share_the_next_one_not_that_one() {
        let rounds = Arc::new(Rounds::<u32, ()>::default());
        let asked = Arc::new(AtomicU32::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        // The first caller's round is held open until released.
        let first = {
            let (rounds, asked) = (rounds.clone(), asked.clone());
            tokio::spawn(async move {
                rounds
                    .get(|| async move {
                        let round = asked.fetch_add(1, Ordering::SeqCst) + 1;
                        released.await.expect("released");
                        Ok::<_, ()>(round)
                    })
                    .await
            })
        };
        tickets_reach(&rounds, 2).await; // its arrival and its round's start
        let mut later = Vec::new();
        for _ in 0..5 {
            let (rounds, asked) = (rounds.clone(), asked.clone());
            later.push(tokio::spawn(async move {
                rounds
                    .get(|| async move { Ok::<_, ()>(asked.fetch_add(1, Ordering::SeqCst) + 1) })
                    .await
            }));
        }
        tickets_reach(&rounds, 7).await; // all five have arrived, during round 1
        release.send(()).expect("round 1 waits");
        assert_eq!(first.await.unwrap(), Ok(1));
        for caller in later {
            assert_eq!(
                caller.await.unwrap(),
                Ok(2),
                "a round begun before it arrived"
            );
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "five callers, one round");
    }

    #[tokio::test]
    async fn a_failed_round_fails_the_callers_it_serves_and_the_next_asks_again() {
        let rounds = Arc::new(Rounds::<u32, &str>::default());
        let asked = Arc::new(AtomicU32::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (rounds, asked) = (rounds.clone(), asked.clone());
            tokio::spawn(async move {
                rounds
                    .get(|| async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        released.await.expect("released");
                        Ok(1)
                    })
                    .await
            })
        };
        tickets_reach(&rounds, 2).await;
        let mut later = Vec::new();
        for _ in 0..3 {
            let (rounds, asked) = (rounds.clone(), asked.clone());
            later.push(tokio::spawn(async move {
                rounds
                    .get(|| async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        Err("down")
                    })
                    .await
            }));
        }
        tickets_reach(&rounds, 5).await;
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
