//! What cgscope costs the node per window, against its budget (`--cost-budget`):
//! its process's CPU time (scan, export, API) and its probes' run time in the
//! kernel, as a share of the node's CPU time in the window. Over the budget for
//! [`WINDOWS_OVER`] windows in a row, the snapshot, `/healthz` and a metric say so
//! and name the costliest probe. Nothing is sampled away to stay under it.

use std::collections::BTreeMap;

use crate::snapshot::{CostSample, ProbeStatus};

/// Windows in a row over the budget before it is reported: one busy window (the
/// first scan of a large tree, a burst of events) is not a trend.
pub const WINDOWS_OVER: u32 = 3;

/// The default budget: 1 % of the node's CPU time.
pub const DEFAULT_BUDGET: f64 = 0.01;

/// The cumulative figures at the end of the last window.
#[derive(Debug, Default)]
pub struct CostWatch {
    budget: f64,
    process_seconds: Option<f64>,
    probe_seconds: Option<BTreeMap<&'static str, f64>>,
    windows_over: u32,
}

/// CPU time of this process so far, user and system: what getrusage says.
pub fn process_cpu_seconds() -> Option<(f64, f64)> {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
    Some((seconds(usage.user_time()), seconds(usage.system_time())))
}

/// Each attached probe's run time so far, summed over its programs; `None` if a
/// probe has no statistics.
fn probe_totals(probes: &[ProbeStatus]) -> Option<BTreeMap<&'static str, f64>> {
    probes
        .iter()
        .filter(|p| p.attached)
        .map(|p| {
            let stats = p.run_stats.as_ref()?;
            Some((p.name, stats.iter().map(|s| s.run_seconds).sum()))
        })
        .collect()
}

impl CostWatch {
    pub fn new(budget: f64) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// The window that just ended: `seconds` long on `cpus` CPUs.
    pub fn window(
        &mut self,
        probes: &[ProbeStatus],
        seconds: f64,
        cpus: Option<usize>,
    ) -> CostSample {
        let process = process_cpu_seconds().map(|(user, system)| user + system);
        let totals = probe_totals(probes);
        let process_seconds = match (process, self.process_seconds) {
            (Some(now), Some(before)) => Some((now - before).max(0.0)),
            _ => None,
        };
        let probe_seconds = match (&totals, &self.probe_seconds) {
            (Some(now), Some(before)) => Some(
                now.iter()
                    .map(|(probe, s)| (*probe, (s - before.get(probe).unwrap_or(&0.0)).max(0.0)))
                    .collect::<BTreeMap<_, _>>(),
            ),
            _ => None,
        };
        self.process_seconds = process;
        self.probe_seconds = totals;
        let node_seconds = seconds * cpus.unwrap_or(0) as f64;
        let node_share = process_seconds.filter(|_| node_seconds > 0.0).map(|p| {
            (p + probe_seconds.iter().flatten().map(|(_, s)| s).sum::<f64>()) / node_seconds
        });
        match node_share {
            Some(share) if share > self.budget => self.windows_over += 1,
            Some(_) => self.windows_over = 0,
            None => {}
        }
        let costliest_probe = probe_seconds.as_ref().and_then(|by_probe| {
            by_probe
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(probe, _)| *probe)
        });
        CostSample {
            budget: self.budget,
            process_seconds: process_seconds.unwrap_or(0.0),
            probe_seconds,
            node_share,
            windows_over: self.windows_over,
            over_budget: self.windows_over >= WINDOWS_OVER,
            costliest_probe,
        }
    }
}

impl CostSample {
    /// One line for `/healthz` and the log when over the budget.
    pub fn over_budget_message(&self) -> Option<String> {
        if !self.over_budget {
            return None;
        }
        let share = self.node_share.unwrap_or(0.0);
        let costliest = match self.costliest_probe {
            Some(probe) => format!("; the costliest probe is {probe}"),
            None => String::new(),
        };
        Some(format!(
            "over its cost budget for {} windows: {:.2}% of the node's CPU time this \
             window, budget {:.2}% (--cost-budget){costliest}",
            self.windows_over,
            share * 100.0,
            self.budget * 100.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ProgramRunStats;

    fn runq(run_seconds: f64) -> Vec<ProbeStatus> {
        vec![ProbeStatus {
            name: "runq",
            attached: true,
            error: None,
            dropped: BTreeMap::new(),
            notes: Vec::new(),
            map_entries: None,
            run_stats: Some(vec![ProgramRunStats {
                program: "runq_switch".to_owned(),
                runs: 1,
                run_seconds,
                skipped_runs: Some(0),
            }]),
        }]
    }

    #[test]
    fn over_budget_after_three_windows_naming_the_probe() {
        // A budget no process can stay under: every window is over it once the
        // probe's time grows by a second per 10 s window on one CPU.
        let mut watch = CostWatch::new(0.05);
        let first = watch.window(&runq(0.0), 10.0, Some(1));
        assert_eq!(first.node_share, None, "no baseline yet");
        let mut last = first;
        for i in 1..=3 {
            last = watch.window(&runq(f64::from(i)), 10.0, Some(1));
            assert!(last.node_share.unwrap() >= 0.1, "{last:?}");
            assert_eq!(last.windows_over, i as u32);
            assert_eq!(last.over_budget, i == 3);
        }
        assert_eq!(last.costliest_probe, Some("runq"));
        assert!(last.over_budget_message().unwrap().contains("runq"));
        // A window under the budget resets the run.
        let under = watch.window(&runq(3.0), 1e6, Some(64));
        assert_eq!((under.windows_over, under.over_budget), (0, false));
    }
}
