//! Unit tests of reaching's address matching.

use super::*;

#[test]
fn an_ipv4_peer_seen_through_a_dual_stack_socket_is_the_same_address() {
    let plain: SocketAddr = "203.0.113.7:51234".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:203.0.113.7]:51234".parse().unwrap();
    assert!(same_addr(plain, mapped));
    assert!(!same_addr(plain, "203.0.113.7:51235".parse().unwrap()));
    assert_eq!(
        Origin::Accepted(mapped).path(Some(plain)),
        Path::HolePunched
    );
    assert_eq!(Origin::Accepted(mapped).path(None), Path::Direct);
}
