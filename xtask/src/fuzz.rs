//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the libFuzzer targets of
//! `agent/fuzz` (one per parser of untrusted input) for N seconds each, seeded with
//! the fixture files their parsers read, and fails on any crash, panic or hang,
//! naming the input that caused it. Built by cargo-fuzz on the pinned nightly
//! (libFuzzer's coverage and sanitizer flags are nightly-only), with overflow
//! checks on: an overflow on hostile input is a crash here, a wrong number in a
//! release build.
//!
//! Everything it writes is under `target/fuzz/`: `build/` (its own target dir: the
//! sanitizer flags never invalidate the main build), `corpus/TARGET/` (seeds and
//! what libFuzzer found, kept between runs), `artifacts/TARGET/` (crashing inputs),
//! `logs/TARGET.log`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::{cmd, setup};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long to run each target.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// One target (default: all of them).
    pub target: Option<String>,
}

impl FuzzArgs {
    /// What `cargo xtask test` runs: every target, bounded so that all of them
    /// together take about 5.5 minutes.
    pub fn bounded() -> Self {
        Self {
            seconds: 18,
            target: None,
        }
    }
}

/// Each target and the files that seed it, relative to the workspace root (`*`
/// matches within one file name). Inputs no fixture has are in
/// `agent/fuzz/seeds/TARGET/` (see its README).
pub const TARGETS: &[(&str, &[&str])] = &[
    (
        "cgroup_cpu",
        &[
            "agent/tests/fixtures/cpu.stat/*",
            "agent/tests/fixtures/unified-6.12-container/cpu.*",
        ],
    ),
    (
        "cgroup_memory",
        &["agent/tests/fixtures/unified-6.12-container/memory.*"],
    ),
    (
        "cgroup_io",
        &["agent/tests/fixtures/unified-6.12-container/io.*"],
    ),
    (
        "cgroup_pids",
        &["agent/tests/fixtures/unified-6.12-container/pids.*"],
    ),
    (
        "cgroup_pressure",
        &[
            "agent/tests/fixtures/unified-6.12-container/*.pressure",
            "agent/tests/fixtures/host-6.12/pressure-*",
        ],
    ),
    (
        "cgroup_stat",
        &["agent/tests/fixtures/unified-6.12-container/cgroup.*"],
    ),
    (
        "cgroup_format",
        &[
            "agent/tests/fixtures/unified-6.12-container/*",
            "agent/tests/fixtures/cpu.stat/*",
        ],
    ),
    ("cgroup_identity", &["agent/tests/fixtures/trees/*"]),
    ("cgroup_mount", &["agent/tests/fixtures/mountinfo-*"]),
    (
        "host_stat",
        &[
            "agent/tests/fixtures/host/stat",
            "agent/tests/fixtures/host-6.12/stat",
        ],
    ),
    ("host_diskstats", &["agent/tests/fixtures/host/diskstats"]),
    ("net", &["agent/tests/fixtures/net/*"]),
    ("btf", &[]),
    ("playbook", &["playbooks/*.md"]),
    ("export_settings", &[]),
    ("export_api", &[]),
    ("metadata_docker", &[]),
    ("metadata_cri", &[]),
];

/// How long one input may run before it counts as a hang (libFuzzer's `-timeout`).
const INPUT_TIMEOUT_SECONDS: u64 = 10;

const FUZZ_DIR: &str = "agent/fuzz";
const OUT_DIR: &str = "target/fuzz";

