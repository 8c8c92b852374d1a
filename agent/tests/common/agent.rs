//! The agent and its peers as the tests run them: processes, HTTP, the deploy
//! manifests, resource limits.

use std::{path::PathBuf, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// Stops an agent this test started (SIGTERM to its PID) and returns its exit status
/// and everything it wrote to stderr.
pub fn stop_agent(mut agent: std::process::Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let pid = Pid::from_raw(agent.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let status = agent.wait().expect("wait for the agent");
    let mut stderr = String::new();
    if let Some(mut pipe) = agent.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status, stderr)
}

/// One at a time within a test binary: its tests that start an agent or a workload
/// each see the whole node (the probes' programs, CPU 0, every cgroup), so none may
/// overlap another. A test that panicked leaves the lock usable.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `promtool check metrics` on an exposition: fails the test with promtool's words
/// if it finds a fault.
pub fn promtool_check(exposition: &str) {
    checker_accepts("promtool", &["check", "metrics"], exposition);
}

/// Validates a snapshot (JSON text) against `docs/snapshot.schema.json` with
/// Python's jsonschema (Debian's python3-jsonschema: a validator independent of
/// the schemars that wrote the schema, whose objects admit no unlisted key):
/// fails the test with the first faults, by place in the snapshot.
pub fn snapshot_schema_check(snapshot: &str) {
    const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
faults = sorted(Draft202012Validator(schema).iter_errors(json.load(sys.stdin)),
                key=lambda e: [str(p) for p in e.absolute_path])
for e in faults[:10]:
    print("/".join(str(p) for p in e.absolute_path) or "(root)", ":", e.message[:300])
sys.exit(1 if faults else 0)
"#;
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/snapshot.schema.json");
    checker_accepts("python3", &["-c", VALIDATE, schema], snapshot);
}

/// Feeds `input` to `program` (installed by `cargo xtask setup`, and on the node)
/// and fails the test with its words if it exits with an error.
fn checker_accepts(program: &str, args: &[&str], input: &str) {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };
    let mut checker = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} (cargo xtask setup installs it): {e}"));
    // A checker that stops reading early still answers below.
    let _ = checker
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    let out = checker.wait_with_output().expect(program);
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` over HTTP/1.0; the status and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let (status, body) = http_get_bytes(addr, path, &[])?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET path` over HTTP/1.0 with request `headers`; the status and the body's bytes.
pub fn http_get_bytes(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let status = String::from_utf8_lossy(&response[..head_end])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response.split_off(head_end)))
}

/// A loopback port nobody listens on (the kernel's pick, released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A process this test started (a collector, Prometheus, the agent): SIGTERM to its
/// PID, and only its PID, when dropped.
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// A loop device over a file of ours, detached and removed on drop.
pub struct LoopDevice {
    file: PathBuf,
    pub dev: String,
}

impl LoopDevice {
    pub fn create() -> Option<Self> {
        let file = std::env::temp_dir().join(format!("cgscope-test-{}.img", std::process::id()));
        std::fs::write(&file, vec![0u8; 64 << 20]).ok()?;
        // Direct IO to the backing file: reads reach the disk, not the page cache.
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show", "--direct-io=on"])
            .arg(&file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || dev.is_empty() {
            let _ = std::fs::remove_file(&file);
            return None;
        }
        Some(Self { file, dev })
    }

    pub fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The repository's `deploy/` directory (also copied into the VMs).
pub fn deploy() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn yaml(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The DaemonSet's one container.
pub fn agent_container(daemonset: &serde_json::Value) -> &serde_json::Value {
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The DaemonSet's `capabilities.add`, as Linux spells them, sorted.
pub fn daemonset_capabilities() -> Vec<String> {
    let daemonset = yaml(&deploy().join("kubernetes/daemonset.yaml"));
    let security = &agent_container(&daemonset)["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut names: Vec<String> = security["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("a name")))
        .collect();
    names.sort();
    names
}

/// An agent this test started, stopped (SIGTERM to its PID, then reaped) when
/// dropped, so that a failed assertion leaves nothing running.
pub struct RunningAgent(pub Option<std::process::Child>);

impl RunningAgent {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// Stops it now: its exit status and stderr, as [`stop_agent`] gives them.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        stop_agent(self.0.take().expect("running"))
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            stop_agent(child);
        }
    }
}

/// user_usec + system_usec of a cgroup's `cpu.stat`, in seconds.
pub fn cpu_seconds(dir: &std::path::Path) -> f64 {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).expect("cpu.stat");
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in cpu.stat")) as f64
            * 1e-6
    };
    field("user_usec ") + field("system_usec ")
}

/// The sum of a Prometheus metric's samples (with or without labels) whose line
/// contains `needle`; `None` if there is none.
pub fn metric_sum(text: &str, metric: &str, needle: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            let rest = l.strip_prefix(metric).unwrap_or("");
            (rest.starts_with('{') || rest.starts_with(' ')) && l.contains(needle)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Resident memory of a process, KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// On the real node that `cargo xtask node` boots (where it puts the script that
/// runs the tests).
pub fn on_node() -> bool {
    std::path::Path::new("/opt/cgscope/run").exists()
}

/// Why a test that starts a real container runtime (its daemon or API service)
/// does not run here: runtimes run only on the real node, never on the host.
pub fn runtime_skip_reason() -> Option<&'static str> {
    (!on_node()).then_some("real container runtimes run only on the real node (cargo xtask node)")
}

/// Descriptors a process has open.
pub fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's fds")
        .count() as u64
}

/// A process's descriptor limit.
pub fn descriptor_limit(pid: u32) -> libc::rlimit {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill; nothing is set.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut now) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    now
}

/// Sets the descriptor limit of a process this test started; returns the old one.
pub fn set_descriptor_limit(pid: u32, new: libc::rlimit) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both are valid rlimits; the process is one this test started.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

/// Waits until the agent at `addr` answers `/readyz` with 200 (probes attached,
/// first window done); panics after `within`.
pub fn wait_ready(addr: &str, within: Duration) {
    let started = std::time::Instant::now();
    while !http_get(addr, "/readyz").is_ok_and(|(status, _)| status == 200) {
        assert!(
            started.elapsed() < within,
            "cgscope run at {addr} not ready in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
