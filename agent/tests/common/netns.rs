//! Network namespaces for the tests: created, wired to the host, removed on drop.

/// A network namespace with a veth pair to the host: host end `10.213.N.1/30`,
/// namespace end `10.213.N.2/30`. Deleted on drop (which removes the veth pair).
pub struct TestNetns {
    pub name: String,
    pub host_ip: std::net::Ipv4Addr,
    pub ns_ip: std::net::Ipv4Addr,
    pub ns_if: String,
    /// The host's end of the veth pair.
    pub host_if: String,
    /// Open handle for `setns` in children.
    pub file: std::fs::File,
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

impl TestNetns {
    pub fn create() -> Self {
        let n = std::process::id() % 250;
        let name = format!("cgscope-test-{}", std::process::id());
        let (host_if, ns_if) = (format!("cgsh{n}"), format!("cgsc{n}"));
        ip(&["netns", "add", &name]);
        let host_ip = std::net::Ipv4Addr::new(10, 213, n as u8, 1);
        let ns_ip = std::net::Ipv4Addr::new(10, 213, n as u8, 2);
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
        let ns = Self {
            name,
            host_ip,
            ns_ip,
            ns_if: ns_if.clone(),
            host_if: host_if.clone(),
            file,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's inode, as `/proc/<pid>/ns/net` shows it.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().expect("stat netns").ino()
    }

    /// For `TestTree::spawn`: enter this namespace in the child.
    pub fn enter(&self) -> impl FnOnce() + '_ {
        move || {
            if nix::sched::setns(&self.file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                // SAFETY: _exit in a forked child.
                unsafe { libc::_exit(1) };
            }
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Why a test cannot create network namespaces here, or `None` if it can.
pub fn netns_skip_reason() -> Option<&'static str> {
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!listed).then_some("no iproute2 `ip netns` to create a network namespace")
}