/// What one target's run found.
struct Outcome {
    target: &'static str,
    executions: Option<u64>,
    corpus: usize,
    /// Inputs libFuzzer wrote for a crash, panic or hang in this run.
    crashes: Vec<PathBuf>,
    failed: bool,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let mut did = Vec::new();
    let toolchain = setup::build_toolchain(&mut did)?;
    setup::cargo_fuzz(&mut did)?;
    did.iter().for_each(|line| eprintln!("setup: {line}"));
    let targets: Vec<&(&str, &[&str])> = match &args.target {
        None => TARGETS.iter().collect(),
        Some(name) => match TARGETS.iter().find(|(t, _)| t == name) {
            Some(t) => vec![t],
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
                bail!("no fuzz target {name:?}; targets: {}", names.join(" "));
            }
        },
    };
    let root = cmd::workspace_root();
    let out = root.join(OUT_DIR);

    // One build for all of them: cargo builds the shared crates once, in parallel.
    let mut build = cargo_fuzz_build(&toolchain, &root);
    if let [(one, _)] = targets[..] {
        build.arg(one);
    }
    cmd::run(&mut build)?;

    let mut outcomes = Vec::new();
    for (target, seeds) in targets {
        outcomes.push(fuzz(&root, &out, target, seeds, args.seconds)?);
    }

    eprintln!(
        "\n{:<18} {:>12} {:>7}  result",
        "fuzz target", "executions", "corpus"
    );
    for o in &outcomes {
        let executions = o.executions.map_or("?".to_owned(), thousands);
        let result = match (o.failed, o.crashes.as_slice()) {
            (false, _) => "ok".to_owned(),
            (true, []) => format!("FAILED, see {OUT_DIR}/logs/{}.log", o.target),
            (true, crashes) => format!("CRASH {}", crashes[0].display()),
        };
        eprintln!(
            "{:<18} {:>12} {:>7}  {result}",
            o.target, executions, o.corpus
        );
    }
    let total: u64 = outcomes.iter().filter_map(|o| o.executions).sum();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failed)
        .map(|o| o.target)
        .collect();
    eprintln!(
        "fuzz: {} targets, {} executions in {} s each, {} failed",
        outcomes.len(),
        thousands(total),
        args.seconds,
        failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "fuzzing found crashes in {}; reproduce one with \
             `{OUT_DIR}/build/{}/release/TARGET CRASH_FILE`",
            failed.join(", "),
            triple()
        );
    }
    Ok(())
}

/// What `cargo fuzz run` sets: Rust's std is not built with ASan, and its statics
/// would look like ODR violations.
const ASAN_OPTIONS: &str = "detect_odr_violation=0";

/// The triple the targets are built for: this machine's.
fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// Where `cargo fuzz build` leaves `target`'s binary.
fn binary(root: &Path, target: &str) -> PathBuf {
    root.join(OUT_DIR)
        .join("build")
        .join(triple())
        .join("release")
        .join(target)
}

/// `cargo fuzz build` on the pinned nightly, in the workspace root. The
/// agent's build script skips the eBPF programs: no target loads them, and the
/// sanitizer flags would break their build.
fn cargo_fuzz_build(toolchain: &str, root: &Path) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", toolchain, "cargo", "fuzz", "build"])
        .args(["--fuzz-dir", FUZZ_DIR, "--target-dir"])
        .arg(format!("{OUT_DIR}/build"))
        .args(["--sanitizer", "address", "--debug-assertions", "--target"])
        .arg(triple())
        .current_dir(root)
        .env("AYA_BUILD_SKIP", "1")
        // The outer (stable) cargo's settings must not reach the nightly one.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// Seeds `target`'s corpus, runs it for `seconds`, and reads what it did from its log.
