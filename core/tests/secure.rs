//! The encrypted chat session (`secure`) in memory: the handshake and its safety
//! code, the middle party the code exposes, strangers without the ticket, and
//! every way a frame can be changed on the wire. Seeded: every run is the same.

use bridgechat_core::secure::{
    FrameKind, Initiator, Responder, SecureError, Session, HANDSHAKE_LEN, MAX_FRAME, MAX_PLAINTEXT,
    OVERHEAD,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const TICKET: [u8; 16] = *b"\x5f\x0c\x91\x22\xe4\x07\xbb\x3a\x10\x99\x6d\xf1\x02\xc8\x47\x7e";

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Alice sends CHAT (initiator), Bob answers it (responder).
fn pair_with(ticket: &[u8; 16], alice_seed: u8, bob_seed: u8) -> (Session, Session) {
    let (alice, first) = Initiator::new(ticket, seed(alice_seed));
    let (bob, reply) = Responder::accept(ticket, seed(bob_seed), &first).expect("bob accepts");
    (alice.finish(&reply).expect("alice finishes"), bob)
}

fn pair() -> (Session, Session) {
    pair_with(&TICKET, 1, 2)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn both_sides_of_a_handshake_show_the_same_eight_digit_code() {
    let (alice, bob) = pair();
    assert_eq!(alice.safety_code(), bob.safety_code());
    let code = alice.safety_code();
    assert_eq!(code.len(), 9, "{code}");
    assert!(code.chars().enumerate().all(|(i, c)| if i == 4 {
        c == ' '
    } else {
        c.is_ascii_digit()
    }));
}

#[test]
fn each_chat_has_its_own_code_and_the_same_seeds_give_the_same_one() {
    let (first, _) = pair_with(&TICKET, 1, 2);
    let (again, _) = pair_with(&TICKET, 1, 2);
    assert_eq!(first.safety_code(), again.safety_code());
    let mut codes: Vec<String> = (0..20)
        .map(|n| {
            pair_with(&TICKET, 10 + n, 50 + n)
                .0
                .safety_code()
                .to_owned()
        })
        .collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 20, "fresh ephemeral keys give fresh codes");
}

#[test]
fn the_handshake_messages_are_fixed_length() {
    let (_, first) = Initiator::new(&TICKET, seed(1));
    assert_eq!(first.len(), HANDSHAKE_LEN);
    let (_, reply) = Responder::accept(&TICKET, seed(2), &first).unwrap();
    assert_eq!(reply.len(), HANDSHAKE_LEN);
}

#[test]
fn a_middle_party_with_the_ticket_gets_two_different_codes() {
    // The server knows the ticket. It answers Alice's CHAT itself and sends its own
    // CHAT to Bob: both handshakes complete, and it could relay every message...
    for n in 0..30 {
        let (alice, alice_first) = Initiator::new(&TICKET, seed(1 + n));
        let (mallory_to_alice, reply_to_alice) =
            Responder::accept(&TICKET, seed(100 + n), &alice_first).expect("mallory accepts");
        let alice = alice.finish(&reply_to_alice).expect("alice is fooled");

        let (mallory, mallory_first) = Initiator::new(&TICKET, seed(200 - n));
        let (bob, reply_to_mallory) =
            Responder::accept(&TICKET, seed(255 - n), &mallory_first).expect("bob is fooled");
        let mallory_to_bob = mallory.finish(&reply_to_mallory).unwrap();

        // ...but each side's code is that of its own handshake with the middle.
        assert_eq!(alice.safety_code(), mallory_to_alice.safety_code());
        assert_eq!(bob.safety_code(), mallory_to_bob.safety_code());
        assert_ne!(
            alice.safety_code(),
            bob.safety_code(),
            "the people comparing codes must see the middle party"
        );
    }
}

#[test]
fn a_stranger_without_the_ticket_cannot_start_a_chat() {
    let mut wrong = TICKET;
    wrong[15] ^= 1;
    let (_, first) = Initiator::new(&wrong, seed(3));
    assert_eq!(
        Responder::accept(&TICKET, seed(2), &first).unwrap_err(),
        SecureError::Handshake
    );
    // Nor with bytes that merely look like a handshake.
    for bytes in [
        vec![0; HANDSHAKE_LEN],
        vec![0xff; HANDSHAKE_LEN],
        first[..32].to_vec(),
    ] {
        assert_eq!(
            Responder::accept(&TICKET, seed(2), &bytes).unwrap_err(),
            SecureError::Handshake
        );
    }
}

#[test]
fn a_stranger_without_the_ticket_cannot_answer_a_chat() {
    // Someone else answers Alice's CHAT (at the address she was given): it cannot
    // read her first message, and a reply made under another ticket fails.
    let (alice, first) = Initiator::new(&TICKET, seed(1));
    let mut wrong = TICKET;
    wrong[0] ^= 0x80;
    assert!(Responder::accept(&wrong, seed(4), &first).is_err());
    let (_, stranger_first) = Initiator::new(&wrong, seed(5));
    let (_, stranger_reply) = Responder::accept(&wrong, seed(4), &stranger_first).unwrap();
    assert_eq!(
        alice.finish(&stranger_reply).unwrap_err(),
        SecureError::Handshake
    );
}

#[test]
fn a_changed_handshake_message_fails_at_every_byte() {
    let (_, first) = Initiator::new(&TICKET, seed(1));
    for i in 0..first.len() {
        let mut bad = first.clone();
        bad[i] ^= 0x01;
        assert!(
            Responder::accept(&TICKET, seed(2), &bad).is_err(),
            "first message byte {i}"
        );
    }
    let (_, reply) = Responder::accept(&TICKET, seed(2), &first).unwrap();
    for i in 0..reply.len() {
        let mut bad = reply.clone();
        bad[i] ^= 0x80;
        let (alice, first_again) = Initiator::new(&TICKET, seed(1));
        assert_eq!(first_again, first, "seeded: the same first message");
        assert!(alice.finish(&bad).is_err(), "reply byte {i}");
    }
    let (alice, _) = Initiator::new(&TICKET, seed(1));
    assert!(alice.finish(&reply[..HANDSHAKE_LEN - 1]).is_err());
}

#[test]
fn messages_go_both_ways_and_the_ciphertext_hides_the_text() {
    let (mut alice, mut bob) = pair();
    let text = "meet me at the north gate at nine".as_bytes();
    let frame = alice.seal(FrameKind::Message, text).unwrap();
    assert_eq!(frame.len(), text.len() + OVERHEAD);
    assert!(!contains(&frame, text));
    assert!(!contains(&frame, b"north gate"));
    assert_eq!(bob.open(FrameKind::Message, &frame).unwrap(), text);

    let reply = bob.seal(FrameKind::Message, b"ok").unwrap();
    assert_eq!(alice.open(FrameKind::Message, &reply).unwrap(), b"ok");
    // The same text twice gives two different frames (counter nonce).
    let again = alice.seal(FrameKind::Message, text).unwrap();
    assert_ne!(again, frame);
    assert_eq!(bob.open(FrameKind::Message, &again).unwrap(), text);

    let quit = bob.seal(FrameKind::Quit, b"").unwrap();
    assert_eq!(quit.len(), OVERHEAD);
    assert_eq!(alice.open(FrameKind::Quit, &quit).unwrap(), b"");
}

#[test]
fn a_frame_with_any_byte_flipped_ends_the_session() {
    let (mut alice, _) = pair();
    let frame = alice.seal(FrameKind::Message, b"hello bob").unwrap();
    for i in 0..frame.len() {
        for flip in [0x01, 0x80] {
            let (_, mut bob) = pair();
            let mut bad = frame.clone();
            bad[i] ^= flip;
            assert_eq!(
                bob.open(FrameKind::Message, &bad).unwrap_err(),
                SecureError::Frame,
                "byte {i} ^ {flip:#x}"
            );
            // Nothing after a failure is accepted, not even the real frame.
            assert_eq!(
                bob.open(FrameKind::Message, &frame).unwrap_err(),
                SecureError::Broken
            );
            assert_eq!(
                bob.seal(FrameKind::Message, b"x").unwrap_err(),
                SecureError::Broken
            );
        }
    }
}

#[test]
fn a_replayed_frame_is_refused() {
    let (mut alice, mut bob) = pair();
    let frame = alice.seal(FrameKind::Message, b"pay 10").unwrap();
    bob.open(FrameKind::Message, &frame).unwrap();
    assert_eq!(
        bob.open(FrameKind::Message, &frame).unwrap_err(),
        SecureError::Frame
    );
}

#[test]
fn a_frame_from_another_chat_is_refused() {
    let (mut alice, _) = pair();
    let (_, mut bob_elsewhere) = pair_with(&TICKET, 1, 3);
    let frame = alice.seal(FrameKind::Message, b"hi").unwrap();
    assert!(bob_elsewhere.open(FrameKind::Message, &frame).is_err());
}

#[test]
fn a_frame_sent_back_to_its_sender_is_refused() {
    let (mut alice, _) = pair();
    let frame = alice.seal(FrameKind::Message, b"hi").unwrap();
    assert!(alice.open(FrameKind::Message, &frame).is_err());
}

#[test]
fn reordered_or_skipped_frames_are_refused() {
    let (mut alice, mut bob) = pair();
    let one = alice.seal(FrameKind::Message, b"one").unwrap();
    let two = alice.seal(FrameKind::Message, b"two").unwrap();
    assert_eq!(
        bob.open(FrameKind::Message, &two).unwrap_err(),
        SecureError::Frame
    );
    assert!(bob.open(FrameKind::Message, &one).is_err());

    // A frame dropped on the way: the next one does not verify.
    let (mut alice, mut bob) = pair();
    let _lost = alice.seal(FrameKind::Message, b"one").unwrap();
    let two = alice.seal(FrameKind::Message, b"two").unwrap();
    assert!(bob.open(FrameKind::Message, &two).is_err());
}

#[test]
fn every_truncation_of_a_frame_is_refused() {
    let (mut alice, _) = pair();
    let frame = alice
        .seal(FrameKind::Message, b"a longer message, cut anywhere")
        .unwrap();
    for end in 0..frame.len() {
        let (_, mut bob) = pair();
        assert_eq!(
            bob.open(FrameKind::Message, &frame[..end]).unwrap_err(),
            SecureError::Frame,
            "first {end} bytes"
        );
    }
}

#[test]
fn a_message_cannot_pass_for_a_quit_or_the_other_way() {
    let (mut alice, mut bob) = pair();
    let frame = alice.seal(FrameKind::Message, b"").unwrap();
    assert_eq!(
        bob.open(FrameKind::Quit, &frame).unwrap_err(),
        SecureError::WrongKind
    );
    let (mut alice, mut bob) = pair();
    let quit = alice.seal(FrameKind::Quit, b"").unwrap();
    assert_eq!(
        bob.open(FrameKind::Message, &quit).unwrap_err(),
        SecureError::WrongKind
    );
    assert_eq!(
        alice.seal(FrameKind::Quit, b"bye").unwrap_err(),
        SecureError::WrongKind
    );
}

#[test]
fn the_longest_message_fits_one_frame_and_one_more_byte_does_not() {
    let (mut alice, mut bob) = pair();
    let longest = vec![b'z'; MAX_PLAINTEXT];
    let frame = alice.seal(FrameKind::Message, &longest).unwrap();
    assert_eq!(frame.len(), MAX_FRAME);
    assert_eq!(bob.open(FrameKind::Message, &frame).unwrap(), longest);

    let too_long = vec![b'z'; MAX_PLAINTEXT + 1];
    assert_eq!(
        alice.seal(FrameKind::Message, &too_long).unwrap_err(),
        SecureError::TooLong {
            len: MAX_PLAINTEXT + 1,
            max: MAX_PLAINTEXT
        }
    );
    assert_eq!(
        bob.open(FrameKind::Message, &vec![0; MAX_FRAME + 1])
            .unwrap_err(),
        SecureError::TooLong {
            len: MAX_FRAME + 1,
            max: MAX_FRAME
        }
    );
}

#[test]
fn errors_read_as_one_line_and_debug_shows_no_secret() {
    for error in [
        SecureError::Handshake,
        SecureError::Frame,
        SecureError::WrongKind,
        SecureError::TooLong {
            len: 70_000,
            max: MAX_PLAINTEXT,
        },
        SecureError::Broken,
    ] {
        let line = error.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
    }
    let (alice, first) = Initiator::new(&TICKET, seed(1));
    let debug = format!("{alice:?}");
    let (mut bob, _) = Responder::accept(&TICKET, seed(2), &first).unwrap();
    let frame = bob.seal(FrameKind::Message, b"secret words").unwrap();
    let debug = format!("{debug} {bob:?} {:?}", SecureError::Frame);
    assert!(!debug.contains(bob.safety_code()), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &TICKET[..4])), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &frame[..4])), "{debug}");
}

