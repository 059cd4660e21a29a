mod support;
use support::*;

#[test]
fn harness_smoke() {
    let mut net = Net::new(1, Chunking::Random);
    let server = net.add_default_server();
    let raw = net.add_raw();
    let conn = net.connect_raw(raw, net.addr_of(server, 7070)).unwrap();
    net.send_raw(raw, conn, b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.9\r\nPort: 9001\r\n\r\nBRIDGE / HTTP/1.1\r\n\r\n");
    net.run();
    let r = responses(net.raw(raw).received[&conn].as_slice());
    assert_eq!(r.len(), 2);
}
