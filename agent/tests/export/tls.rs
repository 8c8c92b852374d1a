//! mTLS to the collector with the standard certificate variables: a real TLS server
//! (`openssl s_server`) that requires a client certificate signed by its CA reports
//! the agent's certificate as verified.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    agent, busy_container,
    common::{self, free_port, Peer},
    failures::metrics_when,
    serial,
};
use crate::require_root_and_cgroup_v2;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (run cargo xtask setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cgscope-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        ("client", "cgscope-client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

#[test]
fn mtls_with_the_otel_certificate_variables() {
    require_root_and_cgroup_v2!();
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("cgscope-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    certificates(&dir);
    let port = free_port();
    let log = dir.join("s_server.log");
    let server = Peer(
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "server.pem",
                "-key",
                "server.key",
                "-CAfile",
                "ca.pem",
                "-Verify",
                "1",
                "-www",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .spawn()
            .expect("openssl s_server"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "s_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (tree, _) = busy_container("otlp-tls");
    let listen = format!("127.0.0.1:{}", free_port());
    let file = |name: &str| dir.join(name).display().to_string();
    let agent = agent(
        &listen,
        &tree.top.path,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("https://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &file("ca.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &file("client.pem")),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &file("client.key")),
            // s_server does not answer a POST: each attempt times out.
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    );
    let metrics = metrics_when(&listen, Duration::from_secs(20), |t| {
        t.lines()
            .any(|l| l.starts_with("cgscope_export_failures_total{"))
    });
    drop(agent);
    drop(server);
    drop(tree);
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    // The server verified the agent's certificate (depth 0: the client's own).
    assert!(
        printed.contains("CN = cgscope-client"),
        "s_server saw no client certificate:\n{printed}"
    );
    assert!(printed.contains("verify return:1"), "{printed}");
    // s_server is not a collector: the attempt fails, after the handshake, and counts.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cgscope_export_failures_total{")),
        "{metrics}"
    );
}
