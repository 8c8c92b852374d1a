//! Who caused the wait, against the scheduler's own accounting in the same window.
//!
//! Busy loops pinned to one CPU wait only while another runs there, so the wait a
//! victim's loop is blamed on each neighbour must be that neighbour's CPU time
//! (`/proc/<pid>/schedstat`). A loop alone under a `cpu.max` quota waits while
//! throttled: its own-quota time against `cpu.stat`'s `throttled_usec`. Two
//! containers of one pod waiting on each other are "same pod".
//!
//! Every workload starts frozen (`cgroup.freeze`) and is frozen again before the
//! truth is read and the agent samples: nothing of theirs runs or waits at either
//! edge, so the truth and the agent see the same window, and every wait the agent
//! measured has ended and been split.

mod common;

use std::time::Duration;

use cgscope::{
    sampler::{Sampler, SamplerConfig},
    snapshot::{BlameCauses, CgroupSample, RunqBlame},
};
use common::{find, schedstat, set_frozen, TestTree};
use nix::unistd::Pid;

const WINDOW: Duration = Duration::from_secs(3);

/// Attribution against truth: the bound.
const TOLERANCE: f64 = 0.10;

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
/// Started before the workloads exist: none of their waits predates its window.
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

/// The blame of `path`, and that its causes add up to the wait it measured: each
/// wait is split whole when it ends, and all of them have ended (frozen).
fn blame_of<'a>(cgroups: &'a [CgroupSample], path: &str) -> &'a RunqBlame {
    let sample = find(cgroups, path);
    let blame = sample.cpu.runq_blame.as_ref().expect("runq_blame");
    let wait = sample.cpu.runq_latency.as_ref().expect("runq latency");
    let sum = total(&blame.causes);
    eprintln!(
        "{path}: waited {:.4} s in {} waits; blamed {sum:.4} s: {:?}; culprits {:?}",
        wait.sum_seconds,
        wait.count,
        blame.causes,
        blame
            .culprits
            .iter()
            .map(|c| (&c.path, c.cause, c.seconds))
            .collect::<Vec<_>>()
    );
    assert!(
        (sum - wait.sum_seconds).abs() <= 1e-6 + 1e-9 * wait.count as f64,
        "the causes ({sum} s) do not add up to the wait ({} s)",
        wait.sum_seconds
    );
    blame
}

/// Seconds of `blame` on the culprit `path`.
fn on(blame: &RunqBlame, path: &str) -> f64 {
    blame
        .culprits
        .iter()
        .filter(|c| c.path == path)
        .map(|c| c.seconds)
        .sum()
}

/// A task running `body` in `rel` of `tree`, frozen, pinned to `cpu`.
fn frozen_task(tree: &mut TestTree, rel: &str, cpu: usize, body: fn() -> !) -> Pid {
    set_frozen(&tree.top.dir.join(rel), true);
    let pid = tree.spawn(rel, || {}, body);
    common::pin(pid, cpu);
    pid
}

/// Gives `pid` in `rel` a CPU share: `cpu.weight` where the cpu controller is
/// delegated (then weights divide the CPU between cgroups), and the nice level of
/// the same weight (where it is not, as on a hybrid host, nice does).
fn share(tree: &TestTree, rel: &str, pid: Pid, weight: u32, nice: i32) {
    let file = tree.top.dir.join(rel).join("cpu.weight");
    if file.exists() {
        std::fs::write(&file, weight.to_string()).expect("cpu.weight");
    }
    // SAFETY: setpriority(2) on a child this test started.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid.as_raw() as u32, nice) };
    assert_eq!(rc, 0, "setpriority: {}", std::io::Error::last_os_error());
}

/// Runs the frozen cgroups `rels` of `tree` for the window, thawed in order and
/// frozen in reverse order (so the first stays runnable while the others run).
fn run_window(tree: &TestTree, rels: &[&str]) {
    for rel in rels {
        set_frozen(&tree.top.dir.join(rel), false);
    }
    std::thread::sleep(WINDOW);
    for rel in rels.iter().rev() {
        set_frozen(&tree.top.dir.join(rel), true);
    }
}

fn cpu_seconds(before: (u64, u64), after: (u64, u64)) -> f64 {
    (after.0 - before.0) as f64 * 1e-9
}

