//! Types shared by the kernel programs (`cgscope-ebpf`) and the agent (`cgscope`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, free of `bool` and padded explicitly, so
//! both sides agree on the byte layout of every map key and value. Each type carries a
//! size assertion: a layout change fails the build instead of corrupting a map.
//! The `user` feature adds `aya::Pod` impls so that only userspace depends on aya.
#![no_std]
// Atomic adds on the BPF target (see `histogram::atomic_add_u64`).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

pub mod blame;
pub mod blockio;
pub mod histogram;
pub mod oom;
pub mod runq;
pub mod tcp;
