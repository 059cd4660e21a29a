//! Connecting from the shared listener's port, through this transport.

#[path = "../../transport-common/tests/support/connect_from.rs"]
mod connect_from;

use std::thread;

use bridgechat_transport_mio::Runner;

#[test]
fn a_connect_from_the_shared_listeners_port_leaves_from_it() {
    connect_from::a_connect_from_the_shared_listeners_port_leaves_from_it(|endpoint, on_event| {
        let runner = Runner::new(endpoint).expect("create the runner");
        let controller = runner.controller();
        let thread = thread::spawn(move || runner.run(on_event));
        (move |input| controller.send(input), thread)
    });
}
