//! `cargo xtask bench export`: the cost of one export at 500 synthetic containers
//! (every field a real window fills, histograms with realistic spreads): CPU per data
//! point for the store update + OTLP encoding + gzip, and gzip bytes per point on the
//! wire. Reference, measured in the same run on the same store: the Prometheus text
//! exposition, gzip'd, as a scraper would fetch it.
//! Targets: ≤ 30 B per point, ≤ 2 µs CPU per point.
//!
//! Then the OTLP encoding two ways, on the same store at 100 and 1,000 containers:
//! cgscope's protobuf writer (`otlp::encode`) and opentelemetry-proto's message tree
//! encoded by prost (`otlp::request` + `encode_to_vec`), interleaved round by round;
//! CPU and allocations per request, bytes. The writer's bytes must decode (with
//! prost) to the tree, so both encode the same message. The writer stays only while
//! it is at least 1.5x faster than prost in the same run.

use std::{collections::BTreeMap, time::Duration};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

use cgscope::{
    export::{
        filter::Filter,
        otlp::{self, Temporality},
        points::AgentSample,
        prometheus,
        resource::AgentResource,
        store::Store,
        transport::gzip_bytes,
    },
    histogram::LatencyTotals,
    snapshot::{
        CgroupKind, CgroupSample, Completed, ContainerSample, CpuSample, Host, HostCpu, HostSample,
        Interface, IoDeviceSample, IoSample, LatencySummary, MemorySample, NetworkSample,
        PerOperation, PidsSample, PressureSample, PressureWindow, Qos, Runtime, Snapshot, SCHEMA,
    },
};
use cgscope_common::histogram::Histogram;

#[path = "support/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const CONTAINERS: usize = 500;
const ROUNDS: usize = 20;
const BYTES_TARGET: f64 = 30.0;
const CPU_TARGET_US: f64 = 2.0;
/// The encodings compared, and the writer's least lead over prost to be kept.
const ENCODING_SIZES: [usize; 2] = [100, 1_000];
const ENCODING_ROUNDS: usize = 30;
const WRITER_LEAD: f64 = 1.5;

/// A latency histogram of `n` values spread log-uniformly around `median_ns`.
fn latency(seed: u64, n: u64, median_ns: u64) -> LatencySummary {
    let mut h = Histogram::ZERO;
    let mut x = seed | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let factor = 2f64.powf((x % 1000) as f64 / 1000.0 * 6.0 - 3.0); // ×1/8 .. ×8
        h.record((median_ns as f64 * factor) as u64);
    }
    LatencySummary::from(&LatencyTotals::from_cpus([&h]).since(None))
}

fn pressure(some: f64) -> Option<PressureWindow> {
    Some(PressureWindow {
        some_seconds: Some(some),
        full_seconds: Some(some / 2.0),
        some_avg10: Some(some * 10.0),
        full_avg10: Some(some * 5.0),
    })
}