/// One message's text: drawn bytes, stretched to a drawn length up to the cap
/// (so long messages cost no shrinking of 64 KiB vectors).
fn text(len: usize, pattern: &[u8]) -> Vec<u8> {
    if pattern.is_empty() {
        return vec![0; len];
    }
    pattern.iter().copied().cycle().take(len).collect()
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..64usize,
        2 => 64..4096usize,
        1 => (MAX_PLAINTEXT - 64)..=MAX_PLAINTEXT,
        1 => 0..=MAX_PLAINTEXT,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        rng_seed: RngSeed::Fixed(0x5ec_u64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn alternating_turns_round_trip_in_both_directions(
        seeds in (any::<u8>(), any::<u8>()),
        turns in prop::collection::vec((length(), prop::collection::vec(any::<u8>(), 1..24)), 0..12),
        quit_by_alice in any::<bool>(),
    ) {
        let (mut alice, mut bob) = pair_with(&TICKET, seeds.0, seeds.1.wrapping_add(1));
        prop_assert_eq!(alice.safety_code(), bob.safety_code());
        // Alice sent CHAT, so she writes first; then the turn passes each message.
        for (i, (len, pattern)) in turns.iter().enumerate() {
            let (writer, reader) = if i % 2 == 0 {
                (&mut alice, &mut bob)
            } else {
                (&mut bob, &mut alice)
            };
            let plaintext = text(*len, pattern);
            let frame = writer.seal(FrameKind::Message, &plaintext).unwrap();
            prop_assert_eq!(frame.len(), plaintext.len() + OVERHEAD);
            if plaintext.len() >= 16 {
                prop_assert!(!contains(&frame, &plaintext[..16]));
            }
            prop_assert_eq!(reader.open(FrameKind::Message, &frame).unwrap(), plaintext);
        }
        let (quitter, other) = if quit_by_alice { (&mut alice, &mut bob) } else { (&mut bob, &mut alice) };
        let quit = quitter.seal(FrameKind::Quit, b"").unwrap();
        prop_assert_eq!(other.open(FrameKind::Quit, &quit).unwrap(), b"");
    }
}
