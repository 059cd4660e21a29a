//! The shared transport suite, run on the mio transport.

mod suite;

transport_suite!(bridgechat_transport_mio);
