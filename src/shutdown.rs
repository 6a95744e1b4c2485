//! Shutdown as a value: triggered once (by a signal, a failed partition, or the end of an
//! `--until-idle` run), observed by partition threads (polling) and async tasks (awaiting).

use std::sync::Arc;

use tokio::sync::watch;

/// A shared shutdown switch; clones observe the same switch.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Shutdown {
    /// A switch that is not triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything observing the switch to finish.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once shutdown is asked for.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|t| *t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_see_the_trigger_and_waiters_wake() {
        let s = Shutdown::new();
        let c = s.clone();
        assert!(!c.is_triggered());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waiter = std::thread::spawn(move || rt.block_on(c.wait()));
        s.trigger();
        waiter.join().unwrap();
        assert!(s.is_triggered());
    }
}
