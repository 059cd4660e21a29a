//! The hardening suite, run on the blocking std transport.

mod common;
mod hardening;
mod suite;

hardening_suite!(bridgechat_transport_std);
