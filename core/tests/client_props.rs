//! Property tests for the chat client: two clients and a server in memory, any
//! interleaving of typed lines with the deliveries, any chunking.

mod support;

use std::time::Duration;

use bridgechat_core::client::{ClientEvent, ClientInput, Mode};
use proptest::prelude::*;
use support::*;

const COMMANDS: [&str; 5] = ["/register", "/bridge", "/chat", "/quit", "/help"];

fn is_command(line: &str) -> bool {
    COMMANDS.contains(&line.trim())
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        Just(Chunking::Whole),
        Just(Chunking::OneByte),
        Just(Chunking::Random)
    ]
}

/// Message texts: unicode, empty, with line breaks, and the largest an
/// encrypted frame holds (the chats here are encrypted).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "\\PC{0,24}",
        3 => "[a-zé✓ \n\r\t]{0,24}",
        1 => Just(String::new()),
        // 65,518 bytes exactly, in two-byte characters.
        1 => Just("é".repeat(bridgechat_core::secure::MAX_PLAINTEXT / 2)),
    ]
    .prop_filter("a command is not a message", |t| !is_command(t))
}

#[derive(Debug, Clone)]
enum Typed {
    Message(String),
    /// A command that makes no sense while chatting: refused, nothing changes.
    Command(&'static str),
}

fn typed() -> impl Strategy<Value = Typed> {
    prop_oneof![
        8 => text().prop_map(Typed::Message),
        1 => prop::sample::select(vec!["/register", "/bridge", "/chat", "/help"]).prop_map(Typed::Command),
    ]
}

fn in_chat(mode: Mode) -> bool {
    matches!(mode, Mode::Write | Mode::Read)
}

fn received(net: &Net, node: NodeId) -> Vec<String> {
    net.client_events(node)
        .iter()
        .filter_map(|e| match e {
            ClientEvent::MessageReceived { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn assert_one_writer(net: &Net, a: NodeId, b: NodeId) {
    assert!(
        !(net.mode(a) == Mode::Write && net.mode(b) == Mode::Write),
        "both sides in WRITE MODE"
    );
}

/// Delivers until quiet, checking the turn rule after every single delivery.
fn run_checked(net: &mut Net, a: NodeId, b: NodeId) {
    while net.run_steps(1) {
        assert_one_writer(net, a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// For any lines typed on both sides, interleaved with deliveries in any chunking:
    /// never two writers, every text arrives exactly and in order, QUIT ends both sides.
    #[test]
    fn turns_alternate_and_texts_arrive_exactly(
        seed in any::<u64>(),
        chunking in chunking(),
        ops in prop::collection::vec((any::<bool>(), typed(), 0usize..12), 0..24),
        alice_quits in any::<bool>(),
    ) {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        for line in ["/register", "/bridge"] {
            net.line(alice, line);
        }
        net.run();
        for line in ["/register", "/bridge", "/chat"] {
            net.line(bob, line);
        }
        run_checked(&mut net, alice, bob);
        prop_assert_eq!(net.mode(bob), Mode::Write);
        prop_assert_eq!(net.mode(alice), Mode::Read);

        let mut typed_by = [Vec::new(), Vec::new()];
        for (by_alice, line, steps) in ops {
            for _ in 0..steps {
                if !net.run_steps(1) {
                    break;
                }
                assert_one_writer(&net, alice, bob);
            }
            let (node, side) = if by_alice { (alice, 0) } else { (bob, 1) };
            let mode = net.mode(node);
            match line {
                Typed::Message(text) => {
                    net.line(node, &text);
                    typed_by[side].push(text);
                }
                Typed::Command(command) => {
                    let errors_before = net.client_events(node).len();
                    net.line(node, command);
                    prop_assert_eq!(net.mode(node), mode, "{} changed the mode", command);
                    prop_assert!(matches!(
                        net.client_events(node)[errors_before..],
                        [ClientEvent::Error(_)] | [ClientEvent::Info(_)]
                    ));
                }
            }
            assert_one_writer(&net, alice, bob);
        }
        run_checked(&mut net, alice, bob);

        // Quiet: the turn is somewhere, never lost.
        prop_assert!(in_chat(net.mode(alice)) && in_chat(net.mode(bob)));
        prop_assert!((net.mode(alice) == Mode::Write) != (net.mode(bob) == Mode::Write));
        let writer = if net.mode(alice) == Mode::Write { alice } else { bob };
        prop_assert_eq!(net.client(writer).held_messages(), 0, "the writer sits on a held message");
        // Each side got exactly what the other typed, minus what the other still holds.
        for (node, other, side) in [(alice, bob, 1), (bob, alice, 0)] {
            let held = net.client(other).held_messages();
            let sent = &typed_by[side][..typed_by[side].len() - held];
            prop_assert_eq!(&received(&net, node)[..], sent);
        }

        let (quitter, survivor, quitter_name) =
            if alice_quits { (alice, bob, "alice") } else { (bob, alice, "bob") };
        net.line(quitter, "/quit");
        run_checked(&mut net, alice, bob);
        prop_assert_eq!(net.nodes[quitter.0].exited.clone(), Some(Ok(())));
        let left = ClientEvent::PeerLeft { peer: name(quitter_name) };
        prop_assert!(net.client_events(survivor).contains(&left), "no PeerLeft");
        prop_assert_eq!(net.mode(survivor), Mode::Registered);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Line(bool, String),
    /// `ClientInput::Message`: text, whatever it reads like.
    Message(bool, String),
    EndOfInput(bool),
    Interrupt(bool),
    Deliver(usize),
    Wait(u64),
    /// Breaks the n-th open connection of a client (the server's or the chat).
    Reset(bool, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let line = prop_oneof![
        4 => text(),
        2 => prop::sample::select(vec!["/register", "/bridge", "/chat", "/help"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["/name carol", "/name alice", "/name bob", "/name ?"]).prop_map(str::to_owned),
        1 => Just("/quit".to_owned()),
    ];
    // Quitting and breaking links are rare, so most runs get far into a chat first.
    prop_oneof![
        14 => (any::<bool>(), line.clone()).prop_map(|(a, l)| Op::Line(a, l)),
        2 => (any::<bool>(), line).prop_map(|(a, l)| Op::Message(a, l)),
        1 => any::<bool>().prop_map(Op::EndOfInput),
        1 => any::<bool>().prop_map(Op::Interrupt),
        8 => (0usize..30).prop_map(Op::Deliver),
        1 => (0u64..40).prop_map(Op::Wait),
        1 => (any::<bool>(), 0usize..3).prop_map(|(a, n)| Op::Reset(a, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any sequence of lines, Ctrl+C, end of input, waiting and broken connections, from
    /// start-up on: no panic, never two writers, and whenever all is quiet two clients in a
    /// chat agree whose turn it is.
    #[test]
    fn no_input_sequence_panics_or_breaks_the_turn(
        seed in any::<u64>(),
        chunking in chunking(),
        ops in prop::collection::vec(op(), 0..60),
        merge in prop::collection::vec(prop::bool::weighted(0.7), 66),
    ) {
        let mut net = Net::new(seed, chunking);
        let server = net.add_default_server();
        let alice = net.add_named_client("alice", server);
        let bob = net.add_named_client("bob", server);
        // The way into a chat, woven into the random ops at random places, so that
        // many runs reach the chat and the random ops hit it in every phase.
        let mut happy = ["/register", "/bridge", "/chat"]
            .iter()
            .flat_map(|line| [Op::Line(true, line.to_string()), Op::Line(false, line.to_string())])
            .collect::<Vec<_>>()
            .into_iter();
        let mut random = ops.into_iter();
        let mut merged = Vec::new();
        for take_happy in merge {
            let next = if take_happy { happy.next() } else { random.next() };
            merged.extend(next);
        }
        merged.extend(happy.chain(random));
        for op in merged {
            match op {
                Op::Line(a, line) => net.line(if a { alice } else { bob }, &line),
                Op::Message(a, text) => net.client_input(if a { alice } else { bob }, ClientInput::Message(text)),
                Op::EndOfInput(a) => net.client_input(if a { alice } else { bob }, ClientInput::EndOfInput),
                Op::Interrupt(a) => net.client_input(if a { alice } else { bob }, ClientInput::Interrupt),
                Op::Deliver(n) => {
                    for _ in 0..n {
                        if !net.run_steps(1) {
                            break;
                        }
                        assert_one_writer(&net, alice, bob);
                    }
                }
                Op::Wait(secs) => {
                    run_checked(&mut net, alice, bob);
                    net.advance(Duration::from_secs(secs));
                }
                Op::Reset(a, n) => {
                    let node = if a { alice } else { bob };
                    if let Some((conn, _)) = net.links_of(node).get(n).copied() {
                        net.reset(node, conn);
                    }
                }
            }
            assert_one_writer(&net, alice, bob);
        }
        run_checked(&mut net, alice, bob);
        let running = |n: NodeId| net.nodes[n.0].exited.is_none();
        if running(alice) && running(bob) && (in_chat(net.mode(alice)) || in_chat(net.mode(bob))) {
            prop_assert!(in_chat(net.mode(alice)) && in_chat(net.mode(bob)));
            prop_assert!((net.mode(alice) == Mode::Write) != (net.mode(bob) == Mode::Write));
        }
    }
}
