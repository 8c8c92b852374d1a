//! The node's runtimes set up as a node's are: images made here from Debian's
//! busybox-static and imported into each runtime (no registry can be reached),
//! containerd's CRI with kubelet's cgroup driver of choice and a CNI network, and
//! the Docker and Podman API services.

use std::{
    path::Path,
    process::Command,
    sync::Once,
    time::{Duration, Instant},
};

use super::cri::Cri;

/// The workload image: busybox-static and its applets, nothing else.
pub const BUSYBOX: &str = "cgscope.local/busybox:1";
/// The pod sandbox image (what `registry.k8s.io/pause` is to a node): sleeps.
pub const PAUSE: &str = "cgscope.local/pause:1";

pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Runs a bash `script`, says how long it took, and returns its stdout; panics with
/// its stderr when it fails.
pub fn sh(script: &str) -> String {
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash");
    eprintln!(
        "node: `{script}` ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `timeout` for `ready`, polling every 200 ms.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not ready after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "node: {what} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Makes both images once and loads them into containerd (namespace `k8s.io`, where
/// the CRI looks), Docker and Podman: `podman import` builds each from a tar of a
/// busybox root, `podman save` writes one docker-archive that the three load.
pub fn images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        sh("set -e
            root=/tmp/busybox-root
            rm -rf $root && mkdir -p $root/bin $root/tmp $root/proc $root/sys $root/dev
            cp /bin/busybox $root/bin/busybox
            for applet in $(/bin/busybox --list); do
              [ -e $root/bin/$applet ] || ln -s busybox $root/bin/$applet
            done
            tar -C $root -cf /tmp/busybox-root.tar .");
        sh(&format!(
            "podman import --change 'CMD [\"/bin/sh\"]' /tmp/busybox-root.tar {BUSYBOX} && \
             podman import --change 'ENTRYPOINT [\"/bin/sleep\", \"2147483647\"]' \
               /tmp/busybox-root.tar {PAUSE} && \
             podman save --multi-image-archive --format docker-archive -o /tmp/images.tar \
               {BUSYBOX} {PAUSE}"
        ));
        sh("ctr -n k8s.io images import /tmp/images.tar");
        sh("systemctl start docker.service && docker load -i /tmp/images.tar");
    });
}

/// The cgroup driver kubelet and containerd agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
    /// cri-containerd-<id>.scope`, made through systemd.
    Systemd,
    /// `kubepods/burstable/pod<uid>/<id>`, made by runc in cgroupfs.
    Cgroupfs,
}

/// A CNI network as a node's: a bridge with host-local addresses, no masquerading
/// (nothing leaves the VM; no iptables), not Podman's default subnet.
/// containerd's CRI adds the loopback itself.
const CNI: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "cgscope",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.22.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
"#;

/// The node's address on the CNI bridge (the first of the subnet's), which the
/// pods route through.
pub const GATEWAY: &str = "10.22.0.1";

/// containerd's configuration for `driver`: the CRI with the local pause image (never
/// pulled), runc through systemd or not, Debian's CNI plugins.
fn containerd_config(driver: Driver) -> String {
    let systemd = driver == Driver::Systemd;
    format!(
        r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = {systemd}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"#
    )
}

/// containerd restarted with `driver`, its CRI answering, the images loaded.
pub fn containerd(driver: Driver) -> Cri {
    std::fs::create_dir_all("/etc/cni/net.d").expect("/etc/cni/net.d");
    std::fs::write("/etc/cni/net.d/10-cgscope.conflist", CNI).expect("CNI config");
    std::fs::write("/etc/containerd/config.toml", containerd_config(driver))
        .expect("containerd config");
    sh("systemctl restart containerd.service");
    wait_until("containerd's socket", Duration::from_secs(60), || {
        Path::new(CONTAINERD_SOCKET).exists()
    });
    images();
    let cri = Cri::connect(Path::new(CONTAINERD_SOCKET)).expect("connect to the CRI");
    wait_until("the CRI", Duration::from_secs(60), || cri.version().is_ok());
    cri
}

/// Podman's Docker-compatible API on `/run/podman/podman.sock`, as its socket unit
/// serves it.
pub fn podman_service() {
    sh("systemctl start podman.socket");
    wait_until("podman's socket", Duration::from_secs(30), || {
        Path::new("/run/podman/podman.sock").exists()
    });
}

/// A new pod UID, as the API server assigns them.
pub fn uid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a random UUID")
        .trim()
        .to_owned()
}
