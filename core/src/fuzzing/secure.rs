//! The encrypted chat target: the handshake on arbitrary bytes, then a real
//! session fed arbitrary, genuine and altered frames in an order the fuzzer picks.

use super::OpReader;
use crate::secure::{FrameKind, Initiator, Responder, SecureError, HANDSHAKE_LEN, MAX_FRAME};

const TICKET: [u8; 16] = *b"fuzzing-ticket!!";

/// Checks: no panic on any bytes; a handshake message of the wrong length is
/// refused; after a real handshake, genuine frames open in order to their text in
/// both directions, arbitrary or altered bytes never open (a forgery would need the
/// session's keys), and after the first refusal the session refuses everything.
pub fn secure(data: &[u8]) {
    // The responder and the initiator on arbitrary handshake bytes (a handshake
    // costs key generation, so the initiator is built only for the right length).
    let mut candidates = vec![data];
    if data.len() > HANDSHAKE_LEN {
        candidates.push(&data[..HANDSHAKE_LEN]);
    }
    for candidate in candidates {
        if let Ok((_, reply)) = Responder::accept(&TICKET, [2; 32], candidate) {
            assert_eq!(candidate.len(), HANDSHAKE_LEN, "accepted a first message");
            assert_eq!(reply.len(), HANDSHAKE_LEN);
        }
        if candidate.len() == HANDSHAKE_LEN {
            let (initiator, _) = Initiator::new(&TICKET, [1; 32]);
            // Only a reply made with this match's ticket to this first message finishes.
            let _ = initiator.finish(candidate);
        }
    }

    let (alice, first) = Initiator::new(&TICKET, [1; 32]);
    let (mut bob, reply) = Responder::accept(&TICKET, [2; 32], &first).expect("bob accepts");
    let mut alice = alice.finish(&reply).expect("alice finishes");
    assert_eq!(alice.safety_code(), bob.safety_code());

    let mut ops = OpReader { data };
    while let Some(op) = ops.byte() {
        let to_bob = op & 0x80 == 0;
        let kind = if op & 0x40 == 0 {
            FrameKind::Message
        } else {
            FrameKind::Quit
        };
        let (sender, receiver) = if to_bob {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let bad = match op % 4 {
            // A genuine frame, delivered as it was sent.
            0 => {
                let text = if kind == FrameKind::Quit {
                    &[][..]
                } else {
                    ops.bytes(255)
                };
                let frame = sender.seal(kind, text).expect("a working session seals");
                match receiver.open(kind, &frame) {
                    Ok(opened) => assert_eq!(opened, text, "a genuine frame opened to other text"),
                    Err(error) => panic!("a genuine frame in order was refused: {error}"),
                }
                continue;
            }
            // A genuine frame with one byte changed, or cut short.
            1 => {
                let text = ops.bytes(64);
                let mut frame = sender
                    .seal(FrameKind::Message, text)
                    .expect("a working session seals");
                let at = usize::from(ops.arg()) % frame.len();
                match ops.arg() {
                    0 => frame.truncate(at),
                    flip => frame[at] ^= flip,
                }
                frame
            }
            // Arbitrary bytes as a frame.
            2 => ops.bytes(255).to_vec(),
            // A long run of one byte, up to past the largest frame.
            _ => {
                let len = usize::from(ops.arg()) * 300;
                vec![ops.arg(); len]
            }
        };
        let error = receiver
            .open(kind, &bad)
            .expect_err("bytes that are not the next genuine frame opened");
        match error {
            SecureError::TooLong { len, max } => assert!(len == bad.len() && len > max),
            SecureError::Frame | SecureError::WrongKind => assert!(bad.len() <= MAX_FRAME),
            SecureError::Handshake | SecureError::Broken => panic!("refused with {error:?}"),
        }
        // The chat is over: the receiver refuses even the sender's next genuine frame.
        let next = sender
            .seal(FrameKind::Message, b"after")
            .expect("the sender still seals");
        assert_eq!(
            receiver.open(FrameKind::Message, &next),
            Err(SecureError::Broken)
        );
        assert_eq!(
            receiver.seal(FrameKind::Quit, b""),
            Err(SecureError::Broken)
        );
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_target_runs_on_turns_and_on_broken_frames() {
        secure(b"");
        secure(&[0; HANDSHAKE_LEN]);
        // Genuine turns both ways, then a quit.
        secure(&[0x00, 3, b'h', b'e', b'y', 0x80, 2, b'o', b'k', 0x40]);
        // A flipped byte, and a cut frame.
        secure(&[0x00, 1, b'a', 0x01, 2, b'h', b'i', 5, 0x10]);
        secure(&[0x81, 2, b'h', b'i', 7, 0]);
        // Arbitrary bytes, and a frame longer than any.
        secure(&[0x82, 4, 1, 2, 3, 4]);
        secure(&[0x03, 255, 0x41]);
    }
}
