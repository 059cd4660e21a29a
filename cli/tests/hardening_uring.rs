//! The hardening suite, run on the io_uring transport (Linux only).
#![cfg(target_os = "linux")]

mod common;
mod hardening;
mod suite;

hardening_suite!(bridgechat_transport_uring);
