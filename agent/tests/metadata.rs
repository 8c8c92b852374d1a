//! Container names from a real runtime: Podman's Docker-compatible API service with
//! storage in a temporary directory, and a container whose cgroup the test creates in
//! Podman's layout. A hung engine listed first must neither stall scans nor keep
//! Podman's names from arriving.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use cgscope::{
    metadata::MetadataConfig,
    sampler::{Sampler, SamplerConfig},
    snapshot::Runtime,
};
use common::TestTree;

/// Podman with all of its state below `dir`, and its API service.
struct Podman {
    dir: PathBuf,
    service: Option<Child>,
}

impl Podman {
    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root").arg(self.dir.join("root"));
        cmd.arg("--runroot").arg(self.dir.join("runroot"));
        cmd.args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let pid = nix::unistd::Pid::from_raw(service.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = service.wait();
        }
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self.command().args(["system", "reset", "--force"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_podman() -> Option<Podman> {
    Command::new("podman").arg("--version").output().ok()?;
    let dir = std::env::temp_dir().join(format!("cgscope-test-{}-podman", std::process::id()));
    std::fs::create_dir_all(dir.join("rootfs/bin")).expect("mkdir");
    let mut podman = Podman { dir, service: None };
    std::fs::copy("/bin/busybox", podman.dir.join("rootfs/bin/busybox")).ok()?;
    let tar = podman.dir.join("rootfs.tar");
    let tarred = Command::new("tar")
        .arg("-C")
        .arg(podman.dir.join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status();
    assert!(tarred.is_ok_and(|s| s.success()), "tar the test image");
    podman.run(&["import", &tar.to_string_lossy(), "localhost/cgscope-test:1"]);
    let service = podman
        .command()
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", podman.socket().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start podman system service");
    podman.service = Some(service);
    let started = Instant::now();
    while !podman.socket().exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "podman service did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(podman)
}

/// A unix socket that accepts connections and never answers.
fn hung_engine(path: &Path) -> std::thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind hung socket");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn podman_names_its_containers() {
    require_root_and_cgroup_v2!();
    if let Some(why) = common::runtime_skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(podman) = start_podman() else {
        eprintln!("skipped: no podman");
        return;
    };
    let created = podman.run(&[
        "create",
        "--name",
        "web-1",
        "--label",
        "io.kubernetes.pod.name=shop",
        "--label",
        "evil=\u{1b}[31mred\n",
        "localhost/cgscope-test:1",
        "/bin/busybox",
        "true",
    ]);
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "container id {id:?}");

    let mut tree = TestTree::create("meta");
    let path = tree.mkdir(&format!("machine.slice/libpod-{id}.scope"));
    let hung = podman.dir.join("hung.sock");
    let _hung = hung_engine(&hung);
    // A scan that waited on the hung engine would take its whole timeout: one that
    // takes less than half of it did not wait, however slow the machine's scans
    // (on the TCG node in December 2026 the first scans took 2.8-3.2 s: half of a
    // 5 s timeout was too little to tell the two apart).
    let timeout = Duration::from_secs(20);
    let config = SamplerConfig {
        metadata: MetadataConfig {
            docker_sockets: vec![hung, podman.socket()],
            timeout,
            ..MetadataConfig::default()
        },
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::start(&config).expect("sampler");
    let deadline = Instant::now() + Duration::from_secs(60);
    let container = loop {
        let started = Instant::now();
        let snapshot = sampler.sample(Some(&tree.top.path));
        assert!(
            started.elapsed() < timeout / 2,
            "a scan waited on a runtime: {:?}",
            started.elapsed()
        );
        let sample = snapshot
            .cgroups
            .iter()
            .find(|c| c.path == path)
            .expect("container cgroup");
        let container = sample.container.clone().expect("container object");
        if container.name.is_some() || Instant::now() > deadline {
            break container;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(container.id.as_deref(), Some(id.as_str()));
    assert_eq!(container.name.as_deref(), Some("web-1"));
    assert_eq!(container.image.as_deref(), Some("localhost/cgscope-test:1"));
    assert_eq!(container.runtime, Some(Runtime::Podman));
    assert_eq!(container.pod.as_deref(), Some("shop"));
    // Created by `podman create` above, within this test (Docker API `Created`).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let created = container
        .created_seconds
        .expect("created time from the runtime");
    assert!(
        (now - 120.0..=now + 1.0).contains(&created),
        "created {created}, now {now}"
    );
    assert_eq!(
        container.labels.get("evil").map(String::as_str),
        Some("[31mred"),
        "control characters stripped"
    );
}
