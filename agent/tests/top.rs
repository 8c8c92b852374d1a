//! `cgscope top` in a real terminal: tmux runs it, sends the keys a person would
//! and reads the screen back; `--once` (and a stdout that is not a terminal) prints
//! the same table as text. The workload is two busy loops on one CPU: one CPU's
//! worth of usage, run-queue waits for the histogram.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{
    truth::{self, Recorder},
    TestTree,
};

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// Two busy loops pinned to CPU 0 in `busy`, a sleeper in `idle`.
fn workload(name: &str) -> (TestTree, String) {
    let mut tree = TestTree::create(name);
    let busy = tree.mkdir("busy");
    tree.mkdir("idle");
    for _ in 0..2 {
        let pid = tree.spawn("busy", || {}, common::spin);
        common::pin(pid, 0);
    }
    tree.spawn("idle", || {}, common::sleep_forever);
    (tree, busy)
}

/// The CPU column of `path`'s line in a table, in percent.
fn cpu_percent(table: &str, path: &str) -> Option<f64> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(path))?;
    line.split_whitespace()
        .nth(1)?
        .trim_end_matches('%')
        .parse()
        .ok()
}

/// The window length in the summary line (`... window 2.0s`).
fn window_seconds(table: &str) -> Option<f64> {
    let rest = table.lines().next()?.rsplit_once("window ")?.1;
    rest.trim().strip_suffix('s')?.parse().ok()
}

#[test]
fn once_prints_the_table_with_the_cpu_the_cgroup_used() {
    require_root_and_cgroup_v2!();
    let _serial = common::serial();
    let (tree, busy) = workload("top-once");
    let cpu_stat = tree.top.dir.join("busy/cpu.stat");
    for args in [&["top", "--once"][..], &["top"][..]] {
        // The truth: the cgroup's own cpu.stat, read every 10 ms while top measures.
        let stat = cpu_stat.clone();
        let recorder = Recorder::start(Duration::from_millis(10), move || {
            truth::flat_key(&stat, "usage_usec")
        });
        // Not a terminal: `top` alone prints once too.
        let out = Command::new(BIN)
            .args(args)
            .args(["--interval", "2s", "--sort", "cpu"])
            .output()
            .expect("run cgscope top");
        let trace = recorder.finish();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("kernel "), "{table}");
        assert!(
            lines[1].starts_with("NAME") && lines[1].contains("CPU▼"),
            "{table}"
        );
        assert!(lines[2].starts_with(&busy), "the busiest first: {table}");
        // What the two loops got of CPU 0 in top's window, whatever else the host
        // runs: between the least and the most cpu.stat grew in any window of that
        // length while top ran (µs per second = percent × 10^4), give or take the
        // rounding of the window's length and of the percentage.
        let cpu = cpu_percent(&table, &busy).expect("busy row");
        let window = window_seconds(&table).expect("window length");
        let (low, high) = trace
            .rate_range_near(Duration::from_secs_f64(window))
            .expect("cpu.stat read over the whole window");
        let (low, high) = (low / 1e4, high / 1e4);
        let slack = 0.5 + 100.0 * 0.05 / window;
        eprintln!(
            "top: {cpu}% over {window}s; cpu.stat: {low:.1}-{high:.1}% (readings at most {:?} apart)",
            trace.widest_gap()
        );
        assert!(
            (low - slack..=high + slack).contains(&cpu),
            "{cpu}% vs cpu.stat's {low:.1}-{high:.1}% in {table}"
        );
    }
    let out = Command::new(BIN)
        .args(["top", "--once", "--sort", "nope"])
        .output()
        .expect("run cgscope top");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RTT-P99"));
}

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(width: u16, height: u16, command: &str) -> Self {
        let tmux = Self {
            socket: format!("cgscope-test-{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        assert!(self.run(&args), "send-keys {keys:?}");
    }

    fn screen(&self) -> String {
        self.capture(&[])
    }

    /// The pane's text; `-J` joins the lines the terminal wrapped at its edge.
    fn capture(&self, flags: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "top"])
            .args(flags)
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits up to 30 s for the screen to satisfy `ok`; the last screen either way.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited for {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn live_view_sorts_selects_shows_histograms_and_survives_resize() {
    require_root_and_cgroup_v2!();
    if !common::have("tmux") {
        eprintln!("skipped: no tmux (cargo xtask setup installs it)");
        return;
    }
    let _serial = common::serial();
    let (tree, busy) = workload("top-live");
    let tmux = Tmux::new(180, 40, &format!("{BIN} top --interval 1s"));
    let screen = tmux.wait_for("the busy cgroup", |s| s.contains(&busy));
    let rows: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .collect();
    assert!(rows[0].contains("CPU▼"), "{screen}");
    assert!(
        rows[1].starts_with(&busy),
        "sorted by CPU, busiest first:\n{screen}"
    );

    // Sort by the next column, then reverse it.
    tmux.keys(&[">"]);
    tmux.wait_for("THROTTLED▼", |s| s.contains("THROTTLED▼"));
    tmux.keys(&["r"]);
    tmux.wait_for("THROTTLED▲", |s| s.contains("THROTTLED▲"));
    tmux.keys(&["P"]);
    tmux.wait_for("CPU▼ again", |s| s.contains("CPU▼"));

    // The first row's details: its path and its run-queue histogram.
    tmux.keys(&["Down", "Enter"]);
    let details = tmux.wait_for("the details", |s| s.contains("run-queue latency:"));
    assert!(details.contains(&format!("cgroup {busy}")), "{details}");
    assert!(details.contains('█'), "histogram bars:\n{details}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the table again", |s| s.contains("CPU▼"));

    // Pods: none here.
    tmux.keys(&["p"]);
    tmux.wait_for("the pods view", |s| s.contains("(no pods"));
    tmux.keys(&["p"]);

    // A narrow terminal: the layout follows, nothing wraps. (The pane itself cuts
    // every line at its size: what tells is where things are and what was wrapped.)
    assert!(tmux.run(&["resize-window", "-t", "top", "-x", "70", "-y", "15"]));
    let narrow = tmux.wait_for("the narrow layout", |s| {
        s.lines().any(|l| l.starts_with("NAME")) && s.contains(&tree.top.path)
    });
    let joined = tmux.capture(&["-J"]);
    assert!(
        joined.lines().all(|l| l.chars().count() <= 70),
        "lines wrapped at the terminal's edge:\n{joined}"
    );
    let lines: Vec<&str> = narrow.lines().collect();
    assert!(lines[0].starts_with("kernel "), "{narrow}");
    assert!(lines[2].starts_with("NAME"), "{narrow}");
    // Every row below the header is a cgroup's (no wrapped continuation), up to the
    // key help on the pane's last line.
    let help = lines
        .iter()
        .position(|l| l.starts_with("↑↓: select"))
        .unwrap_or_else(|| panic!("no key help:\n{narrow}"));
    assert_eq!(help, 14, "the key help on the 15th line:\n{narrow}");
    assert!(
        lines[3..help]
            .iter()
            .all(|l| l.starts_with('/') || l.trim().is_empty()),
        "{narrow}"
    );

    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.run(&["has-session", "-t", "top"]) {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
}
