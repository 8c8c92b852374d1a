//! PCP ingests cgscope: Debian's pcp, its openmetrics PMDA under a private pmcd,
//! scrapes `/metrics`, and `pminfo -f` shows a container's CPU time and run-queue
//! latency buckets with the values cgscope exposes.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent, busy_container,
    common::{self, free_port, http_get, Peer},
    frozen_after, require_root_and_cgroup_v2, serial,
};

/// PCP's programs and the openmetrics PMDA, where Debian's `pcp` puts them.
const PCP_BIN: &str = "/usr/lib/pcp/bin";
const OPENMETRICS_PMDA: &str = "/var/lib/pcp/pmdas/openmetrics/pmdaopenmetrics.python";

/// Why PCP's openmetrics pipeline cannot run here, if it cannot.
fn pcp_missing() -> Option<String> {
    let tools = ["pmcd", "pmnsmerge"].map(|t| Path::new(PCP_BIN).join(t));
    if let Some(t) = tools.iter().find(|t| !t.exists()) {
        return Some(format!(
            "no {} (cargo xtask setup installs pcp)",
            t.display()
        ));
    }
    if !Path::new(OPENMETRICS_PMDA).exists() || !crate::common::have("pminfo") {
        return Some("no openmetrics PMDA or pminfo (cargo xtask setup installs pcp)".into());
    }
    // The PMDA runs on Debian's python3, which has PCP's module, and needs requests.
    let imports = Command::new("/usr/bin/python3")
        .args(["-c", "import pcp.pmda, requests"])
        .stderr(Stdio::null())
        .status();
    if !imports.is_ok_and(|s| s.success()) {
        return Some(
            "/usr/bin/python3 lacks pcp or requests (cargo xtask setup installs python3-requests)"
                .into(),
        );
    }
    None
}

/// A private pmcd on loopback `port` running only the openmetrics PMDA, which
/// scrapes `url` as the source `cgscope` (metrics `openmetrics.cgscope.*`); its
/// namespace, configuration and logs in a temp dir. The machine's own PCP
/// configuration is neither read nor changed.
struct Pcp {
    _pmcd: Peer,
    dir: PathBuf,
    port: u16,
}

impl Drop for Pcp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pcp {
    fn start(url: &str, port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("cgscope-pcp-{}-{port}", std::process::id()));
        let config = dir.join("config.d");
        std::fs::create_dir_all(&config).expect("pcp dir");
        std::fs::write(config.join("cgscope.url"), format!("{url}\n")).expect("cgscope.url");
        // pmcd's own metrics, and the PMDA's dynamic subtree (domain 144, its own).
        std::fs::write(
            dir.join("root_openmetrics"),
            "root {\n\topenmetrics\t144:*:*\n}\n",
        )
        .expect("root_openmetrics");
        let merge = Command::new(Path::new(PCP_BIN).join("pmnsmerge"))
            .arg("/var/lib/pcp/pmns/root_pmcd")
            .arg(dir.join("root_openmetrics"))
            .arg(dir.join("root"))
            .status()
            .expect("pmnsmerge");
        assert!(merge.success(), "pmnsmerge: {merge}");
        std::fs::write(
            dir.join("pmcd.conf"),
            format!(
                "pmcd\t2\tdso\tpmcd_init\t/var/lib/pcp/pmdas/pmcd/pmda_pmcd.so\n\
                 openmetrics\t144\tpipe\tbinary notready\t/usr/bin/python3 {OPENMETRICS_PMDA} -c {} -d 144\n\
                 [access]\nallow \"local:*\" : all;\n",
                config.display()
            ),
        )
        .expect("pmcd.conf");
        let file = |name: &str| dir.join(name);
        let pmcd = Peer(
            Command::new(Path::new(PCP_BIN).join("pmcd"))
                .args(["-f", "-A", "-i", "127.0.0.1", "-p", &port.to_string()])
                .arg("-n")
                .arg(file("root"))
                .arg("-c")
                .arg(file("pmcd.conf"))
                .arg("-s")
                .arg(file("pmcd.socket"))
                .arg("-l")
                .arg(file("pmcd.log"))
                .arg("-x")
                .arg(file("pmcd.err"))
                // The PMDA writes its log in pmcd's directory.
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start pmcd"),
        );
        Self {
            _pmcd: pmcd,
            dir,
            port,
        }
    }

    /// `pminfo -f metrics`: per metric, (instance name, value) of every instance, or
    /// what pminfo said when it failed.
    fn fetch(&self, metrics: &[&str]) -> Result<BTreeMap<String, Vec<(String, String)>>, String> {
        let out = Command::new("pminfo")
            .args(["-h", &format!("127.0.0.1:{}", self.port), "-f"])
            .args(metrics)
            .output()
            .map_err(|e| format!("pminfo: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut values: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut metric = None;
        for line in text.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                metric = Some(line.trim().to_owned());
            } else if let (Some(m), Some(rest)) = (&metric, line.trim().strip_prefix("inst [")) {
                // inst [0 or "0 key:value key:value"] value 12.5
                let Some((name, value)) = rest
                    .split_once(" or \"")
                    .and_then(|(_, r)| r.rsplit_once("\"] value "))
                else {
                    continue;
                };
                values
                    .entry(m.clone())
                    .or_default()
                    .push((name.to_owned(), value.to_owned()));
            }
        }
        if values.is_empty() {
            return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(values)
    }

    /// The PMDA's log, for a failure's message.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("openmetrics.log")).unwrap_or_default()
    }
}

