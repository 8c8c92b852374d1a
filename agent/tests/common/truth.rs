//! Ground truth taken in the same window as the number under test, instead of a
//! fixed band that a slow or loaded machine breaks: a kernel counter (a cgroup's
//! `cpu.stat`, `io.stat`) read every few milliseconds while cgscope measures, and
//! the range its rate can have had over any window of cgscope's length in that time.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Reads a counter on a thread of its own until [`Recorder::finish`].
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, f64)>>,
}

/// The readings of a [`Recorder`]: (when, value).
pub struct Trace {
    pub samples: Vec<(Instant, f64)>,
}

impl Recorder {
    /// Starts reading `read` every `every` (readings that fail are left out).
    pub fn start(every: Duration, read: impl Fn() -> Option<f64> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            loop {
                let done = stopped.load(Ordering::Relaxed);
                if let Some(v) = read() {
                    samples.push((Instant::now(), v));
                }
                if done {
                    return samples;
                }
                std::thread::sleep(every);
            }
        });
        Self { stop, thread }
    }

    /// Takes a last reading and returns them all.
    pub fn finish(self) -> Trace {
        self.stop.store(true, Ordering::Relaxed);
        Trace {
            samples: self.thread.join().expect("the recorder thread"),
        }
    }
}

impl Trace {
    /// The least and the most a counter that never goes down can have grown per
    /// second over any window of `length` between the first and the last reading.
    /// Exact bounds: a window that starts between readings `i` and `i+1` grew at
    /// least from `i+1` to the last reading before its earliest possible end, and at
    /// most from `i` to the first reading after its latest possible end. `None` if
    /// the readings span less than `length`.
    pub fn rate_range(&self, length: Duration) -> Option<(f64, f64)> {
        let s = &self.samples;
        let (first, last) = (s.first()?.0, s.last()?.0);
        if last.duration_since(first) < length {
            return None;
        }
        let secs = length.as_secs_f64();
        let (mut low, mut high) = (f64::INFINITY, 0f64);
        for i in 0..s.len() - 1 {
            let (start, next) = (s[i].0, s[i + 1].0);
            if start + length > last {
                break;
            }
            // The latest start in this gap whose window still ends by the last reading.
            let latest = next.min(last - length);
            let below = s.iter().rev().find(|(t, _)| *t <= start + length)?;
            let above = s.iter().find(|(t, _)| *t >= latest + length)?;
            low = low.min((below.1 - s[i + 1].1).max(0.0) / secs);
            high = high.max((above.1 - s[i].1) / secs);
        }
        low.is_finite().then_some((low, high))
    }

    /// [`Self::rate_range`] over every length from 85 % to 105 % of `window`: cgscope
    /// divides by each cgroup's own span between its two reads, which is its window
    /// give or take a scan (tenths of a second under emulation).
    pub fn rate_range_near(&self, window: Duration) -> Option<(f64, f64)> {
        let (low, high) = (85..=105)
            .filter_map(|pct| self.rate_range(window.mul_f64(f64::from(pct) / 100.0)))
            .fold((f64::INFINITY, 0f64), |(l, h), (a, b)| (l.min(a), h.max(b)));
        low.is_finite().then_some((low, high))
    }

    /// The longest gap between two readings (the bounds are that much loose).
    pub fn widest_gap(&self) -> Duration {
        self.samples
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].0))
            .max()
            .unwrap_or_default()
    }
}

/// A key's value in a flat-keyed cgroup file (`cpu.stat`: `usage_usec 1234`).
pub fn flat_key(path: &std::path::Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A key's value on device `dev`'s line of `io.stat` (`254:0 rbytes=.. rios=..`).
pub fn io_stat(path: &std::path::Path, dev: &str, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(dev))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Counter `name` of the `Tcp:` lines of `/proc/<pid>/net/snmp`: the network
/// namespace `pid` is in, as its own stack counts (`ActiveOpens`, `OutRsts`, ...).
pub fn tcp_counter(pid: impl std::fmt::Display, name: &str) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).expect("net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp names"),
        tcp.next().expect("Tcp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == name).then(|| v.parse().expect("a counter")))
        .unwrap_or_else(|| panic!("no Tcp {name} in net/snmp"))
}

/// The node's busy CPU time so far, in CPUs × seconds: `/proc/stat`'s first line
/// without idle and iowait (guest time is already in user), in USER_HZ (100) ticks.
pub fn host_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy / 100.0)
}

/// The number of CPUs `/proc/stat` lists (the node's, not this process's allowance).
pub fn host_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|t| {
            t.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
}
