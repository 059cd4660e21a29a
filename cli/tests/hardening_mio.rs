//! The hardening suite, run on the mio transport.

mod common;
mod hardening;
mod suite;

hardening_suite!(bridgechat_transport_mio);