fn fuzz(
    root: &Path,
    out: &Path,
    target: &'static str,
    seeds: &[&str],
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let corpus = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    let logs = out.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for pattern in seeds {
        let files = matching(root, pattern)?;
        if files.is_empty() {
            bail!("{target}: no fixture matches {pattern}");
        }
        for file in files {
            let name = file.strip_prefix(root).unwrap_or(&file).to_string_lossy();
            let seed = corpus.join(format!("seed-{}", name.replace('/', "_")));
            std::fs::copy(&file, &seed)
                .with_context(|| format!("copying {} to {}", file.display(), seed.display()))?;
        }
    }
    let before = files_in(&artifacts)?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    // The binary `cargo fuzz build` made, run as `cargo fuzz run` would, but without
    // its rebuild: a source changed since then does not stop the run half-way.
    let mut run = Command::new(binary(root, target));
    run.env("ASAN_OPTIONS", ASAN_OPTIONS).arg(&corpus);
    let own_seeds = root.join(FUZZ_DIR).join("seeds").join(target);
    if own_seeds.is_dir() {
        // Read-only: libFuzzer writes what it finds into the first directory only.
        run.arg(&own_seeds);
    }
    run.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(log);
    eprintln!("fuzz: {target} for {seconds} s");
    let started = Instant::now();
    let status = run
        .status()
        .with_context(|| format!("cannot start {}", binary(root, target).display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let crashes: Vec<PathBuf> = files_in(&artifacts)?.difference(&before).cloned().collect();
    let failed = !status.success() || !crashes.is_empty();
    if failed {
        eprintln!(
            "fuzz: {target} failed ({status}) after {:.0?}; log {}:",
            started.elapsed(),
            log_path.display()
        );
        verdict(&text).iter().for_each(|l| eprintln!("  {l}"));
    }
    Ok(Outcome {
        target,
        executions: stat(&text, "stat::number_of_executed_units:"),
        corpus: files_in(&corpus)?.len(),
        crashes,
        failed,
    })
}

/// The lines of a failed run's log that say what happened: the panic and its
/// message, libFuzzer's verdict, where it wrote the input; the log's last lines
/// if it has none of them (a build or start-up failure).
fn verdict(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, &line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            out.extend_from_slice(lines.get(i..i + 2).unwrap_or(&lines[i..]));
        } else if ["ERROR: libFuzzer", "SUMMARY:", "Test unit written to"]
            .iter()
            .any(|k| line.contains(k))
        {
            out.push(line);
        }
    }
    if out.is_empty() {
        out = lines[lines.len().saturating_sub(20)..].to_vec();
    }
    out
}

/// A number libFuzzer's `-print_final_stats` printed after `key`.
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The files `pattern` names: a path whose last part may hold one `*`.
fn matching(root: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or((".", pattern));
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let exact = !name.contains('*');
    let mut out: Vec<PathBuf> = files_in(&root.join(dir))?
        .into_iter()
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            if exact {
                n == name
            } else {
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The regular files directly in `dir`.
fn files_in(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut out = BTreeSet::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            out.insert(path);
        }
    }
    Ok(out)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_built_and_seeded() {
        let root = cmd::workspace_root();
        let manifest = std::fs::read_to_string(root.join(FUZZ_DIR).join("Cargo.toml")).unwrap();
        let built: BTreeSet<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "cgscope-fuzz")
            .collect();
        let listed: BTreeSet<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
        assert_eq!(built, listed, "agent/fuzz/Cargo.toml and TARGETS disagree");
        for (target, patterns) in TARGETS {
            let mut seeds = root.join(FUZZ_DIR).join("seeds").join(target).is_dir() as usize;
            for pattern in *patterns {
                let n = matching(&root, pattern).unwrap().len();
                assert!(n > 0, "{target}: {pattern} matches nothing");
                seeds += n;
            }
            assert!(seeds > 0, "{target} has no seeds");
        }
    }

    #[test]
    fn final_stats_and_numbers() {
        let log =
            "#2048\tDONE cov: 10\nstat::number_of_executed_units: 912345\nstat::peak_rss_mb: 40\n";
        assert_eq!(stat(log, "stat::number_of_executed_units:"), Some(912_345));
        assert_eq!(
            stat("crashed early", "stat::number_of_executed_units:"),
            None
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(0), "0");
    }

    #[test]
    fn a_failed_run_is_told_by_its_panic_and_input() {
        let log = "#1 INITED\n\nthread '<unnamed>' panicked at agent/src/host.rs:132:25:\n\
                   attempt to multiply with overflow\nstack backtrace:\n   0: x\n\
                   ==1== ERROR: libFuzzer: deadly signal\n    #0 0x1 in f\n\
                   Test unit written to target/fuzz/artifacts/t/crash-1\n";
        assert_eq!(
            verdict(log),
            [
                "thread '<unnamed>' panicked at agent/src/host.rs:132:25:",
                "attempt to multiply with overflow",
                "==1== ERROR: libFuzzer: deadly signal",
                "Test unit written to target/fuzz/artifacts/t/crash-1",
            ]
        );
        assert_eq!(verdict("a\nb"), ["a", "b"]);
    }
}