fn assert_near(what: &str, blamed: f64, truth: f64) {
    let error = (blamed - truth).abs() / truth;
    eprintln!(
        "{what}: blamed {blamed:.4} s, CPU time {truth:.4} s ({:.1}% off)",
        error * 100.0
    );
    assert!(
        error < TOLERANCE,
        "{what}: blamed {blamed} s vs {truth} s of CPU: {:.1}% off",
        error * 100.0
    );
}

#[test]
fn each_neighbour_is_blamed_for_its_cpu_time_and_a_control_for_nothing() {
    require_root_and_cgroup_v2!();
    let mut sampler = sampler();
    let mut tree = TestTree::create("blame");
    let rels = ["victim", "heavy", "light", "control"];
    for rel in rels {
        tree.mkdir_delegated(rel);
    }
    let cpus = common::allowed_cpus();
    let victim = frozen_task(&mut tree, "victim", cpus[0], common::spin);
    let heavy = frozen_task(&mut tree, "heavy", cpus[0], common::spin);
    let light = frozen_task(&mut tree, "light", cpus[0], common::spin);
    // The control runs on another CPU where there is one; with one CPU it stays
    // frozen (even a sleeper runs for a moment when thawed and frozen).
    let mut thaw = vec!["victim", "light", "heavy"];
    match cpus.get(1) {
        Some(&cpu) => {
            eprintln!("control: a busy loop on CPU {cpu}");
            frozen_task(&mut tree, "control", cpu, common::spin);
            thaw.insert(1, "control");
        }
        None => {
            eprintln!("control: one CPU here, the control stays frozen");
            frozen_task(&mut tree, "control", cpus[0], common::sleep_forever);
        }
    }
    // Twice and half the victim's share (weights 200/100/50, nice -3/0/3).
    share(&tree, "heavy", heavy, 200, -3);
    share(&tree, "light", light, 50, 3);

    let before = [heavy, light, victim].map(schedstat);
    run_window(&tree, &thaw);
    let after = [heavy, light, victim].map(schedstat);
    let snapshot = sampler.sample(None);

    let path = |rel: &str| format!("{}/{rel}", tree.top.path);
    let heavy_cpu = cpu_seconds(before[0], after[0]);
    let light_cpu = cpu_seconds(before[1], after[1]);
    eprintln!(
        "victim: run_delay {:.4} s (schedstat)",
        (after[2].1 - before[2].1) as f64 * 1e-9
    );
    assert!(
        heavy_cpu > 1.3 * light_cpu && light_cpu > 0.05 * WINDOW.as_secs_f64(),
        "the shares did not take: heavy {heavy_cpu} s, light {light_cpu} s of CPU"
    );
    let blame = blame_of(&snapshot.cgroups, &path("victim"));
    assert_near("victim on heavy", on(blame, &path("heavy")), heavy_cpu);
    assert_near("victim on light", on(blame, &path("light")), light_cpu);
    assert_eq!(
        blame.culprits.first().map(|c| c.path.clone()),
        Some(path("heavy")),
        "the heavy neighbour is the first culprit"
    );
    // None is the other's container, pod or descendant: system cgroups here.
    assert!(
        blame.causes.system >= on(blame, &path("heavy")) + on(blame, &path("light")),
        "{:?}",
        blame.causes
    );
    assert_eq!(
        blame.causes.own, 0.0,
        "one thread waits on nobody of its own"
    );
    assert_eq!(
        on(blame, &path("control")),
        0.0,
        "the control never held the victim's CPU"
    );
    // The neighbours waited on each other and on the victim, never on the control.
    for rel in ["heavy", "light"] {
        let theirs = blame_of(&snapshot.cgroups, &path(rel));
        assert!(
            on(theirs, &path("victim")) > 0.0,
            "{rel} waited on the victim"
        );
        assert_eq!(on(theirs, &path("control")), 0.0);
    }
    // And the control waited on none of them.
    if let Some(Some(control)) = find(&snapshot.cgroups, &path("control"))
        .cpu
        .runq_blame
        .as_ref()
        .map(|b| (total(&b.causes) > 0.0).then_some(b))
    {
        for rel in ["victim", "heavy", "light"] {
            assert_eq!(on(control, &path(rel)), 0.0, "the control waited on {rel}");
        }
    }
}

