//! Who caused the wait, against the scheduler's own accounting: two busy loops in
//! two cgroups pinned to one CPU wait only while the other runs, so each one's wait
//! blamed on the other must be the other's CPU time on that CPU (`schedstat`), and
//! the causes must add up to the wait the probe measured. A busy loop alone under a
//! `cpu.max` quota waits while throttled: its own-quota time against `cpu.stat`'s
//! `throttled_usec`.

mod common;

use std::time::Duration;

use cgscope::{
    sample::{BlameCauses, CgroupSample, RunqBlame},
    sampler::{Sampler, SamplerConfig},
};
use common::{schedstat, TestCgroup};

const WINDOW: Duration = Duration::from_secs(3);

fn find<'a>(cgroups: &'a [CgroupSample], cgroup: &TestCgroup) -> &'a CgroupSample {
    cgroups
        .iter()
        .find(|c| c.path == cgroup.path)
        .unwrap_or_else(|| panic!("{} missing from the snapshot", cgroup.path))
}

fn total(c: &BlameCauses) -> f64 {
    c.own
        + c.same_pod
        + c.other_containers
        + c.system
        + c.kernel
        + c.idle
        + c.own_quota
        + c.removed
        + c.unattributed
}

/// The sampler, with blame attached (on by default, on every kernel cgscope runs on).
fn sampler() -> Sampler {
    let sampler = Sampler::start(&SamplerConfig::default()).expect("sampler");
    match &sampler.probes().runq {
        Ok(runq) => match &runq.blame {
            Some(Ok(_)) => sampler,
            Some(Err(e)) => panic!("blame did not attach: {e}"),
            None => panic!("blame is on by default"),
        },
        Err(e) => panic!("runq probe did not attach: {e}"),
    }
}

/// The blame of `sample`, and that its causes add up to its measured wait: both
/// come from the same switch-ins, but the agent reads the two maps one after the
/// other, so a wait that ends between the reads (at the window's start or end)
/// falls in one window for the one and the next for the other: one wait per end,
/// at most the longest of the window.
fn blame_of(sample: &CgroupSample) -> &RunqBlame {
    let blame = sample.cpu.runq_blame.as_ref().expect("runq_blame");
    let wait = sample.cpu.runq_latency.as_ref().expect("runq latency");
    let sum = total(&blame.causes);
    eprintln!(
        "{}: waited {:.4} s; blamed {sum:.4} s: {:?}; culprits {:?}",
        sample.path,
        wait.sum_seconds,
        blame.causes,
        blame
            .culprits
            .iter()
            .map(|c| (&c.path, c.seconds))
            .collect::<Vec<_>>()
    );
    let between_reads = 2.0 * wait.max_bucket_seconds;
    assert!(
        (sum - wait.sum_seconds).abs() <= between_reads + 0.001 * wait.sum_seconds,
        "the causes ({sum} s) do not add up to the wait ({} s, longest wait ≤ {} s)",
        wait.sum_seconds,
        wait.max_bucket_seconds
    );
    blame
}

#[test]
fn a_neighbour_on_the_same_cpu_is_blamed_for_exactly_its_cpu_time() {
    require_root_and_cgroup_v2!();
    let mut victim = TestCgroup::create("victim");
    let mut neighbour = TestCgroup::create("neighbour");
    let v = victim.spawn(Some(0), common::spin);
    let n = neighbour.spawn(Some(0), common::spin);
    let mut sampler = sampler();
    // The truth: the neighbour's CPU time in the window, read on both sides of it.
    // The victim never sleeps, so it waits whenever the neighbour runs.
    let (n_before, v_before) = (schedstat(n), schedstat(v));
    std::thread::sleep(WINDOW);
    let snapshot = sampler.sample(None);
    let (n_after, v_after) = (schedstat(n), schedstat(v));
    let neighbour_cpu = (n_after.0 - n_before.0) as f64 * 1e-9;
    let victim_delay = (v_after.1 - v_before.1) as f64 * 1e-9;

    let blame = blame_of(find(&snapshot.cgroups, &victim));
    let on_neighbour: f64 = blame
        .culprits
        .iter()
        .filter(|c| c.path == neighbour.path)
        .map(|c| c.seconds)
        .sum();
    eprintln!(
        "victim: blamed {on_neighbour:.4} s on the neighbour, whose CPU time was \
         {neighbour_cpu:.4} s (the victim's run_delay {victim_delay:.4} s)"
    );
    assert!(
        neighbour_cpu > 0.3 * WINDOW.as_secs_f64(),
        "the loops did not share the CPU: {neighbour_cpu} s"
    );
    assert_eq!(
        blame.culprits.first().map(|c| c.path.as_str()),
        Some(neighbour.path.as_str()),
        "the neighbour is the first culprit"
    );
    let error = (on_neighbour - neighbour_cpu).abs() / neighbour_cpu;
    assert!(
        error < 0.05,
        "blamed {on_neighbour} s vs the neighbour's {neighbour_cpu} s of CPU: {:.1}% off",
        error * 100.0
    );
    // Neither is the other's container, pod or descendant: a system cgroup here.
    assert!(blame.causes.system >= on_neighbour, "{:?}", blame.causes);
    assert_eq!(
        blame.causes.own, 0.0,
        "one thread waits on nobody of its own"
    );
    // And the other way round.
    let theirs = blame_of(find(&snapshot.cgroups, &neighbour));
    assert_eq!(
        theirs.culprits.first().map(|c| c.path.as_str()),
        Some(victim.path.as_str())
    );
}

#[test]
fn a_wait_under_its_own_quota_is_own_quota_as_cpu_stat_throttled_says() {
    require_root_and_cgroup_v2!();
    if let Some(reason) = common::missing_controllers(&["cpu"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut limited = TestCgroup::create("quota");
    std::fs::write(limited.dir.join("cpu.max"), "20000 100000").expect("cpu.max");
    limited.spawn(Some(0), common::spin);
    let mut sampler = sampler();
    if let Ok(runq) = &sampler.probes().runq {
        let notes = runq.notes().join("; ");
        if !notes.contains("throttled time told apart") {
            eprintln!("skipped: {notes}");
            return;
        }
    }
    let throttled = |cg: &TestCgroup| {
        common::truth::flat_key(&cg.dir.join("cpu.stat"), "throttled_usec").expect("throttled_usec")
            * 1e-6
    };
    let before = throttled(&limited);
    std::thread::sleep(WINDOW);
    let snapshot = sampler.sample(None);
    let after = throttled(&limited);
    let truth = after - before;

    let blame = blame_of(find(&snapshot.cgroups, &limited));
    eprintln!(
        "quota: own quota {:.4} s; cpu.stat throttled {truth:.4} s",
        blame.causes.own_quota
    );
    assert!(
        truth > 0.5 * WINDOW.as_secs_f64(),
        "not throttled: {truth} s"
    );
    // One thread on one CPU: it is throttled exactly while that CPU's queue of
    // its group is. The window's edges cut a throttle period (100 ms) at most.
    assert!(
        (blame.causes.own_quota - truth).abs() < 0.1 + 0.05 * truth,
        "own quota {} s vs throttled {truth} s",
        blame.causes.own_quota
    );
    assert!(
        blame.causes.idle < 0.05 * truth,
        "a throttled wait is not idle time: {:?}",
        blame.causes
    );
}
