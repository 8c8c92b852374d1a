//! `cargo xtask bench cgroups`: CPU time and allocations of one full scan of N
//! cgroups, against the floor the kernel sets: a bare loop that only opens and reads
//! the same files. Run as root; creates the cgroups under the v2 root and removes
//! them. Target: ≤ 40 ms CPU per 1,000 cgroups × 6 files; user time ≤ 1.5× floor.
//! The user/system split comes from getrusage, which samples it at clock ticks: it is
//! noisy for short runs, so the table also shows the total (exact) CPU ratio.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::Read,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use cgscope::{
    probes::ProbeConfig,
    sampler::{resolve_root, Sampler, SamplerConfig},
};

/// Counts allocations, to report allocations per scan.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// This thread's (user, system) CPU time.
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// N empty cgroups below one top directory, removed on drop.
struct Cgroups {
    top: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    fn create(root: &Path, n: usize) -> Self {
        let top = root.join(format!("cgscope-bench-{}", std::process::id()));
        std::fs::create_dir(&top).expect("mkdir (run as root)");
        let dirs = (0..n)
            .map(|i| {
                let d = top.join(format!("c{i}"));
                std::fs::create_dir(&d).expect("mkdir");
                d
            })
            .collect();
        Self { top, dirs }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.top);
    }
}

/// The files one scan opens in a cgroup without controllers below it (this host
/// kind: hybrid). irq.pressure is opened even where it does not exist.
const FILES: [&str; 7] = [
    "cpu.stat",
    "cgroup.controllers",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
    "irq.pressure",
    "cgroup.stat",
];

/// Opens and reads every file of every cgroup: the floor. Plain `read` calls until
/// end of file, as the scan does, and nothing else.
fn floor(dirs: &[PathBuf], buf: &mut [u8]) -> usize {
    let mut files = 0;
    for dir in dirs {
        for name in FILES {
            if let Ok(mut f) = std::fs::File::open(dir.join(name)) {
                while let Ok(n) = f.read(buf) {
                    if n == 0 {
                        files += 1;
                        break;
                    }
                }
            }
        }
    }
    files
}

const ROUNDS: u32 = 20;

fn main() {
    let (_, root) = resolve_root(None).expect("cgroup v2");
    println!("cgroup scan: one full Sampler::sample vs. open+read of the same files ({ROUNDS} rounds, means)\n");
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>14}",
        "cgroups",
        "files",
        "scan user",
        "scan sys",
        "floor user",
        "floor sys",
        "user/floor",
        "cpu/floor",
        "allocs/scan",
        "ms/1000×6files"
    );
    let mut verdicts = Vec::new();
    for n in [100, 1_000, 5_000] {
        let cgroups = Cgroups::create(&root, n);
        let config = SamplerConfig {
            probes: ProbeConfig { max_cgroups: 8192 },
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::start(&config).expect("sampler");
        let mut buf = vec![0u8; 4096];
        let files = floor(&cgroups.dirs, &mut buf); // warm the dentry cache
        let (mut scan_u, mut scan_s, mut floor_u, mut floor_s) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut allocs = 0;
        for _ in 0..ROUNDS {
            let (u0, s0) = thread_cpu();
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let snapshot = sampler.sample(None);
            allocs += ALLOCS.load(Ordering::Relaxed) - a0;
            let (u1, s1) = thread_cpu();
            assert!(snapshot.cgroups.len() > n);
            drop(snapshot);
            floor(&cgroups.dirs, &mut buf);
            let (u2, s2) = thread_cpu();
            scan_u += u1 - u0;
            scan_s += s1 - s0;
            floor_u += u2 - u1;
            floor_s += s2 - s1;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(ROUNDS);
        let per_files = files as f64 / n as f64;
        let normalised = ms(scan_u + scan_s) * (1000.0 / n as f64) * (6.0 / per_files);
        let ratio = scan_u.as_secs_f64() / floor_u.as_secs_f64().max(1e-9);
        let cpu_ratio =
            (scan_u + scan_s).as_secs_f64() / (floor_u + floor_s).as_secs_f64().max(1e-9);
        println!(
            "{n:>8} {per_files:>10.1} {:>10.2}ms {:>10.2}ms {:>10.2}ms {:>10.2}ms {ratio:>10.2} {cpu_ratio:>10.2} {:>12} {normalised:>14.1}",
            ms(scan_u),
            ms(scan_s),
            ms(floor_u),
            ms(floor_s),
            allocs / u64::from(ROUNDS),
        );
        verdicts.push((n, normalised <= 40.0, ratio <= 1.5));
    }
    println!();
    for (n, cpu_ok, user_ok) in verdicts {
        let v = |ok: bool| if ok { "PASS" } else { "MISS" };
        println!(
            "{n:>5} cgroups: ≤ 40 ms per 1000×6 files {}; user ≤ 1.5× floor {}",
            v(cpu_ok),
            v(user_ok)
        );
    }
}
