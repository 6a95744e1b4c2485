//! Progress of a long run (a replay, a change of N) on stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of a long run on stderr: a rewritten line on a terminal, a line every few seconds
/// otherwise.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    last: Instant,
    tty: bool,
}

impl Progress {
    /// Progress over `total` units of `what` (0: not known).
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress {
            what,
            total,
            done: 0,
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Counts `n` more units done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        if self.total == 0 {
            // A total not known up front: the count alone.
            match self.tty {
                true => eprint!("\r{} {} records", self.what, self.done),
                false => eprintln!("ordo: {}: {} records", self.what, self.done),
            }
            return;
        }
        let pct = self.done as f64 * 100.0 / self.total as f64;
        if self.tty {
            let filled = (pct / 5.0) as usize;
            eprint!(
                "\r{} [{}{}] {}/{} ({pct:.0}%)",
                self.what,
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20)),
                self.done,
                self.total
            );
        } else {
            eprintln!(
                "ordo: {}: {}/{} ({pct:.0}%)",
                self.what, self.done, self.total
            );
        }
    }

    /// Ends the progress display.
    pub fn finish(&self) {
        if self.tty {
            self.print();
            eprintln!();
        }
    }
}
