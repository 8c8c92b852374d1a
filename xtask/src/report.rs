//! What a test run tested: each test's outcome per environment (the host, each VM
//! kernel), read from libtest's own output, and the summary `cargo xtask test` ends
//! with. A test that printed `skipped: <why>` (the skip macros of
//! `agent/tests/common/mod.rs`) passed without testing anything: it counts as
//! skipped, with its reason, never as passed.

use std::collections::BTreeMap;

/// How one test ended in one environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// It returned early, saying why.
    Skipped(String),
    /// `#[ignore]`: run on demand only (e.g. `cargo xtask lab`).
    Ignored,
}

/// Every test outcome of one environment, by `<binary>::<test>`, and what went
/// wrong outside any test (a binary that crashed, output that does not add up).
pub struct EnvReport {
    pub name: String,
    pub outcomes: BTreeMap<String, Outcome>,
    pub problems: Vec<String>,
    /// Test binaries left out of this environment on purpose, and why.
    pub not_run: Vec<String>,
}

/// The marker libtest puts before a test's captured output (`--show-output`).
fn output_section(line: &str) -> Option<&str> {
    line.strip_prefix("---- ")?.strip_suffix(" stdout ----")
}

/// The totals of libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
fn totals(line: &str) -> Option<(usize, usize, usize)> {
    let rest = line.strip_prefix("test result: ")?;
    let mut counts = [None; 3];
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let slot = match what {
            "passed" => 0,
            "failed" => 1,
            "ignored" => 2,
            _ => continue,
        };
        counts[slot] = n.parse().ok();
    }
    Some((counts[0]?, counts[1]?, counts[2]?))
}

impl EnvReport {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            outcomes: BTreeMap::new(),
            problems: Vec::new(),
            not_run: Vec::new(),
        }
    }

    /// Adds the outcomes of one test binary, labelled `binary`, from what it printed
    /// on stdout when run with `--show-output` and exited with `exit_code`. Output
    /// that does not account for every test is a problem, not a guess.
    pub fn add_binary(&mut self, binary: &str, stdout: &str, exit_code: Option<i32>) {
        let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
        let mut reasons: BTreeMap<String, String> = BTreeMap::new();
        let mut section: Option<&str> = None;
        let mut libtest_totals = None;
        for line in stdout.lines() {
            if let Some(name) = output_section(line) {
                section = Some(name);
            } else if let Some(t) = totals(line) {
                libtest_totals = Some(t);
            } else if let Some((name, result)) = line
                .strip_prefix("test ")
                .and_then(|rest| rest.split_once(" ... "))
            {
                let outcome = if result.starts_with("ok") {
                    Outcome::Passed
                } else if result.starts_with("FAILED") {
                    Outcome::Failed
                } else if result.starts_with("ignored") {
                    Outcome::Ignored
                } else {
                    continue;
                };
                outcomes.insert(name.to_owned(), outcome);
            } else if let (Some(name), Some(reason)) =
                (section, line.trim_start().strip_prefix("skipped: "))
            {
                reasons
                    .entry(name.to_owned())
                    .or_insert_with(|| reason.trim().to_owned());
            }
        }
        for (name, reason) in reasons {
            if let Some(o @ Outcome::Passed) = outcomes.get_mut(&name) {
                *o = Outcome::Skipped(reason);
            }
        }
        let count = |f: fn(&Outcome) -> bool| outcomes.values().filter(|o| f(o)).count();
        let seen = (
            count(|o| matches!(o, Outcome::Passed | Outcome::Skipped(_))),
            count(|o| *o == Outcome::Failed),
            count(|o| *o == Outcome::Ignored),
        );
        match libtest_totals {
            None => self.problems.push(format!(
                "{binary}: no `test result` line (exit {exit_code:?}): it crashed or was killed"
            )),
            Some(t) if t != seen => self.problems.push(format!(
                "{binary}: libtest counted {t:?} passed/failed/ignored, its result lines {seen:?}"
            )),
            Some(_) if exit_code != Some(0) && seen.1 == 0 => self.problems.push(format!(
                "{binary}: exit {exit_code:?} without a failed test"
            )),
            Some(_) => {}
        }
        for (name, outcome) in outcomes {
            self.outcomes.insert(format!("{binary}::{name}"), outcome);
        }
    }

    fn count(&self, f: fn(&Outcome) -> bool) -> usize {
        self.outcomes.values().filter(|o| f(o)).count()
    }

    /// (passed, failed, skipped); each problem counts as a failure.
    pub fn totals(&self) -> (usize, usize, usize) {
        (
            self.count(|o| *o == Outcome::Passed),
            self.count(|o| *o == Outcome::Failed) + self.problems.len(),
            self.count(|o| matches!(o, Outcome::Skipped(_))),
        )
    }

    pub fn failed(&self) -> bool {
        self.totals().1 > 0
    }

    /// The environment's summary: its totals, each failure and each skip's reason.
    pub fn print(&self) {
        let (passed, failed, skipped) = self.totals();
        let ignored = self.count(|o| *o == Outcome::Ignored);
        eprintln!(
            "\n{}: {passed} passed, {failed} failed, {skipped} skipped ({ignored} ignored: run on demand)",
            self.name
        );
        for problem in &self.problems {
            eprintln!("  FAILED  {problem}");
        }
        for binary in &self.not_run {
            eprintln!("  not run here: {binary}");
        }
        for (test, outcome) in &self.outcomes {
            match outcome {
                Outcome::Failed => eprintln!("  FAILED  {test}"),
                Outcome::Skipped(reason) => eprintln!("  skipped {test}: {reason}"),
                Outcome::Passed | Outcome::Ignored => {}
            }
        }
    }
}

