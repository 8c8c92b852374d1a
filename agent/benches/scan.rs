//! `cargo xtask bench cgroups`: CPU time and allocations of one full scan of N
//! cgroups, against the floor the kernel sets: the scan's own filesystem calls on this
//! host (recorded by `cgroup::trace`: the same directories listed, the same files
//! opened and read, whatever controllers and kernel the host has), replayed bare.
//! Run as root; creates the cgroups under the v2 root and removes them. Targets, as ratios to the floor measured in the
//! same rounds: CPU ≤ 1.2x the floor's, user time ≤ 1.5x (milliseconds are printed,
//! not judged).
//! The user/system split comes from getrusage, which samples it at clock ticks: it is
//! noisy for short runs, so the table also shows the total (exact) CPU ratio.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use cgscope::{
    cgroup::trace,
    probes::ProbeConfig,
    sampler::{resolve_root, Sampler, SamplerConfig},
};

#[path = "support/containers.rs"]
#[allow(dead_code)] // only its controllers helper: these cgroups have no tasks
mod containers;
#[path = "support/counting.rs"]
mod counting;
#[path = "support/floor.rs"]
mod floor;

use floor::{thread_cpu, Floor};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// N empty cgroups below one top directory, removed on drop.
struct Cgroups {
    top: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    fn create(root: &Path, n: usize) -> Self {
        let top = root.join(format!("cgscope-bench-{}", std::process::id()));
        std::fs::create_dir(&top).expect("mkdir (run as root)");
        containers::enable_controllers(&top).expect("enable the controllers below the top");
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

/// Rounds per size unless `--rounds N` says otherwise.
const ROUNDS: u32 = 50;

fn main() {
    let (_, root) = resolve_root(None).expect("cgroup v2");
    // `cargo bench --bench scan -- 1000 --rounds 10`: sizes, and rounds per size.
    let (mut sizes, mut rounds) = (Vec::new(), ROUNDS);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), arg.parse()) {
            ("--rounds", _) => {
                rounds = args
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds N");
            }
            (_, Ok(n)) => sizes.push(n),
            _ => {} // cargo bench's `--bench`
        }
    }
    if sizes.is_empty() {
        sizes = vec![100, 1_000, 5_000];
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "cgroup scan on {}, kernel {}: one full Sampler::sample vs. a replay of its own file \
         reads ({rounds} rounds, means)\n",
        root.display(),
        kernel.trim()
    );
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>14}",
        "cgroups",
        "files/cg",
        "scan user",
        "scan sys",
        "floor user",
        "floor sys",
        "user/floor",
        "cpu/floor",
        "allocs/scan",
        "µs/file"
    );
    let mut verdicts = Vec::new();
    for n in sizes {
        let _cgroups = Cgroups::create(&root, n); // removed at the end of the round
        let config = SamplerConfig {
            probes: ProbeConfig {
                max_cgroups: 8192,
                ..SamplerConfig::default().probes
            },
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::start(&config).expect("sampler");
        sampler.sample(None); // the first window pays for attaching
        let (_, calls) = trace::record(|| sampler.sample(None));
        let mut floor = Floor::new(&calls);
        let files = floor.files();
        floor.replay(); // warm the dentry cache
        let (mut scan_u, mut scan_s, mut floor_u, mut floor_s) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        let mut allocs = 0;
        for _ in 0..rounds {
            let (u0, s0) = thread_cpu();
            let a0 = counting::allocations();
            let snapshot = sampler.sample(None);
            allocs += counting::allocations() - a0;
            let (u1, s1) = thread_cpu();
            assert!(snapshot.cgroups.len() > n);
            drop(snapshot);
            floor.replay();
            let (u2, s2) = thread_cpu();
            scan_u += u1 - u0;
            scan_s += s1 - s0;
            floor_u += u2 - u1;
            floor_s += s2 - s1;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(rounds);
        let per_files = files as f64 / n as f64;
        let per_file = |d: Duration| ms(d) * 1e3 / files.max(1) as f64;
        let normalised = per_file(scan_u + scan_s);
        // getrusage's split is sampled at clock ticks: below a few ticks in all
        // rounds, the floor's user time is not measured, and neither is the ratio.
        let ratio = (floor_u >= Duration::from_millis(20))
            .then(|| scan_u.as_secs_f64() / floor_u.as_secs_f64());
        let cpu_ratio =
            (scan_u + scan_s).as_secs_f64() / (floor_u + floor_s).as_secs_f64().max(1e-9);
        println!(
            "{n:>8} {per_files:>10.1} {:>10.2}ms {:>10.2}ms {:>10.2}ms {:>10.2}ms {:>10} {cpu_ratio:>10.2} {:>12} {normalised:>14.2}",
            ms(scan_u),
            ms(scan_s),
            ms(floor_u),
            ms(floor_s),
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            allocs / u64::from(rounds),
        );
        let floor_normalised = per_file(floor_u + floor_s);
        verdicts.push((
            n,
            cpu_ratio,
            normalised,
            floor_normalised,
            ratio.map(|r| r <= 1.5),
        ));
    }
    println!();
    // Judged by ratios to the floor measured in the same rounds; the milliseconds
    // are printed, not judged (this machine's floor moves from run to run).
    for (n, cpu_ratio, scan_us, floor_us, user_ok) in verdicts {
        let v = |ok: Option<bool>| match ok {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "not measurable (floor's user time below clock-tick resolution)",
        };
        println!(
            "{n:>5} cgroups: CPU {cpu_ratio:.2}x the floor's, target ≤ 1.2x: {} \
             ({scan_us:.2} vs {floor_us:.2} µs per file); user ≤ 1.5× floor {}",
            v(Some(cpu_ratio <= 1.2)),
            v(user_ok)
        );
    }
}