fn container(i: usize, round: u64) -> CgroupSample {
    let seed = (i as u64 + 1) * 7919 + round;
    let id = format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15);
    let op = |ops| Completed {
        ops,
        bytes: ops * 4096,
        iops: ops as f64 / 10.0,
    };
    CgroupSample {
        path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{i:08x}.slice/cri-containerd-{id}.scope"),
        raw_path_hex: None,
        id: 10_000 + i as u64,
        kind: CgroupKind::Container,
        unreadable: None,
        stats_window_seconds: None,
        container: Some(ContainerSample {
            kind: CgroupKind::Container,
            id: Some(id),
            pod_uid: Some(format!("{i:08x}-0000-4000-8000-000000000000")),
            name: Some(format!("app-{}", i % 7)),
            pod: Some(format!("web-{i}-7d9f")),
            namespace: Some(format!("team-{}", i % 20)),
            runtime: Some(Runtime::Containerd),
            image: Some("registry.example.com/web:1.2.3".into()),
            qos: Some(Qos::Burstable),
            labels: BTreeMap::new(),
            created_seconds: Some(1.7e9),
        }),
        removed: false,
        cpu: CpuSample {
            usage_seconds: Some(1.5),
            user_seconds: Some(1.0),
            system_seconds: Some(0.5),
            periods: Some(100),
            throttled_periods: Some(round % 5),
            throttled_seconds: Some(0.01),
            limit_cores: Some(2.0),
            runq_latency: Some(latency(seed, 2_000, 50_000)),
            ..CpuSample::default()
        },
        memory: Some(MemorySample {
            current_bytes: Some(200 << 20),
            working_set_bytes: Some(150 << 20),
            anon_bytes: Some(120 << 20),
            file_bytes: Some(80 << 20),
            kernel_bytes: Some(4 << 20),
            sock_bytes: Some(1 << 20),
            shmem_bytes: Some(0),
            file_mapped_bytes: Some(10 << 20),
            file_dirty_bytes: Some(1 << 16),
            file_writeback_bytes: Some(0),
            max_bytes: Some(512 << 20),
            swap_current_bytes: Some(0),
            pgfault: Some(1000 + round),
            pgmajfault: Some(round % 3),
            ..MemorySample::default()
        }),
        io: Some(IoSample {
            devices: vec![IoDeviceSample {
                device: "259:0".into(),
                name: Some("nvme0n1".into()),
                read_ops: Some(50),
                write_ops: Some(80),
                read_bytes: Some(50 * 4096),
                write_bytes: Some(80 * 4096),
                discard_ops: Some(0),
                discard_bytes: Some(0),
                completed: Some(PerOperation { read: op(50), write: op(80), ..Default::default() }),
                latency: Some(PerOperation {
                    read: latency(seed + 1, 50, 200_000),
                    write: latency(seed + 2, 80, 400_000),
                    discard: latency(0, 0, 1),
                    flush: latency(0, 0, 1),
                }),
                ..IoDeviceSample::default()
            }],
        }),
        pids: Some(PidsSample { current: 12, max: Some(4096), max_events: Some(0) }),
        pressure: PressureSample {
            cpu: pressure(0.1),
            memory: pressure(0.0),
            io: pressure(0.02),
            irq: None,
        },
        descendants: Some(0),
        dying_descendants: Some(0),
        network: Some(NetworkSample {
            netns: Some(4026532000 + i as u64),
            interfaces: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 1 << 20,
                rx_packets: 900,
                tx_bytes: 1 << 19,
                tx_packets: 700,
                ..Interface::default()
            }],
            tcp_rtt: Some(latency(seed + 3, 30, 300_000)),
            tcp_connect_latency: Some(latency(seed + 4, 5, 500_000)),
            tcp_connect_failures: Some(0),
            tcp_retransmits: Some(round % 4),
            tcp_resets_sent: Some(0),
            tcp_resets_received: Some(0),
            ..NetworkSample::default()
        }),
    }
}

fn snapshot(containers: usize, round: u64) -> Snapshot {
    Snapshot {
        schema: SCHEMA,
        timestamp_seconds: 1.8e9 + round as f64 * 10.0,
        window_seconds: 10.0,
        scan_errors: Default::default(),
        cost: Default::default(),
        host: Host {
            kernel: "6.12.0".into(),
            cgroup_mode: cgscope::snapshot::CgroupMode::Unified,
            cgroup_root: "/sys/fs/cgroup".into(),
            window: HostSample {
                cpu: Some(HostCpu {
                    cpus: 2,
                    user_seconds: 5.0,
                    ..HostCpu::default()
                }),
                ..HostSample::default()
            },
        },
        probes: Vec::new(),
        cgroups: (0..containers).map(|i| container(i, round)).collect(),
    }
}

fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let d =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time and allocations of `f`, and what it returns.
fn measure<T>(f: impl FnOnce() -> T) -> (Duration, u64, T) {
    let (cpu, allocs) = (cpu_time(), counting::allocations());
    let out = f();
    (cpu_time() - cpu, counting::allocations() - allocs, out)
}

/// The writer against prost on one store of `containers` containers: a table row.
fn encodings(containers: usize, agent: &AgentResource, filter: &Filter) -> f64 {
    let mut store = Store::default();
    for round in 0..2 {
        store.update(
            &snapshot(containers, round),
            &AgentSample::default(),
            filter,
        );
    }
    let written = otlp::encode(&store, agent, Temporality::Cumulative);
    let tree = otlp::request(&store, agent, Temporality::Cumulative);
    let decoded = ExportMetricsServiceRequest::decode(written.as_slice()).expect("protobuf");
    assert!(
        decoded == tree,
        "the writer's bytes and the prost tree are different messages"
    );
    let points = store.series().count();
    let (mut writer_us, mut build_us, mut prost_us) = (vec![], vec![], vec![]);
    let (mut writer_allocs, mut prost_allocs, mut prost_bytes) = (0, 0, 0);
    for round in 0..ENCODING_ROUNDS {
        let mut writer = || {
            let (cpu, allocs, _) = measure(|| otlp::encode(&store, agent, Temporality::Cumulative));
            writer_us.push(cpu.as_secs_f64() * 1e6);
            writer_allocs = allocs;
        };
        let mut prost = || {
            let (build, built_allocs, tree) =
                measure(|| otlp::request(&store, agent, Temporality::Cumulative));
            let (encode, encode_allocs, bytes) = measure(|| tree.encode_to_vec());
            build_us.push(build.as_secs_f64() * 1e6);
            prost_us.push((build + encode).as_secs_f64() * 1e6);
            prost_allocs = built_allocs + encode_allocs;
            prost_bytes = bytes.len();
        };
        // Interleaved, each first in every other round.
        if round % 2 == 0 {
            writer();
            prost();
        } else {
            prost();
            writer();
        }
    }
    let (w, b, p) = (median(writer_us), median(build_us), median(prost_us));
    println!(
        "{containers:>10} {points:>8} {w:>14.0} {p:>14.0} {b:>10.0} {:>8.2} {:>10} {prost_bytes:>10} {writer_allocs:>8} {prost_allocs:>9}",
        p / w,
        written.len(),
    );
    p / w
}