/// Tests that were skipped in every environment they ran in: nobody tested them.
pub fn skipped_everywhere(envs: &[EnvReport]) -> Vec<String> {
    let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
    for env in envs {
        for (test, outcome) in &env.outcomes {
            let skipped = matches!(outcome, Outcome::Skipped(_));
            let all = seen.entry(test).or_insert(true);
            *all &= skipped;
        }
    }
    seen.into_iter()
        .filter(|(_, all)| *all)
        .map(|(t, _)| t.to_owned())
        .collect()
}

/// Prints every environment's summary, then the run's; fails if any test failed and,
/// when `whole_matrix` ran, if any test was skipped everywhere.
pub fn conclude(envs: &[EnvReport], whole_matrix: bool) -> anyhow::Result<()> {
    for env in envs {
        env.print();
    }
    let nowhere = skipped_everywhere(envs);
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    if !nowhere.is_empty() {
        let verdict = if whole_matrix {
            "FAILED"
        } else {
            "not judged: not every environment ran"
        };
        eprintln!(
            "\nskipped in every environment ({}), so tested nowhere ({verdict}):",
            names.join(", ")
        );
        for test in &nowhere {
            eprintln!("  {test}");
        }
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for env in envs {
        let (p, f, s) = env.totals();
        (passed, failed, skipped) = (passed + p, failed + f, skipped + s);
    }
    eprintln!("\n{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        let mut which: Vec<String> = Vec::new();
        for env in envs {
            which.extend(env.problems.iter().map(|p| format!("{}: {p}", env.name)));
            which.extend(
                env.outcomes
                    .iter()
                    .filter(|(_, o)| **o == Outcome::Failed)
                    .map(|(t, _)| format!("{}: {t}", env.name)),
            );
        }
        anyhow::bail!("{failed} failed: {}", which.join(", "));
    }
    if whole_matrix && !nowhere.is_empty() {
        anyhow::bail!("{} tests were skipped in every environment", nowhere.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
running 5 tests
test a ... ok
test b ... ok
test c ... FAILED
test d ... ignored, run by cargo xtask lab
test m::e ... ok

successes:

---- a stdout ----
measured 3 things
skipped: needs root (CAP_BPF)

---- m::e stdout ----
note: biolatency did not start; shape comparison skipped


successes:
    a
    b
    m::e

failures:

---- c stdout ----
thread 'c' panicked at x.rs:1:1:
skipped: this line is in a failure and changes nothing

failures:
    c

test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s
";

    #[test]
    fn a_test_that_said_skipped_is_skipped_not_passed() {
        let mut env = EnvReport::new("host");
        env.add_binary("runq", OUTPUT, Some(101));
        assert_eq!(
            env.outcomes["runq::a"],
            Outcome::Skipped("needs root (CAP_BPF)".into())
        );
        assert_eq!(env.outcomes["runq::b"], Outcome::Passed);
        assert_eq!(env.outcomes["runq::c"], Outcome::Failed);
        assert_eq!(env.outcomes["runq::d"], Outcome::Ignored);
        assert_eq!(
            env.outcomes["runq::m::e"],
            Outcome::Passed,
            "a note is not a skip"
        );
        assert!(env.problems.is_empty(), "{:?}", env.problems);
        assert_eq!(env.totals(), (2, 1, 1));
    }

    #[test]
    fn output_that_does_not_add_up_is_a_failure() {
        let mut crashed = EnvReport::new("6.1");
        crashed.add_binary("tcp", "running 2 tests\ntest a ... ok\n", None);
        assert_eq!(crashed.totals(), (1, 1, 0));
        let mut garbled = EnvReport::new("6.1");
        let lost = OUTPUT.replace("test b ... ok", "test b ... [ 12.3] oom-kill");
        garbled.add_binary("tcp", &lost, Some(101));
        assert_eq!(garbled.problems.len(), 1, "{:?}", garbled.problems);
        let mut silent = EnvReport::new("6.12");
        let ok = "test a ... ok\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured";
        silent.add_binary("tcp", ok, Some(1));
        assert!(silent.failed());
    }

    #[test]
    fn only_a_test_skipped_in_every_environment_is_untested() {
        let ok = "test a ... ok\ntest b ... ok\n\
                  test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured";
        let skip_a = format!("{ok}\n---- a stdout ----\nskipped: no null_blk\n");
        let skip_both = format!("{skip_a}\n---- b stdout ----\nskipped: controllers not enabled\n");
        let mut host = EnvReport::new("host");
        host.add_binary("limits", &skip_both, Some(0));
        let mut vm = EnvReport::new("6.1");
        vm.add_binary("limits", &skip_a, Some(0));
        assert_eq!(skipped_everywhere(&[host, vm]), ["limits::a"]);
        let mut host_only = EnvReport::new("host");
        host_only.add_binary("export", &skip_a, Some(0));
        assert!(conclude(&[host_only], true).is_err());
    }
}