const CPU: &str = "container_cpu_time_seconds_total";
const RUNQ: &str = "container_cpu_runq_latency_seconds";

/// The container's samples in a text exposition: (name, `le`) → value.
fn exposed(text: &str, path: &str) -> BTreeMap<(String, String), f64> {
    let ours = format!("cgscope_cgroup_path=\"{path}\"");
    text.lines()
        .filter(|l| (l.starts_with(CPU) || l.starts_with(RUNQ)) && l.contains(&ours))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?.to_owned();
            let le = series
                .split_once("le=\"")
                .and_then(|(_, r)| r.split('"').next())
                .unwrap_or("")
                .to_owned();
            Some(((name, le), value.parse().ok()?))
        })
        .collect()
}

/// The container's instances in `pminfo -f` output, keyed as [`exposed`].
fn fetched(
    values: &BTreeMap<String, Vec<(String, String)>>,
    path: &str,
) -> BTreeMap<(String, String), f64> {
    let ours = format!("cgscope_cgroup_path:{path}");
    let mut out = BTreeMap::new();
    for (metric, instances) in values {
        let name = metric.trim_start_matches("openmetrics.cgscope.").to_owned();
        for (instance, value) in instances {
            // "N key:value key:value": the labels in the exposition's order.
            let labels: Vec<&str> = instance.split(' ').skip(1).collect();
            if !labels.contains(&ours.as_str()) {
                continue;
            }
            let le = labels
                .iter()
                .find_map(|l| l.strip_prefix("le:"))
                .unwrap_or("")
                .to_owned();
            if let Ok(v) = value.parse() {
                out.insert((name.clone(), le), v);
            }
        }
    }
    out
}

#[test]
fn pcp_openmetrics_shows_a_containers_cpu_and_runq_latency() {
    require_root_and_cgroup_v2!();
    if let Some(reason) = pcp_missing() {
        eprintln!("skipped: {reason}");
        return;
    }
    let _serial = serial();
    let (tree, path) = busy_container("pcp");
    let listen = format!("127.0.0.1:{}", free_port());
    let _agent = agent(&listen, &tree.top.path, &[]);
    let pcp = Pcp::start(&format!("http://{listen}/metrics"), free_port());

    let own = frozen_after(&path, Duration::from_secs(3), || {
        let (_, text) = http_get(&listen, "/metrics").ok()?;
        Some(exposed(&text, &path)).filter(|own| !own.is_empty())
    });
    let waits = own
        .get(&(format!("{RUNQ}_count"), String::new()))
        .copied()
        .unwrap_or(0.0);
    assert!(waits > 50.0, "{waits} waits");
    assert!(
        own.contains_key(&(CPU.to_owned(), String::new())),
        "{own:?}"
    );

    let metrics = [
        CPU,
        &format!("{RUNQ}_bucket"),
        &format!("{RUNQ}_sum"),
        &format!("{RUNQ}_count"),
    ]
    .map(|m| format!("openmetrics.cgscope.{m}"));
    let metrics: Vec<&str> = metrics.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = pcp.fetch(&metrics).map(|v| fetched(&v, &path));
        // pminfo prints a double with 16 significant digits: the value, unless it
        // needs the 17th to be told from its neighbour.
        let same = seen.as_ref().is_ok_and(|seen| {
            seen.len() == own.len()
                && own.iter().all(|(k, want)| {
                    seen.get(k)
                        .is_some_and(|got| (got - want).abs() <= 1e-15 * want.abs())
                })
        });
        if same {
            break seen.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "pminfo shows {seen:?}\ncgscope exposes {own:?}\nPMDA log:\n{}",
            pcp.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let cpu = (CPU.to_owned(), String::new());
    eprintln!(
        "pminfo -f: {} of the container's samples as cgscope exposes them: CPU {} s (cgscope {} s), {waits} run-queue waits in {} classic buckets",
        seen.len(),
        seen[&cpu],
        own[&cpu],
        seen.keys().filter(|(n, _)| n.ends_with("_bucket")).count()
    );
    drop(pcp);
    drop(tree);
}
