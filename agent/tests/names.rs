//! Names a container chose, as an attacker would choose them: cgroups named with
//! terminal escape sequences (OSC that sets the window title, CSI that clears the
//! screen, 8-bit CSI), a bidi override and invisible characters. Every text output
//! (`snapshot`'s table, `top --once` and its live view, playbook text and Markdown,
//! error and log lines) prints them as visible escapes and no raw control character;
//! JSON and the Prometheus exposition give the exact name back.

mod common;
#[allow(dead_code)] // the collector helpers are for the export tests
#[path = "export/peers.rs"]
mod peers;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{serial, TestTree};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cgscope");

/// Each name, and how text shows it.
const NAMES: &[(&str, &str)] = &[
    ("osc\x1b]0;pwned\x07", r"osc\x1b]0;pwned\x07"),
    ("csi\x1b[2J\x1b[31mred", r"csi\x1b[2J\x1b[31mred"),
    ("c1\u{9b}2J", r"c1\u{009b}2J"),
    ("bidi\u{202e}gnp.exe", r"bidi\u{202e}gnp.exe"),
    (
        "zw\u{200b}\u{feff}\u{2066}x",
        r"zw\u{200b}\u{feff}\u{2066}x",
    ),
    // Printable, left as it is in text; escaped by Prometheus' own rules.
    ("q\"uote\\x2d", r#"q"uote\x2d"#),
];

/// Whether `s` has a character that is not ordinary printable text: a control other
/// than the line breaks of the output itself, or a format/bidi character.
fn raw_control(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{2028}' | '\u{2029}')
    })
}

fn assert_printable(what: &str, out: &str) {
    if let Some(c) = raw_control(out) {
        panic!("{what} printed a raw {c:?}:\n{}", out.escape_debug());
    }
}

/// The hostile cgroups under one test cgroup, each with a busy loop pinned to CPU 0
/// (two loops on one CPU wait for each other: run-queue findings with neighbours).
/// A name with a newline is tried too: the kernel refuses it (cgroup_mkdir: it would
/// make /proc/PID/cgroup unparsable), which is checked, not assumed.
fn hostile_tree(name: &str) -> TestTree {
    let mut tree = TestTree::create(name);
    for (raw, _) in NAMES {
        tree.mkdir(raw);
        let pid = tree.spawn(raw, || {}, common::spin);
        common::pin(pid, 0);
    }
    let newline = tree.top.dir.join("nl\nfake");
    match std::fs::create_dir(&newline) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "mkdir with \\n: {e}"),
        Ok(()) => {
            let _ = std::fs::remove_dir(&newline);
            panic!("this kernel takes a newline in a cgroup name: add it to NAMES");
        }
    }
    tree
}

fn cgscope(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run cgscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cgscope {args:?}: {stderr}");
    assert_printable(&format!("cgscope {args:?} (stderr)"), &stderr);
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn snapshot_table_escapes_and_json_keeps_the_names() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let tree = hostile_tree("names-snap");
    let top = &tree.top.path;
    let table = cgscope(&["snapshot", "--duration", "1s", "--cgroup", top]);
    assert_printable("snapshot table", &table);
    for (_, shown) in NAMES {
        let line = format!("{top}/{shown}");
        assert!(
            table.lines().any(|l| l.ends_with(&line)),
            "{line} in\n{table}"
        );
    }

    let json = cgscope(&[
        "snapshot",
        "--duration",
        "1s",
        "--cgroup",
        top,
        "--format",
        "json",
    ]);
    let snapshot: Value = serde_json::from_str(&json).expect("snapshot JSON");
    let paths: Vec<&str> = snapshot["cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    for (raw, _) in NAMES {
        let exact = format!("{top}/{raw}");
        assert!(paths.contains(&exact.as_str()), "{exact:?} in {paths:?}");
    }
}

#[test]
fn top_once_escapes_the_names() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let _tree = hostile_tree("names-top");
    let table = cgscope(&["top", "--once", "--interval", "1s", "--sort", "name"]);
    assert_printable("top --once", &table);
    for (_, shown) in NAMES {
        // The NAME column keeps a long path's end: the name.
        assert!(
            table
                .lines()
                .any(|l| l.split(' ').next().unwrap_or("").ends_with(shown)),
            "{shown} in\n{table}"
        );
    }
}