fn main() {
    let agent = AgentResource::from_env(|_| None);
    let filter = Filter::default();
    let mut store = Store::default();
    let snapshots: Vec<Snapshot> = (0..=ROUNDS as u64)
        .map(|round| snapshot(CONTAINERS, round))
        .collect();
    store.update(&snapshots[0], &AgentSample::default(), &filter);

    let (mut otlp_us, mut otlp_bytes, mut prom_us, mut prom_bytes) =
        (vec![], vec![], vec![], vec![]);
    // The OTLP CPU split: store update, protobuf encoding, gzip.
    let (mut update_us, mut encode_us, mut gzip_us) = (vec![], vec![], vec![]);
    let mut points = 0usize;
    for s in &snapshots[1..] {
        let start = cpu_time();
        store.update(s, &AgentSample::default(), &filter);
        let updated = cpu_time();
        let encoded = otlp::encode(&store, &agent, Temporality::Cumulative);
        let encoded_at = cpu_time();
        let wire = gzip_bytes(&encoded);
        let otlp_cpu = cpu_time() - start;
        points = store.series().count();
        let per_point = |d: Duration| d.as_secs_f64() * 1e6 / points as f64;
        update_us.push(per_point(updated - start));
        encode_us.push(per_point(encoded_at - updated));
        gzip_us.push(per_point(start + otlp_cpu - encoded_at));

        let start = cpu_time();
        let text = prometheus::render(&store, &agent);
        let scraped = gzip_bytes(text.as_bytes());
        let prom_cpu = cpu_time() - start;

        otlp_us.push(otlp_cpu.as_secs_f64() * 1e6 / points as f64);
        otlp_bytes.push(wire.len() as f64 / points as f64);
        prom_us.push(prom_cpu.as_secs_f64() * 1e6 / points as f64);
        prom_bytes.push(scraped.len() as f64 / points as f64);
    }
    let (ou, ob, pu, pb) = (
        median(otlp_us),
        median(otlp_bytes),
        median(prom_us),
        median(prom_bytes),
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("export of {CONTAINERS} containers: {points} data points per export, median of {ROUNDS} rounds");
    println!(
        "{:<34} {:>12} {:>16} {:>8} {:>8}",
        "", "cgscope OTLP", "Prometheus text", "ratio", "target"
    );
    println!(
        "{:<34} {:>12.2} {:>16.2} {:>8.2} {:>8}",
        "CPU per point (µs, update+encode+gzip)",
        ou,
        pu,
        ou / pu,
        format!("≤{CPU_TARGET_US} {}", verdict(ou <= CPU_TARGET_US))
    );
    for (what, v) in [
        ("  store update", update_us),
        ("  protobuf encoding", encode_us),
        ("  gzip", gzip_us),
    ] {
        println!("{what:<34} {:>12.2}", median(v));
    }
    println!(
        "{:<34} {:>12.1} {:>16.1} {:>8.2} {:>8}",
        "gzip bytes per point",
        ob,
        pb,
        ob / pb,
        format!("≤{BYTES_TARGET} {}", verdict(ob <= BYTES_TARGET))
    );

    println!();
    println!(
        "OTLP encoding, cgscope's writer vs opentelemetry-proto + prost (same store, same message), median of {ENCODING_ROUNDS} rounds"
    );
    println!(
        "{:>10} {:>8} {:>14} {:>14} {:>10} {:>8} {:>10} {:>10} {:>8} {:>9}",
        "containers",
        "points",
        "writer µs",
        "prost µs",
        "(tree µs)",
        "ratio",
        "writer B",
        "prost B",
        "allocs w",
        "allocs p"
    );
    let lead = ENCODING_SIZES
        .iter()
        .map(|&n| encodings(n, &agent, &filter))
        .fold(f64::INFINITY, f64::min);
    println!(
        "the writer's least lead: {lead:.2}x (keep it only if ≥ {WRITER_LEAD}x: {})",
        if lead >= WRITER_LEAD {
            "keep"
        } else {
            "use prost"
        }
    );
}
