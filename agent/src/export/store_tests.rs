//! The store's tests, and the samples other modules' tests build windows from.

use super::*;
use crate::{
    histogram::LatencyTotals,
    snapshot::{CgroupKind, CgroupSample, CpuSample, Host, LatencySummary},
};
use cgscope_common::histogram::Histogram;

/// A service cgroup with user CPU time and a run-queue histogram.
pub(crate) fn cgroup(id: u64, user_seconds: f64, runq_ns: &[u64]) -> CgroupSample {
    let mut h = Histogram::ZERO;
    runq_ns.iter().for_each(|&v| h.record(v));
    CgroupSample {
        cpu: CpuSample {
            user_seconds: Some(user_seconds),
            runq_latency: Some(LatencySummary::from(
                &LatencyTotals::from_cpus([&h]).since(None),
            )),
            ..CpuSample::default()
        },
        ..CgroupSample::bare(&format!("/c{id}"), id, CgroupKind::Service)
    }
}

/// A 10 s window ending at `end`.
pub(crate) fn snapshot(end: f64, cgroups: Vec<CgroupSample>) -> Snapshot {
    Snapshot {
        schema: crate::snapshot::SCHEMA,
        timestamp_seconds: end,
        window_seconds: 10.0,
        host: Host {
            kernel: String::new(),
            cgroup_mode: crate::snapshot::CgroupMode::Unified,
            cgroup_root: String::new(),
            window: Default::default(),
        },
        probes: Vec::new(),
        scan_errors: Default::default(),
        cost: Default::default(),
        cgroups,
    }
}

fn series<'a>(store: &'a Store, id: u64, metric: &str) -> Option<&'a Series> {
    store
        .resources
        .get(&ResourceKey::Cgroup(id))?
        .series
        .values()
        .find(|s| s.metric.name == metric && s.attributes.iter().all(|(_, v)| v != "system"))
}

#[test]
fn windows_accumulate_and_absent_series_are_forgotten() {
    let (mut store, agent, filter) = (Store::default(), AgentSample::default(), Filter::default());
    store.update(
        &snapshot(100.0, vec![cgroup(1, 1.0, &[1_000, 2_000_000])]),
        &agent,
        &filter,
    );
    store.update(
        &snapshot(110.0, vec![cgroup(1, 0.5, &[2_000_000])]),
        &agent,
        &filter,
    );
    let cpu = series(&store, 1, "container.cpu.time").expect("cpu series");
    assert_eq!(
        (&cpu.total, &cpu.window),
        (&Value::Double(1.5), &Value::Double(0.5))
    );
    assert_eq!(
        cpu.start_unix_nano, 90_000_000_000,
        "start of the first window"
    );
    let Value::Histogram(h) = &series(&store, 1, "container.cpu.runq.latency")
        .expect("runq")
        .total
    else {
        panic!("not a histogram")
    };
    assert_eq!(h.count, 3);
    assert_eq!(h.dense().1.iter().sum::<u64>() + h.zero_count, 3);

    // Gone for a window: forgotten; back: a new series with a new start.
    store.update(&snapshot(120.0, vec![]), &agent, &filter);
    assert!(series(&store, 1, "container.cpu.time").is_none());
    store.update(&snapshot(130.0, vec![cgroup(1, 2.0, &[])]), &agent, &filter);
    let cpu = series(&store, 1, "container.cpu.time").expect("cpu series");
    assert_eq!(
        (&cpu.total, cpu.start_unix_nano),
        (&Value::Double(2.0), 120_000_000_000)
    );
}

#[test]
fn a_cgroup_series_exists_once_it_has_counted_something() {
    let (mut store, agent, filter) = (Store::default(), AgentSample::default(), Filter::default());
    // Never woken, no CPU time: no histogram, no counter.
    store.update(&snapshot(100.0, vec![cgroup(1, 0.0, &[])]), &agent, &filter);
    assert!(series(&store, 1, "container.cpu.runq.latency").is_none());
    assert!(series(&store, 1, "container.cpu.time").is_none());
    assert!(store.resources.contains_key(&ResourceKey::Cgroup(1)));
    store.update(
        &snapshot(110.0, vec![cgroup(1, 0.5, &[2_000])]),
        &agent,
        &filter,
    );
    let runq = series(&store, 1, "container.cpu.runq.latency").expect("runq");
    assert_eq!(runq.start_unix_nano, 100_000_000_000, "its first window");
    // Empty windows after that: the series continue, totals kept.
    store.update(&snapshot(120.0, vec![cgroup(1, 0.0, &[])]), &agent, &filter);
    assert!(series(&store, 1, "container.cpu.runq.latency").is_some());
    let cpu = series(&store, 1, "container.cpu.time").expect("cpu series");
    assert_eq!(
        (&cpu.total, &cpu.window),
        (&Value::Double(0.5), &Value::Double(0.0))
    );
}