/// The live view on a real terminal (tmux): the names as escapes on the screen, and
/// the window title the OSC sequence tries to set left alone.
#[test]
fn top_live_view_shows_escapes_and_keeps_the_title() {
    require_root_and_cgroup_v2!();
    if !common::have("tmux") {
        eprintln!("skipped: no tmux (cargo xtask setup installs it)");
        return;
    }
    let _serial = serial();
    let _tree = hostile_tree("names-live");
    let socket = format!("cgscope-names-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let command = format!("{BIN} top --interval 1s --sort name");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "250",
        "-y",
        "120",
        &command,
    ]);
    let title = || tmux(&["display-message", "-p", "-t", "top", "#{pane_title}"]);
    let before = title();
    let deadline = Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let screen = tmux(&["capture-pane", "-p", "-t", "top"]);
        if NAMES.iter().all(|(_, shown)| screen.contains(shown)) {
            break screen;
        }
        if Instant::now() > deadline {
            tmux(&["kill-server"]);
            panic!("the escaped names did not all show:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Another window drawn, then the title read again.
    std::thread::sleep(Duration::from_millis(1500));
    let after = title();
    tmux(&["send-keys", "-t", "top", "q"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["kill-server"]);
    assert!(
        !after.contains("pwned"),
        "title {before:?} became {after:?}"
    );
    assert_printable("the live view", &screen);
}

/// `/metrics` keeps the names exact in the exposition format's escaping: Prometheus
/// scrapes it and gives back the exact paths as label values; promtool parses it.
#[test]
fn prometheus_gets_the_exact_names() {
    require_root_and_cgroup_v2!();
    for tool in ["prometheus", "promtool"] {
        if !common::have(tool) {
            eprintln!("skipped: no {tool} (cargo xtask setup installs it)");
            return;
        }
    }
    let _serial = serial();
    let tree = hostile_tree("names-prom");
    let top = tree.top.path.as_str();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let _agent = common::Peer(
        Command::new(BIN)
            .args(["run", "--interval", "1s", "--listen", &listen])
            .args(["--export-kinds", "other", "--include-path", top])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cgscope run"),
    );
    let prom = peers::prometheus(&listen, common::free_port());

    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        match common::http_get(&listen, "/metrics") {
            Ok((200, body)) if body.contains(top) => break body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("/metrics without {top}: {other:?}"),
        }
    };
    common::promtool_check(&exposition);

    let query = format!("container_cpu_time_seconds_total{{cgscope_cgroup_path=~\"{top}/.*\"}}");
    let mut want: Vec<String> = NAMES
        .iter()
        .map(|(raw, _)| format!("{top}/{raw}"))
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, result) = peers::instant_query(prom.port, &query);
        let mut got: Vec<String> = result
            .iter()
            .filter_map(|s| {
                s["metric"]["cgscope_cgroup_path"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        got.sort();
        got.dedup();
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `--target` word of a report's first next command, as bash reads it.
fn target_through_bash(next: &str) -> String {
    let (_, word) = next.split_once("--target ").expect("a --target in next");
    // The word runs to the end of the command (`$'…'` and `'…'` have no spaces
    // outside their quotes in these names).
    let word = word.split(" --").next().unwrap_or(word);
    let out = Command::new("bash")
        .env("LC_ALL", "C")
        .args(["-c", &format!("printf %s {word}")])
        .output()
        .expect("bash");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn playbook_reports_escape_in_text_and_markdown_and_keep_json_exact() {
    require_root_and_cgroup_v2!();
    let bash = common::have("bash");
    if !bash {
        eprintln!("note: no bash here (a VM): next commands are not read back");
    }
    let _serial = serial();
    let tree = hostile_tree("names-playbook");
    let top = tree.top.path.as_str();
    let run = |playbook: &str, format: &str| {
        cgscope(&[
            "playbook",
            "run",
            playbook,
            "--target",
            top,
            "--duration",
            "2s",
            "--format",
            format,
        ])
    };

    // JSON: five loops on CPU 0 each wait most of the window; the paths are exact.
    let report: Value = serde_json::from_str(&run("triage", "json")).expect("report JSON");
    let findings = report["findings"].as_array().expect("findings");
    for (raw, _) in NAMES {
        let exact = format!("{top}/{raw}");
        let f = findings
            .iter()
            .find(|f| f["path"] == exact.as_str() && f["measure"] == "cpu.runq_wait")
            .unwrap_or_else(|| panic!("no run-queue finding on {exact:?}: {report:#}"));
        // The next command selects exactly that cgroup, read by a real shell.
        let next = f["next"].as_str().expect("next");
        if bash {
            assert_eq!(target_through_bash(next), exact, "{next}");
        }
        assert!(!f["neighbours"].as_array().expect("neighbours").is_empty());
    }

    let text = run("triage", "text");
    assert_printable("triage text", &text);
    for (_, shown) in NAMES {
        let finding = format!("{top}/{shown}: runnable tasks wait for a CPU");
        assert!(text.contains(&finding), "{finding} in\n{text}");
    }
    // Each finding names its neighbours (the culprits the kernel measured, or the
    // busiest others where blame is off): ours, escaped.
    let neighbours: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("neighbour: "))
        .filter(|n| n.starts_with(top))
        .collect();
    assert!(!neighbours.is_empty(), "no neighbour line in\n{text}");
    for n in &neighbours {
        assert!(
            NAMES.iter().any(|(_, shown)| {
                n.starts_with(&format!("{top}/{shown} held the CPU"))
                    || n.starts_with(&format!("{top}/{shown} used"))
            }),
            "neighbour {n}"
        );
    }
    if bash {
        let next = text
            .lines()
            .find(|l| l.trim_start().starts_with("next:") && l.contains(top))
            .expect("a next command");
        let selected = target_through_bash(next);
        assert!(
            NAMES
                .iter()
                .any(|(raw, _)| selected == format!("{top}/{raw}")),
            "{next} selects {selected:?}"
        );
    }

    let markdown = run("triage", "markdown");
    assert_printable("triage markdown", &markdown);
    for (_, shown) in NAMES {
        let span = format!("`{top}/{shown}`: runnable tasks wait for a CPU");
        assert!(markdown.contains(&span), "{span} in\n{markdown}");
    }

    // Readings name every examined cgroup, in a Markdown table too.
    let text = run("throughput-ceiling", "text");
    assert_printable("throughput-ceiling text", &text);
    let markdown = run("throughput-ceiling", "markdown");
    assert_printable("throughput-ceiling markdown", &markdown);
    for (_, shown) in NAMES {
        let path = format!("{top}/{shown}");
        assert!(
            text.lines()
                .any(|l| l.contains("cpu.usage_of_node") && l.ends_with(&path)),
            "{path} in\n{text}"
        );
        let cell = format!("| `{path}` |");
        assert!(
            markdown
                .lines()
                .any(|l| l.starts_with("| cpu.usage_of_node") && l.contains(&cell)),
            "{cell} in\n{markdown}"
        );
    }
}

#[test]
fn errors_and_log_lines_escape_what_they_quote() {
    // An error that quotes a path: the cgroup root given does not exist.
    let out = Command::new(BIN)
        .args(["snapshot", "--cgroup-root", "/nonexistent/\x1b]0;pwned\x07"])
        .output()
        .expect("run cgscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_printable("the error", &stderr);
    assert!(
        stderr.contains(r"/nonexistent/\x1b]0;pwned\x07"),
        "{stderr}"
    );

    // A log line that quotes a value: `run` warns about a bad setting before it
    // attaches anything.
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let agent = Command::new(BIN)
        .args(["run", "--listen", &listen, "--interval", "1s"])
        .env("OTEL_METRICS_EXPORTER", "x\x1b[2J\u{202e}")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cgscope run");
    let mut agent = common::Peer(agent);
    let pipe = agent.0.stderr.take().expect("stderr");
    let mut lines = BufReader::new(pipe).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let line = lines
            .next()
            .expect("the agent's stderr ended before the warning")
            .expect("read stderr");
        if line.contains("OTEL_METRICS_EXPORTER") {
            break line;
        }
        assert!(Instant::now() < deadline, "no warning in 30 s");
    };
    drop(agent);
    assert_printable("the log line", &warning);
    assert!(
        warning.contains(r"OTEL_METRICS_EXPORTER=x\x1b[2J\u{202e}: only otlp"),
        "{warning}"
    );
}
