//! The shared transport suite, run on the blocking std transport.

mod suite;

transport_suite!(bridgechat_transport_std);
