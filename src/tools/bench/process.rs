//! Child processes measured the same way, whatever they run: wall time from spawn to exit,
//! CPU seconds (user + system, all threads) and peak resident memory, read from
//! `/proc/<pid>/stat` and `/proc/<pid>/status` while the child runs and once it has exited
//! (a zombie still shows its CPU times until it is reaped).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one child process cost.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub wall_secs: f64,
    pub cpu_secs: f64,
    /// Peak resident set size (`VmHWM`), bytes.
    pub max_rss: u64,
    /// Its standard output.
    pub stdout: String,
}

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every architecture
/// the kernel exposes to user space.
const TICKS_PER_SEC: f64 = 100.0;

/// Runs `cmd` to its end (standard input closed), polling its figures every 10 ms. A non-zero
/// exit is an error carrying the last lines of its standard error.
pub fn measure(what: &str, mut cmd: Command) -> std::io::Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| std::io::Error::other(format!("could not start {what}: {e}")))?;
    let pid = child.id();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut m = Measured::default();
    while let Some((state, cpu)) = stat(pid) {
        m.cpu_secs = cpu;
        if state == 'Z' {
            break;
        }
        m.max_rss = m.max_rss.max(high_water(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait()?;
    m.wall_secs = t0.elapsed().as_secs_f64();
    m.stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(std::io::Error::other(format!(
            "{what} failed ({status}): {}",
            tail.join(" | ")
        )));
    }
    Ok(m)
}

/// The process state letter and its CPU seconds so far.
fn stat(pid: u32) -> Option<(char, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of what follows the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((state, (utime + stime) / TICKS_PER_SEC))
}

/// The CPU seconds process `pid` has used so far (0 once it has exited).
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |(_, cpu)| cpu)
}

/// `VmHWM` of the process, bytes (0 once it has exited).
fn high_water(pid: u32) -> u64 {
    status_bytes(&pid.to_string(), "VmHWM:")
}

/// A memory line of `/proc/<pid>/status` (`pid` may be `self`), bytes; 0 where unavailable.
pub(super) fn status_bytes(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_spins_shows_its_cpu_time_and_memory() {
        // Python spins for 0.3 s of CPU and holds 64 MiB: both must show.
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            "import time\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n\
             t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done')",
        ]);
        let m = measure("python3", cmd).expect("python3 runs");
        assert_eq!(m.stdout.trim(), "done");
        assert!(m.cpu_secs >= 0.3, "cpu {} s", m.cpu_secs);
        assert!(m.max_rss >= 64 << 20, "max rss {} bytes", m.max_rss);
        assert!(m.wall_secs >= m.cpu_secs * 0.9);
    }

    #[test]
    fn a_failing_child_is_an_error_naming_its_last_words() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo the reason >&2; exit 3"]);
        let e = measure("sh", cmd).expect_err("exit 3 fails");
        assert!(e.to_string().contains("the reason"), "{e}");
    }
}
