//! The measures a playbook check can name: each turns one cgroup's window into one
//! number with a unit. Checks (in `playbooks/*.md`) hold the thresholds; this file
//! only knows how to compute the numbers.

use crate::sample::{CgroupSample, PressureWindow};

/// How a measure's value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// CPUs (cores' worth of time per second).
    Cores,
    /// A share, shown as a percentage.
    Ratio,
    Seconds,
    Count,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Self::Cores => format!("{v:.2} CPUs"),
            Self::Ratio => format!("{:.1}%", v * 100.0),
            Self::Seconds => crate::table::duration(v),
            Self::Count => format!("{v:.0}"),
        }
    }
}

pub struct Measure {
    pub name: &'static str,
    pub unit: Unit,
    pub description: &'static str,
    /// `None` when the window has no data for it (controller or probe missing).
    pub compute: fn(&CgroupSample, f64) -> Option<f64>,
}

fn per_second(v: Option<f64>, window: f64) -> Option<f64> {
    v.filter(|_| window > 0.0).map(|v| v / window)
}

fn some(p: &Option<PressureWindow>, window: f64) -> Option<f64> {
    per_second(p.as_ref().and_then(|p| p.some_seconds), window)
}

/// Every measure, by name.
pub const MEASURES: &[Measure] = &[
    Measure {
        name: "cpu.usage",
        unit: Unit::Cores,
        description: "CPU used (cpu.stat usage_usec per second)",
        compute: |c, w| per_second(c.cpu.usage_seconds, w),
    },
    Measure {
        name: "cpu.usage_of_limit",
        unit: Unit::Ratio,
        description: "CPU used as a share of the cpu.max quota",
        compute: |c, w| {
            let limit = c.cpu.limit_cores.filter(|l| *l > 0.0)?;
            per_second(c.cpu.usage_seconds, w).map(|u| u / limit)
        },
    },
    Measure {
        name: "cpu.throttled_periods",
        unit: Unit::Ratio,
        description: "enforcement periods in which the quota ran out (cpu.stat nr_throttled / nr_periods)",
        compute: |c, _| {
            let periods = c.cpu.periods.filter(|p| *p > 0)?;
            c.cpu.throttled_periods.map(|t| t as f64 / periods as f64)
        },
    },
    Measure {
        name: "cpu.throttled_time",
        unit: Unit::Ratio,
        description: "share of the window the cgroup's tasks were held back by the quota (cpu.stat throttled_usec)",
        compute: |c, w| per_second(c.cpu.throttled_seconds, w),
    },
    Measure {
        name: "cpu.runq_p99",
        unit: Unit::Seconds,
        description: "99th percentile of single run-queue waits (runq probe)",
        compute: |c, _| c.cpu.runq_latency.as_ref().filter(|l| l.count > 0).map(|l| l.p99_seconds),
    },
    Measure {
        name: "cpu.runq_wait",
        unit: Unit::Cores,
        description: "time runnable tasks waited for a CPU, per second: the CPUs the cgroup would have used more without contention (runq probe)",
        compute: |c, w| per_second(c.cpu.runq_latency.as_ref().map(|l| l.sum_seconds), w),
    },
    Measure {
        name: "cpu.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on CPU (cpu.pressure some)",
        compute: |c, w| some(&c.pressure.cpu, w),
    },
    Measure {
        name: "memory.usage_of_limit",
        unit: Unit::Ratio,
        description: "memory.current as a share of memory.max",
        compute: |c, _| {
            let m = c.memory.as_ref()?;
            let max = m.max_bytes.filter(|m| *m > 0)?;
            m.current_bytes.map(|cur| cur as f64 / max as f64)
        },
    },
    Measure {
        name: "memory.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on memory (memory.pressure some)",
        compute: |c, w| some(&c.pressure.memory, w),
    },
    Measure {
        name: "memory.oom_kills",
        unit: Unit::Count,
        description: "processes OOM-killed in the window (oom probe)",
        compute: |c, _| c.memory.as_ref()?.oom_kills.as_ref().map(|k| k.count as f64),
    },
    Measure {
        name: "io.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on IO (io.pressure some)",
        compute: |c, w| some(&c.pressure.io, w),
    },
];

pub fn find(name: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.name == name)
}
