//! The blockio probe against independent ground truth: fio's own IO count and
//! completion latency, libbpf-tools `biolatency` on the same run, and `null_blk`'s
//! configured completion time. Real devices, real cgroups, real IO.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use cgscope::{
    sampler::{Sampler, SamplerConfig},
    snapshot::{ExponentialHistogram, IoDeviceSample, Snapshot},
};
use common::TestCgroup;
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// `MAJ:MIN` of a block device, from sysfs.
fn dev_number(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/block/{name}/dev"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Reads completed and the nanoseconds they took, from `/sys/block/<name>/stat`
/// (fields 1 and 4; the time is kept in milliseconds).
fn read_stats(name: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).expect("disk stat");
    let field = |i: usize| -> u64 {
        let text = stat.split_whitespace().nth(i).expect("diskstats field");
        text.parse().expect("diskstats number")
    };
    (field(0), field(3) * 1_000_000)
}

fn device<'a>(snapshot: &'a Snapshot, cg: &TestCgroup, dev: &str) -> Option<&'a IoDeviceSample> {
    let sample = snapshot.cgroups.iter().find(|c| c.path == cg.path)?;
    sample.io.as_ref()?.devices.iter().find(|d| d.device == dev)
}

fn sampler() -> Sampler {
    let sampler = Sampler::start(&SamplerConfig::default()).expect("sampler");
    if let Err(e) = &sampler.probes().blockio {
        panic!("blockio probe did not attach: {e}");
    }
    sampler
}

/// `biolatency -d DISK`, started and attached; its histogram is printed on SIGINT.
struct Biolatency {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Biolatency {
    fn start(disk: &str) -> Option<Self> {
        // Line-buffered, so that its "Tracing..." line (printed once its programs
        // are attached) arrives before it exits.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "biolatency", "-d", disk])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let this = Self { child, lines };
        let attached = this
            .lines
            .recv_timeout(Duration::from_secs(20))
            .is_ok_and(|l| l.contains("Tracing"));
        attached.then_some(this)
    }

    /// Stops it; returns its log2 histogram as (lower bound µs, count).
    fn finish(mut self) -> Vec<(u64, u64)> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let _ = self.child.wait();
        self.lines
            .try_iter()
            .filter_map(|l| {
                // "      256 -> 511        : 3418     |****|"
                let (range, rest) = l.split_once(':')?;
                let low = range.split("->").next()?.trim().parse().ok()?;
                let count = rest.split('|').next()?.trim().parse().ok()?;
                Some((low, count))
            })
            .collect()
    }
}

