//! The raw `bpf()` system call, for the commands aya does not wrap.

/// `bpf(cmd, attr, sizeof attr)`: the call's non-negative result (a descriptor for
/// some commands), or its error. `attr` is the command's part of `union bpf_attr`,
/// zero-padded (the kernel refuses non-zero bytes past what the command reads).
pub fn bpf(cmd: libc::c_long, attr: &mut [u32; 4]) -> std::io::Result<i64> {
    // SAFETY: bpf() reads and may write `attr`, whose size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