#[test]
fn a_sparse_gauge_exists_once_non_zero_and_a_plain_one_at_once() {
    let (mut store, agent, filter) = (Store::default(), AgentSample::default(), Filter::default());
    let with_memory = |anon: u64, swap: u64| CgroupSample {
        memory: Some(crate::snapshot::MemorySample {
            current_bytes: Some(anon),
            anon_bytes: Some(anon),
            shmem_bytes: Some(0),
            swap_current_bytes: Some(swap),
            ..Default::default()
        }),
        ..cgroup(1, 0.0, &[])
    };
    let state = |store: &Store, kind: &str| {
        store.resources[&ResourceKey::Cgroup(1)]
            .series
            .values()
            .find(|s| {
                s.metric.name == "container.memory.state"
                    && s.attributes.iter().any(|(_, v)| v == kind)
            })
            .map(|s| s.window.clone())
    };
    store.update(
        &snapshot(100.0, vec![with_memory(4096, 0)]),
        &agent,
        &filter,
    );
    assert!(series(&store, 1, "container.memory.usage").is_some());
    assert_eq!(state(&store, "anon"), Some(Value::Int(4096)));
    assert_eq!(state(&store, "shmem"), None, "never non-zero");
    assert!(series(&store, 1, "container.memory.swap").is_none());
    store.update(
        &snapshot(110.0, vec![with_memory(4096, 8192)]),
        &agent,
        &filter,
    );
    assert!(series(&store, 1, "container.memory.swap").is_some());
    // Back to zero: the series stays, with its zero.
    store.update(&snapshot(120.0, vec![with_memory(0, 0)]), &agent, &filter);
    let swap = series(&store, 1, "container.memory.swap").expect("swap stays");
    assert_eq!(swap.window, Value::Int(0));
    assert_eq!(state(&store, "anon"), Some(Value::Int(0)));
}

#[test]
fn young_cgroups_wait_and_the_cap_folds_into_one_overflow_series() {
    let agent = AgentSample::default();
    let filter = Filter {
        min_age: std::time::Duration::from_secs(15),
        ..Filter::default()
    };
    let mut store = Store::default();
    store.update(&snapshot(100.0, vec![cgroup(1, 1.0, &[])]), &agent, &filter);
    assert!(
        series(&store, 1, "container.cpu.time").is_none(),
        "exported before min age"
    );
    store.update(&snapshot(110.0, vec![cgroup(1, 1.0, &[])]), &agent, &filter);
    assert!(
        series(&store, 1, "container.cpu.time").is_some(),
        "20 s old and still waiting"
    );

    let filter = Filter {
        max_series: 1,
        ..Filter::default()
    };
    let mut store = Store::default();
    let three = vec![
        cgroup(1, 1.0, &[]),
        cgroup(2, 2.0, &[]),
        cgroup(3, 4.0, &[]),
    ];
    store.update(&snapshot(100.0, three), &agent, &filter);
    let overflow = store.resources[&ResourceKey::Node]
        .series
        .values()
        .find(|s| {
            s.metric.name == "container.cpu.time" && s.attributes[0].0 == "otel.metric.overflow"
        })
        .expect("overflow series");
    // cgroup 1 holds the one series (user; system is absent); 2 and 3 overflow.
    assert_eq!(overflow.total, Value::Double(6.0));
    assert!(store.overflowed >= 2);
}

#[test]
fn unreadable_windows_keep_totals_and_impossible_ones_are_refused() {
    let (mut store, agent, filter) = (Store::default(), AgentSample::default(), Filter::default());
    let on_two_cpus = |end: f64, c: CgroupSample| {
        let mut s = snapshot(end, vec![c]);
        s.host.window.cpu = Some(crate::snapshot::HostCpu {
            cpus: 2,
            ..Default::default()
        });
        s
    };
    store.update(&on_two_cpus(100.0, cgroup(1, 1.0, &[])), &agent, &filter);
    let unreadable = CgroupSample {
        cpu: CpuSample::default(),
        unreadable: Some(crate::snapshot::Unreadable {
            reason: "EMFILE",
            error: String::new(),
        }),
        ..cgroup(1, 0.0, &[])
    };
    store.update(&on_two_cpus(110.0, unreadable), &agent, &filter);
    let cpu = series(&store, 1, "container.cpu.time").expect("kept while unreadable");
    assert_eq!(
        (&cpu.total, &cpu.window),
        (&Value::Double(1.0), &Value::Double(0.0))
    );
    assert_eq!(cpu.start_unix_nano, 90_000_000_000, "the same series");

    // 2 CPUs cannot give 40 s of CPU in 10 s.
    store.update(&on_two_cpus(120.0, cgroup(1, 40.0, &[])), &agent, &filter);
    let cpu = series(&store, 1, "container.cpu.time").expect("kept when refused");
    assert_eq!(cpu.total, Value::Double(1.0));
    assert_eq!(store.refused.get("cpu_time"), Some(&1));
    // The next window is added (the 2 s delta of a reading after the bad one).
    store.update(&on_two_cpus(130.0, cgroup(1, 2.0, &[])), &agent, &filter);
    let cpu = series(&store, 1, "container.cpu.time").unwrap();
    assert_eq!(cpu.total, Value::Double(3.0));
}