impl Drop for Biolatency {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Biolatency's cumulative fractions: for each of its buckets, the fraction of IOs
/// below the bucket's upper bound, in seconds. Its bucket `k` holds whole
/// microseconds whose log2 (rounded down) is `k`, and bucket 0 also holds 0 and 1:
/// "0 -> 1", "2 -> 3", "4 -> 7".
fn cumulative(buckets: &[(u64, u64)]) -> Vec<(f64, f64)> {
    let total: u64 = buckets.iter().map(|(_, c)| c).sum();
    let mut below = 0;
    let mut out = Vec::new();
    for &(low, count) in buckets {
        below += count;
        let high_micros = if low == 0 { 2 } else { 2 * low };
        out.push((
            high_micros as f64 * 1e-6,
            below as f64 / total.max(1) as f64,
        ));
    }
    out
}

/// What an exponential histogram says of the fraction of values below `bound`
/// seconds: at least its buckets that end at or below it, at most those that start
/// below it (the bucket that straddles `bound` may fall either side).
fn fraction_below(h: &ExponentialHistogram, bound: f64) -> (f64, f64) {
    let per_octave = f64::from(1 << h.scale);
    let edge = |index: f64| 2f64.powf(index / per_octave);
    let (mut surely, mut maybe) = (h.zero_count, h.zero_count);
    for (i, &count) in h.bucket_counts.iter().enumerate() {
        let index = f64::from(h.offset) + i as f64;
        if edge(index + 1.0) <= bound {
            surely += count;
        }
        if edge(index) < bound {
            maybe += count;
        }
    }
    let total = h.count.max(1) as f64;
    (surely as f64 / total, maybe as f64 / total)
}

#[test]
fn direct_reads_on_a_loop_device_match_fio_and_biolatency() {
    require_root_and_cgroup_v2!();
    if !common::have("fio") {
        eprintln!("skipped: no fio");
        return;
    }
    let Some(disk) = common::LoopDevice::create() else {
        eprintln!("skipped: cannot create a loop device here");
        return;
    };
    let dev = dev_number(disk.name()).expect("loop device in sysfs");
    let reader = TestCgroup::create("bio-reader");
    let mut idle = TestCgroup::create("bio-idle");
    idle.spawn(None, common::sleep_forever);
    let mut sampler = sampler();
    let reference = Biolatency::start(disk.name());
    if reference.is_none() {
        eprintln!("note: biolatency did not start; shape comparison skipped");
    }

    // fio's completion latency also holds the syscall and the wakeup after the
    // completion (tens of µs here), which no block-layer measurement sees: 256 KiB
    // reads make the device's share dominate, as on real disks.
    // Our own device: make sure the kernel keeps its statistics (loop does by default).
    let iostats = format!("/sys/block/{}/queue/iostats", disk.name());
    std::fs::write(&iostats, "1").expect("enable iostats on the test's loop device");
    let before = read_stats(disk.name());
    let fio = reader.fio_reads(&disk.dev, "256k", 3);
    let after = read_stats(disk.name());
    let (fio_ios, fio_p50) = (fio.ios, fio.clat_p50_seconds);
    let snapshot = sampler.sample(None);
    let ours = device(&snapshot, &reader, &dev).expect("the loop device in the reader's io");
    let completed = &ours.completed.as_ref().expect("probe counts").read;
    let latency = &ours.latency.as_ref().expect("queue latency").read;
    let device_latency = &ours.device_latency.as_ref().expect("device latency").read;
    eprintln!(
        "fio: {fio_ios} IOs, clat p50 {:.1} µs; cgscope: {} reads, queue p50 {:.1} µs, \
         device p50 {:.1} µs",
        fio_p50 * 1e6,
        completed.ops,
        latency.p50_seconds * 1e6,
        device_latency.p50_seconds * 1e6
    );
    // The block_rq_complete tracepoint misses a few of the kernel's reads here (0 to 4
    // of 15,000 on a direct-IO loop device; bpftrace on the same tracepoint counts
    // exactly what cgscope counts), hence a tolerance, not equality.
    let diff = completed.ops.abs_diff(fio_ios) as f64 / fio_ios as f64;
    assert!(
        diff <= 0.01,
        "cgscope {} reads vs fio {fio_ios}",
        completed.ops
    );
    assert_eq!(latency.count, completed.ops, "every read timed");
    // The kernel's own accounting of the same reads in the same window: diskstats adds
    // up, per read, completion time less `start_time_ns`, the interval cgscope's queue
    // latency times, so the means agree (diskstats keeps whole milliseconds of a total
    // of seconds). fio's completion latency also holds the syscall and the wakeup, which
    // grow on a busy machine: it bounds the block layer's time from above only.
    let (reads, read_ns) = (after.0 - before.0, after.1 - before.1);
    let kernel_mean = read_ns as f64 * 1e-9 / reads as f64;
    let mean = latency.sum_seconds / latency.count as f64;
    eprintln!(
        "diskstats: {reads} reads, mean {:.1} µs; cgscope mean {:.1} µs",
        kernel_mean * 1e6,
        mean * 1e6
    );
    // Both start at the request's start_time_ns; cgscope ends at block_rq_complete,
    // diskstats at a time the kernel takes near it: before it for a batch of
    // completions (one time for the batch), after it for one request. Above the
    // kernel's mean by 3 % at most (as ever), below it by the gap to the
    // accounting, which grows when the other core is busy: 1-2 % idle, up to 9 %
    // seen with a VM on the other core, where a fixed 3 % failed.
    let rounding = 2e-3 / reads as f64;
    assert!(
        mean <= kernel_mean * 1.03 + rounding && mean >= kernel_mean * 0.75,
        "queue latency mean {mean} vs diskstats {kernel_mean}"
    );
    assert!(
        latency.p50_seconds <= fio_p50 * 1.043,
        "queue p50 {} above fio's clat p50 {fio_p50}",
        latency.p50_seconds
    );
    assert!(device_latency.p50_seconds <= latency.p50_seconds * 1.05);
    let idle_ops = device(&snapshot, &idle, &dev)
        .and_then(|d| d.completed.as_ref())
        .map_or(0, |c| c.read.ops + c.write.ops);
    assert_eq!(
        idle_ops, 0,
        "the idle sibling shows none of the reader's IO"
    );

    // biolatency times the same interval (its issue tracepoint fires right after
    // `io_start_time_ns` is set) in log2 microsecond buckets. At each of its bucket
    // bounds, its share of reads below must lie within what cgscope's finer buckets
    // allow, give or take 2 % of the reads for the instants of the two clock reads.
    if let Some(reference) = reference {
        let theirs = reference.finish();
        eprintln!("biolatency (µs, reads): {theirs:?}");
        for (bound, share) in cumulative(&theirs) {
            let (low, high) = fraction_below(&device_latency.histogram, bound);
            eprintln!(
                "below {:.0} µs: biolatency {share:.4}, cgscope {low:.4}..{high:.4}",
                bound * 1e6
            );
            assert!(
                (low - 0.02..=high + 0.02).contains(&share),
                "below {bound} s: biolatency {share}, cgscope {low}..{high}"
            );
        }
    }
}

/// The null_blk device the VMs load (`irqmode=2`: completions after a timer).
fn null_blk() -> Option<(String, Duration)> {
    let dev = dev_number("nullb0")?;
    let param = |p: &str| std::fs::read_to_string(format!("/sys/module/null_blk/parameters/{p}"));
    if param("irqmode").ok()?.trim() != "2" {
        return None;
    }
    let nsec: u64 = param("completion_nsec").ok()?.trim().parse().ok()?;
    Some((dev, Duration::from_nanos(nsec)))
}

#[test]
fn null_blk_device_latency_is_its_completion_time() {
    require_root_and_cgroup_v2!();
    let Some((dev, completion)) = null_blk() else {
        eprintln!("skipped: no null_blk with a timer completion (the VMs load one)");
        return;
    };
    if !common::have("fio") {
        eprintln!("skipped: no fio");
        return;
    }
    let reader = TestCgroup::create("nullb-reader");
    let mut sampler = sampler();
    let fio = reader.fio_reads("/dev/nullb0", "4k", 2);
    let (fio_ios, fio_p50) = (fio.ios, fio.clat_p50_seconds);
    let snapshot = sampler.sample(None);
    let ours = device(&snapshot, &reader, &dev).expect("nullb0 in the reader's io");
    let device_latency = &ours.device_latency.as_ref().expect("device latency").read;
    let p50 = device_latency.p50_seconds;
    let want = completion.as_secs_f64();
    eprintln!(
        "fio {fio_ios} IOs; device latency: {} timed, p50 {:.1} µs (completion_nsec {:.1} µs)",
        device_latency.count,
        p50 * 1e6,
        want * 1e6
    );
    let probe = snapshot
        .probes
        .iter()
        .find(|p| p.name == "blockio")
        .expect("status");
    eprintln!("blockio: {:?} {:?}", probe.dropped, probe.notes);
    assert!(device_latency.count as f64 >= fio_ios as f64 * 0.95);
    // At least the configured completion time (less a bucket's ±4.3 %), at most what
    // fio timed for the same reads in the same window (the device time plus the
    // syscall and the wakeup, longer on a slow or busy machine), not a fixed band.
    eprintln!("fio clat p50 {:.1} µs", fio_p50 * 1e6);
    assert!(
        (want * 0.957..=fio_p50 * 1.043).contains(&p50),
        "p50 {p50} outside [{want} configured, {fio_p50} timed by fio]"
    );
}

#[test]
fn buffered_writes_flushed_by_writeback_count_for_the_writer() {
    require_root_and_cgroup_v2!();
    let Some((dev, _)) = null_blk() else {
        eprintln!("skipped: no null_blk (the VMs load one)");
        return;
    };
    if let Some(reason) = common::missing_controllers(&["io", "memory"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    const MB: u64 = 16;
    let writer = TestCgroup::create("writeback");
    let mut sampler = sampler();
    // Buffered: dd only dirties the page cache; the kernel's flusher writes it.
    let status = writer
        .command("dd")
        .args(["if=/dev/zero", "of=/dev/nullb0", "bs=1M"])
        .arg(format!("count={MB}"))
        .stderr(Stdio::null())
        .status()
        .expect("dd");
    assert!(status.success());
    // `sync` from the test's own cgroup: whoever issues the writeback, the pages
    // belong to the writer.
    assert!(Command::new("sync").status().expect("sync").success());
    std::thread::sleep(Duration::from_millis(200));
    let snapshot = sampler.sample(None);
    let written = device(&snapshot, &writer, &dev)
        .and_then(|d| d.completed.as_ref())
        .map_or(0, |c| c.write.bytes);
    eprintln!("writer's cgroup: {written} bytes written to nullb0 ({MB} MiB dirtied)");
    assert!(
        written >= MB << 20,
        "{written} bytes attributed to the writer"
    );
}

/// Ids of the loaded maps named `BLOCKIO_UNTIMED_QUEUES` (truncated by the kernel).
fn untimed_queue_maps() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["map", "list", "--json"])
        .output()
        .expect("bpftool");
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    maps.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == "BLOCKIO_UNTIMED")
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

/// No queue here lacks issue timestamps (loop and null_blk queues have writeback
/// throttling, which turns them on), so the entries the completion program adds for
/// such queues are written with bpftool: one for a disk that exists, one for a disk
/// that does not (removed: its entry must go, and its name with it). The agent must
/// attach `block_rq_issue` at the end of that window, and not before.
#[test]
fn issue_fallback_attaches_once_a_queue_needs_it() {
    require_root_and_cgroup_v2!();
    if !common::have("bpftool") {
        eprintln!("skipped: no bpftool");
        return;
    }
    let Some(disk) = std::fs::read_dir("/sys/dev/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.contains(':'))
    else {
        eprintln!("skipped: no block devices in /sys/dev/block");
        return;
    };
    let (major, minor) = disk.split_once(':').expect("MAJ:MIN");
    let (major, minor): (u32, u32) = (major.parse().expect("major"), minor.parse().expect("minor"));
    let removed = "7:1048575";
    assert!(!std::path::Path::new(&format!("/sys/dev/block/{removed}")).exists());

    let before = untimed_queue_maps();
    let mut sampler = sampler();
    let notes = |sampler: &Sampler| {
        sampler
            .probes()
            .blockio
            .as_ref()
            .expect("blockio")
            .status()
            .notes
            .join("\n")
    };
    sampler.sample(None);
    assert!(
        !notes(&sampler).contains("block_rq_issue"),
        "{}",
        notes(&sampler)
    );

    // Maps of samplers that other tests start meanwhile get the entries too: the
    // queues are not real ones, so their results are unchanged.
    let bytes = |v: &[u8]| v.iter().map(u8::to_string).collect::<Vec<_>>();
    let entries = [
        (0xffff_8888_dead_0000u64, major << 20 | minor),
        (0xffff_8888_dead_1000u64, (7 << 20) | 0xf_ffff),
    ];
    for id in untimed_queue_maps()
        .into_iter()
        .filter(|id| !before.contains(id))
    {
        for (queue, dev) in entries {
            let status = Command::new("bpftool")
                .args(["map", "update", "id", &id.to_string(), "key"])
                .args(bytes(&queue.to_le_bytes()))
                .arg("value")
                .args(bytes(&dev.to_le_bytes()))
                .status()
                .expect("bpftool map update");
            assert!(status.success());
        }
    }
    let waiting = notes(&sampler);
    assert!(
        waiting.contains(&format!("{disk}, {removed}: block_rq_issue attaches"))
            || waiting.contains(&format!("{removed}, {disk}: block_rq_issue attaches")),
        "{waiting}"
    );
    sampler.sample(None);
    let attached = notes(&sampler);
    assert!(
        attached.contains(&format!(
            "timed from block_rq_issue (the queue keeps no issue timestamp) on {disk};"
        )),
        "{attached}"
    );
    let links = Command::new("bpftool")
        .args(["link", "list"])
        .output()
        .expect("bpftool link list");
    assert!(String::from_utf8_lossy(&links.stdout).contains("tp 'block_rq_issue'"));
}
