//! Limits enforced by the kernel, as cgscope reports them: cpu.max throttling,
//! memory.max OOM kills, io.max IOPS caps (against fio's own count). They need the
//! controllers enabled below the v2 root: pure cgroup v2, so they run in the VMs.

mod common;

use std::time::Duration;

use cgscope::{
    sampler::{Sampler, SamplerConfig},
    snapshot::{CgroupSample, Snapshot},
};
use common::{truth, TestCgroup};

macro_rules! require_controllers {
    ($($c:literal),*) => {
        require_root_and_cgroup_v2!();
        if let Some(reason) = common::missing_controllers(&[$($c),*]) {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

fn sampler() -> Sampler {
    let config = SamplerConfig::default();
    Sampler::start(&config).expect("sampler")
}

fn find<'a>(snapshot: &'a Snapshot, cg: &TestCgroup) -> &'a CgroupSample {
    snapshot
        .cgroups
        .iter()
        .find(|c| c.path == cg.path)
        .expect("test cgroup in the snapshot")
}

/// `cpu.stat`'s `(usage_usec, nr_periods, nr_throttled)`.
fn cpu_stat(cg: &TestCgroup) -> (f64, f64, f64) {
    let file = cg.dir.join("cpu.stat");
    let key = |k| truth::flat_key(&file, k).expect("cpu.stat key");
    (key("usage_usec"), key("nr_periods"), key("nr_throttled"))
}

/// Whether `value` lies between the counter's growth from `outer.0` to `outer.1`
/// (read just before the sampler's first and just after its last read) and from
/// `inner.0` to `inner.1` (just after the first, just before the last): the
/// window cgscope measured lies between the two.
fn bracketed(value: f64, outer: (f64, f64), inner: (f64, f64)) -> bool {
    (inner.1 - inner.0..=outer.1 - outer.0).contains(&value)
}

#[test]
fn cpu_max_throttles_a_busy_loop() {
    require_controllers!("cpu");
    let mut cg = TestCgroup::create("cpumax");
    std::fs::write(cg.dir.join("cpu.max"), "20000 100000").expect("cpu.max");
    cg.spawn(None, common::spin);
    // The truth: cpu.stat itself, read on both sides of each of the sampler's reads.
    let first_before = cpu_stat(&cg);
    let mut sampler = sampler();
    let first_after = cpu_stat(&cg);
    std::thread::sleep(Duration::from_secs(3));
    let last_before = cpu_stat(&cg);
    let snapshot = sampler.sample(Some(&cg.path));
    let last_after = cpu_stat(&cg);
    let cpu = &find(&snapshot, &cg).cpu;
    let (periods, throttled) = (
        cpu.periods.expect("periods"),
        cpu.throttled_periods.expect("throttled"),
    );
    let usage = cpu.usage_seconds.expect("usage");
    let quota = 0.2 * snapshot.window_seconds;
    eprintln!(
        "periods {periods}, throttled {throttled}, usage {usage:.3}s (quota {quota:.3}s); \
         cpu.stat {first_before:?} {first_after:?} .. {last_before:?} {last_after:?}"
    );
    assert_eq!(cpu.limit_cores, Some(0.2));
    let outer = |f: fn(&(f64, f64, f64)) -> f64| (f(&first_before), f(&last_after));
    let inner = |f: fn(&(f64, f64, f64)) -> f64| (f(&first_after), f(&last_before));
    assert!(
        bracketed(usage * 1e6, outer(|c| c.0), inner(|c| c.0)),
        "usage {usage}"
    );
    assert!(
        bracketed(periods as f64, outer(|c| c.1), inner(|c| c.1)),
        "periods {periods}"
    );
    assert!(
        bracketed(throttled as f64, outer(|c| c.2), inner(|c| c.2)),
        "throttled {throttled}"
    );
    // What the kernel does whatever the machine's speed: the loop ran into its quota
    // (if it ran at all), and never used more than it.
    assert!(periods >= 20 && throttled > 0, "{throttled}/{periods}");
    assert!(
        usage <= quota * 1.05,
        "usage {usage} over the quota {quota}"
    );
    assert!(cpu.throttled_seconds.is_some_and(|t| t > 0.0));
}

#[test]
fn memory_max_kills_a_memory_hog() {
    require_controllers!("memory");
    const LIMIT: u64 = 32 << 20;
    let mut cg = TestCgroup::create("memmax");
    std::fs::write(cg.dir.join("memory.max"), LIMIT.to_string()).expect("memory.max");
    let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
    let mut sampler = sampler();
    let hog = cg.spawn(None, common::eat_memory);
    assert!(
        cg.wait_exit(hog, Duration::from_secs(60)),
        "the hog outlived memory.max"
    );
    let snapshot = sampler.sample(Some(&cg.path));
    let memory = find(&snapshot, &cg)
        .memory
        .as_ref()
        .expect("memory controller");
    let events = memory.events.as_ref().expect("memory.events");
    eprintln!("events {events:?}, peak {:?}", memory.peak_bytes);
    assert_eq!(memory.max_bytes, Some(LIMIT));
    assert!(
        events.max.is_some_and(|n| n >= 1),
        "max events {:?}",
        events.max
    );
    assert!(
        events.oom_kill.is_some_and(|n| n >= 1),
        "oom_kill {:?}",
        events.oom_kill
    );
    // memory.peak is 5.19+: absent before, and then null, never a made-up 0.
    if cg.dir.join("memory.peak").exists() {
        assert!(memory
            .peak_bytes
            .is_some_and(|p| (LIMIT * 9 / 10..=LIMIT).contains(&p)));
    } else {
        assert_eq!(memory.peak_bytes, None, "no memory.peak on this kernel");
    }

    // The oom probe saw the same kill, with its victim.
    let kills = memory.oom_kills.as_ref().expect("oom probe attached");
    eprintln!("oom probe: {kills:?}");
    assert_eq!(Some(kills.count), events.oom_kill, "probe vs memory.events");
    let victim = &kills.victims[0];
    assert_eq!(victim.pid as i32, hog.as_raw());
    assert_eq!(victim.command, common::HOG_COMMAND.to_str().unwrap());
}

#[test]
fn io_max_caps_iops_and_counts_match_fio() {
    require_controllers!("io");
    const IOPS: u64 = 100;
    let Ok(dev) = std::fs::read_to_string("/sys/block/nullb0/dev") else {
        eprintln!("skipped: no null_blk device (/dev/nullb0); the VMs load null_blk");
        return;
    };
    if !common::have("fio") {
        eprintln!("skipped: no fio");
        return;
    }
    let dev = dev.trim().to_owned();
    let cg = TestCgroup::create("iomax");
    std::fs::write(cg.dir.join("io.max"), format!("{dev} riops={IOPS}")).expect("io.max");
    let mut sampler = sampler();
    let fio = cg.fio_reads("/dev/nullb0", "4k", 3);
    let snapshot = sampler.sample(Some(&cg.path));
    let (fio_ios, fio_iops) = (fio.ios, fio.iops);

    let io = find(&snapshot, &cg).io.as_ref().expect("io controller");
    let device = io
        .devices
        .iter()
        .find(|d| d.device == dev)
        .expect("nullb0 in io.stat");
    let (read_ops, read_iops) = (
        device.read_ops.expect("io.stat rios"),
        device.read_iops.expect("io.stat rios"),
    );
    eprintln!(
        "fio: {fio_ios} IOs at {fio_iops:.1} IOPS; cgscope: {} read ops, {:.1} IOPS over {:.2}s",
        read_ops, read_iops, snapshot.window_seconds
    );
    assert_eq!(device.name.as_deref(), Some("nullb0"));
    assert_eq!(device.limit_read_iops, Some(IOPS));
    // The cap holds, however fast the machine (how close fio gets to it depends on
    // the machine and the kernel's throttle, not on cgscope).
    assert!(
        fio_iops <= IOPS as f64 * 1.05,
        "fio ran at {fio_iops} IOPS under a cap of {IOPS}"
    );
    let diff = read_ops.abs_diff(fio_ios) as f64 / fio_ios as f64;
    assert!(diff < 0.02, "cgscope {read_ops} read ops vs fio {fio_ios}");
    assert!(read_iops <= IOPS as f64 * 1.05);
}
