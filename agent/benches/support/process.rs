//! What the agent benches read about an agent they run: its CPU time and memory from
//! /proc, its HTTP API, and the cgroup each line of its `/metrics` is about. Shared by
//! the scale bench and `cargo xtask bench agents`, which includes this file.

use std::{
    io::{Read, Write},
    time::Duration,
};

/// The fields of /proc/<pid>/stat after the command name (the state first); empty
/// once the process is gone.
pub fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| {
        rest.split_whitespace().map(str::to_owned).collect()
    })
}

/// user+system CPU seconds of `pid` so far (all its threads); 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid);
    // After the comm: utime and stime are the 12th and 13th fields (man proc).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A field of /proc/<pid>/status in MiB (VmRSS, VmHWM); 0 if absent.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the body), as
/// Prometheus would with `gzip`: status and body bytes; status 0 if it failed.
pub fn get(addr: &str, path: &str, gzip: bool) -> (u16, Vec<u8>) {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let encoding = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{encoding}\r\n"
    );
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let status = String::from_utf8_lossy(&response[..end])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response[end + 4..].to_vec())
}

/// The cgroup a line of the agent's `/metrics` text is about (its
/// `cgscope_cgroup_path` label); `None` for the node's series and comments.
pub fn cgroup_path(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    let (_, rest) = line.split_once("cgscope_cgroup_path=\"")?;
    Some(rest.split_once('"')?.0)
}
