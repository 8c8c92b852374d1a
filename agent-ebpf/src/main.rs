//! cgscope's kernel programs. One module per probe; each aggregates in the kernel
//! (per-cgroup histograms in maps) and sends nothing per event to userspace.
#![no_std]
#![no_main]

mod blame;
mod blockio;
mod kernel;
mod oom;
mod runq;
mod tcp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in verified code: every index is bounds-checked without panicking.
    loop {}
}

/// `bpf_probe_read_kernel` is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