#[test]
fn two_containers_of_one_pod_are_same_pod_not_neighbours() {
    require_root_and_cgroup_v2!();
    let mut sampler = sampler();
    let mut tree = TestTree::create("pod");
    let pod = "kubepods.slice/kubepods-pod0b1a7e57_0000_4000_8000_000000000017.slice";
    let web = format!("{pod}/cri-containerd-{:064x}.scope", 0x17a);
    let sidecar = format!("{pod}/cri-containerd-{:064x}.scope", 0x17b);
    tree.mkdir_delegated(&web);
    tree.mkdir_delegated(&sidecar);
    let cpu = common::allowed_cpus()[0];
    let w = frozen_task(&mut tree, &web, cpu, common::spin);
    let s = frozen_task(&mut tree, &sidecar, cpu, common::spin);

    let before = [w, s].map(schedstat);
    run_window(&tree, &[&web, &sidecar]);
    let after = [w, s].map(schedstat);
    let snapshot = sampler.sample(None);

    let path = |rel: &str| format!("{}/{rel}", tree.top.path);
    for (me, other, i, label) in [
        (&web, &sidecar, 1, "web on its pod's sidecar"),
        (&sidecar, &web, 0, "sidecar on its pod's web"),
    ] {
        let blame = blame_of(&snapshot.cgroups, &path(me));
        let culprit = blame
            .culprits
            .first()
            .unwrap_or_else(|| panic!("{me} has no culprit"));
        assert_eq!(culprit.path, path(other));
        assert_eq!(culprit.cause, "same_pod");
        assert_eq!(
            blame.causes.other_containers, 0.0,
            "a container of its own pod is not a neighbour: {:?}",
            blame.causes
        );
        assert_near(
            label,
            blame.causes.same_pod,
            cpu_seconds(before[i], after[i]),
        );
    }
}

#[test]
fn a_wait_under_its_own_quota_is_own_quota_as_cpu_stat_throttled_says() {
    require_root_and_cgroup_v2!();
    if let Some(reason) = common::missing_controllers(&["cpu"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut sampler = sampler();
    if let Ok(runq) = &sampler.probes().runq {
        let notes = runq.notes().join("; ");
        if !notes.contains("throttled time told apart") {
            eprintln!("skipped: {notes}");
            return;
        }
    }
    let mut tree = TestTree::create("quota");
    tree.mkdir_delegated("limited");
    let dir = tree.top.dir.join("limited");
    std::fs::write(dir.join("cpu.max"), "20000 100000").expect("cpu.max");
    frozen_task(
        &mut tree,
        "limited",
        common::allowed_cpus()[0],
        common::spin,
    );
    let throttled = || {
        common::truth::flat_key(&dir.join("cpu.stat"), "throttled_usec").expect("throttled_usec")
            * 1e-6
    };
    let before = throttled();
    run_window(&tree, &["limited"]);
    // A throttle is added to `throttled_usec` when it ends: the frozen loop last
    // ran after its last unthrottle, so all of them have ended.
    let truth = throttled() - before;
    let snapshot = sampler.sample(None);

    let blame = blame_of(&snapshot.cgroups, &format!("{}/limited", tree.top.path));
    eprintln!(
        "quota: own quota {:.4} s; cpu.stat throttled {truth:.4} s",
        blame.causes.own_quota
    );
    assert!(
        truth > 0.5 * WINDOW.as_secs_f64(),
        "not throttled: {truth} s"
    );
    let error = (blame.causes.own_quota - truth).abs() / truth;
    assert!(
        error < TOLERANCE,
        "own quota {} s vs throttled {truth} s: {:.1}% off",
        blame.causes.own_quota,
        error * 100.0
    );
    assert!(
        blame.culprits.is_empty() || blame.culprits.iter().all(|c| c.seconds < 0.05 * truth),
        "nothing else ran there long: {:?}",
        blame.culprits
    );
    assert!(
        blame.causes.idle < 0.05 * truth,
        "a throttled wait is not idle time: {:?}",
        blame.causes
    );
}
