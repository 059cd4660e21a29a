//! The end-to-end encrypted chat session: a Noise handshake bound to the
//! introduction's ticket, then authenticated encryption of every chat frame.
//!
//! Sans-IO like the rest of the crate: bytes in, bytes out, no sockets, no
//! clock, no OS randomness, no logging. [`snow`] does the cryptography; this
//! module picks the pattern, derives the pre-shared key, checks lengths and
//! turns snow's errors into [`SecureError`].
//!
//! # The pattern: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`
//!
//! ```text
//! -> psk, e            initiator (the peer that sends CHAT)
//! <- e, ee             responder (the waiting peer, on its 200 OK)
//! ```
//!
//! - **Forward secrecy.** Neither peer has a long-term key: both draw a fresh
//!   X25519 ephemeral key per chat, and the transport keys come from their
//!   Diffie-Hellman (`ee`). Once a chat ends its keys are gone; recording the
//!   traffic and learning the ticket later decrypts nothing.
//! - **Bound to the introduction.** The pre-shared key is BLAKE2s-256 over a
//!   fixed context string and the match's 128-bit ticket, which the server hands
//!   to exactly the two introduced peers. `psk0` mixes it in before anything
//!   else, so the first message is already authenticated by it: a responder
//!   rejects a first message from anyone without the ticket, and an initiator
//!   rejects a reply from anyone without it. A stranger cannot complete the
//!   handshake in either role.
//! - **A transcript hash for the safety code.** snow's handshake hash covers the
//!   protocol name, the prologue, the PSK's effect and both ephemeral keys.
//!   [`Session::safety_code`] shows 8 digits of it. Both peers of one handshake
//!   compute the same hash.
//! - **A malicious server.** The server knows the ticket, so it (or a relay it
//!   tells) can complete a handshake with each peer and sit in the middle. It
//!   then runs two handshakes, one per peer, with ephemeral keys it chose for
//!   each: the two transcripts differ, so the two safety codes differ (they agree
//!   by chance once in 10^8), and the people comparing codes see it. The limit
//!   of a short code: the middle party answers the initiator last, so it can
//!   try ephemeral keys until its code with the initiator matches the one it got
//!   with the responder. That takes about 5 * 10^7 handshakes on average (each a
//!   key generation and an X25519 agreement), all within the 10 s a CHAT waits
//!   for its answer: far beyond one machine, so 8 digits are kept for people to
//!   read aloud.
//! - **No static keys** (NN rather than XX or KK): there is no identity to
//!   manage; the ticket authenticates the introduction and the code the absence
//!   of a middle party.
//!
//! # Frames
//!
//! After the handshake each [`Session::seal`] makes one Noise transport
//! message: ChaCha20-Poly1305 under a counter nonce, 16 bytes of tag, and one
//! byte inside saying what the frame is (a message or a quit, [`FrameKind`]),
//! so the unauthenticated method name on the wire cannot turn one into the
//! other. [`Session::open`] accepts exactly the next frame in order: a frame that
//! was changed, cut, repeated, skipped or moved fails, and the session refuses
//! everything after the first failure (the chat ends).
//!
//! Noise transport messages are at most 65,535 bytes, and a frame travels as one
//! chat body. So the plaintext is capped at [`MAX_PLAINTEXT`] = 65,518 bytes
//! (65,535 - 16 tag - 1 kind), 18 bytes under the 64 KiB of a plain-text chat
//! body, rather than chunked: a chunked 64 KiB message would no longer fit in
//! one body under the same limit.
//!
//! # Randomness and secrets
//!
//! Ephemeral keys come from a ChaCha20 generator seeded with 32 bytes the caller
//! passes ([`Initiator::new`], [`Responder::accept`]); the transport draws them
//! from the OS, tests fix them. Keys live only inside snow's state in memory, and
//! no type's `Debug` prints a key, the ticket, the handshake hash or plaintext.

use std::fmt;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, TransportState};

/// The Noise protocol name; also the pattern both peers must agree on.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the handshake hash, so a transcript of another protocol (or of a
/// later version of this one) can never be taken for a bridgechat chat's.
const PROLOGUE: &[u8] = b"bridgechat chat v2";

/// Hashed with the ticket into the PSK, so the key is used for nothing else.
const PSK_CONTEXT: &[u8] = b"bridgechat v2 chat psk from ticket";

/// Bytes of the introduction's ticket (128 random bits).
pub const TICKET_LEN: usize = 16;

/// Bytes of the seed for the ephemeral keys.
pub const SEED_LEN: usize = 32;

/// Length of both handshake messages: an X25519 key and an empty payload's tag.
pub const HANDSHAKE_LEN: usize = 32 + TAG_LEN;

/// Bytes a frame adds to its plaintext: the Poly1305 tag and the kind byte.
pub const OVERHEAD: usize = TAG_LEN + 1;

/// The longest Noise message.
pub const MAX_FRAME: usize = 65_535;

/// The longest plaintext one frame carries.
pub const MAX_PLAINTEXT: usize = MAX_FRAME - OVERHEAD;

const TAG_LEN: usize = 16;

/// What a frame carries; authenticated inside the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// One turn of the conversation (a MESSAGE body).
    Message,
    /// The end of the chat (a QUIT body); its plaintext is empty.
    Quit,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Message => b'M',
            FrameKind::Quit => b'Q',
        }
    }
}

/// Why the secure session failed. `Display` is the one-line reason to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureError {
    /// A handshake message that does not verify: the other side does not hold
    /// this match's ticket, or the bytes were changed or are not a handshake.
    Handshake,
    /// A frame that does not verify as the next one in order: tampered with,
    /// cut short, replayed, reordered, or not from this session.
    Frame,
    /// A frame whose kind is not the one its request said (e.g. a MESSAGE body
    /// inside a QUIT), or a QUIT with text.
    WrongKind,
    /// More than a frame can carry.
    TooLong { len: usize, max: usize },
    /// An earlier frame failed; the session accepts nothing more.
    Broken,
}

impl fmt::Display for SecureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureError::Handshake => {
                f.write_str("encryption handshake failed (wrong ticket or altered handshake)")
            }
            SecureError::Frame => f.write_str(
                "encrypted frame does not verify (tampered, replayed, reordered or truncated)",
            ),
            SecureError::WrongKind => {
                f.write_str("encrypted frame is not the request it came in (tampered)")
            }
            SecureError::TooLong { len, max } => {
                write!(f, "encrypted frame too long: {len} bytes, at most {max}")
            }
            SecureError::Broken => f.write_str("encrypted session already failed"),
        }
    }
}

impl std::error::Error for SecureError {}

/// The side that sends CHAT: writes the first handshake message.
pub struct Initiator {
    state: HandshakeState,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Initiator { awaiting reply }")
    }
}

impl Initiator {
    /// Starts a handshake for the match with `ticket`; returns the first message
    /// ([`HANDSHAKE_LEN`] bytes) to send on the CHAT.
    pub fn new(ticket: &[u8; TICKET_LEN], seed: [u8; SEED_LEN]) -> (Self, Vec<u8>) {
        let mut state = build(ticket, seed, true);
        let mut first = vec![0; HANDSHAKE_LEN];
        let n = state
            .write_message(&[], &mut first)
            .expect("a fresh NNpsk0 initiator writes its first message");
        debug_assert_eq!(n, HANDSHAKE_LEN);
        (Self { state }, first)
    }

    /// Reads the responder's reply; on success the chat is encrypted from here on.
    pub fn finish(mut self, reply: &[u8]) -> Result<Session, SecureError> {
        if reply.len() != HANDSHAKE_LEN {
            return Err(SecureError::Handshake);
        }
        let mut payload = [0; HANDSHAKE_LEN];
        self.state
            .read_message(reply, &mut payload)
            .map_err(|_| SecureError::Handshake)?;
        Session::new(self.state)
    }
}

/// The side that answers CHAT.
#[derive(Debug)]
pub struct Responder;

impl Responder {
    /// Reads the initiator's first message for the match with `ticket`; on
    /// success returns the session and the reply to send on the `200 OK`.
    pub fn accept(
        ticket: &[u8; TICKET_LEN],
        seed: [u8; SEED_LEN],
        first: &[u8],
    ) -> Result<(Session, Vec<u8>), SecureError> {
        if first.len() != HANDSHAKE_LEN {
            return Err(SecureError::Handshake);
        }
        let mut state = build(ticket, seed, false);
        let mut payload = [0; HANDSHAKE_LEN];
        state
            .read_message(first, &mut payload)
            .map_err(|_| SecureError::Handshake)?;
        let mut reply = vec![0; HANDSHAKE_LEN];
        let n = state
            .write_message(&[], &mut reply)
            .expect("an NNpsk0 responder that read the first message writes its reply");
        debug_assert_eq!(n, HANDSHAKE_LEN);
        Ok((Session::new(state)?, reply))
    }
}

/// An established encrypted chat: seals what we send, opens what we receive.
pub struct Session {
    transport: TransportState,
    safety_code: String,
    broken: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("sent", &self.transport.sending_nonce())
            .field("received", &self.transport.receiving_nonce())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(state: HandshakeState) -> Result<Self, SecureError> {
        let safety_code = safety_code(state.get_handshake_hash());
        let transport = state
            .into_transport_mode()
            .map_err(|_| SecureError::Handshake)?;
        Ok(Self {
            transport,
            safety_code,
            broken: false,
        })
    }

    /// The code both people compare, 8 digits as `1234 5678`; equal on both
    /// sides of one handshake, different on the two sides of a middle party.
    pub fn safety_code(&self) -> &str {
        &self.safety_code
    }

    /// Encrypts `plaintext` (at most [`MAX_PLAINTEXT`] bytes; empty for a quit)
    /// as the next frame, `plaintext.len() + OVERHEAD` bytes.
    pub fn seal(&mut self, kind: FrameKind, plaintext: &[u8]) -> Result<Vec<u8>, SecureError> {
        if self.broken {
            return Err(SecureError::Broken);
        }
        if kind == FrameKind::Quit && !plaintext.is_empty() {
            return Err(SecureError::WrongKind);
        }
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SecureError::TooLong {
                len: plaintext.len(),
                max: MAX_PLAINTEXT,
            });
        }
        let mut inner = Vec::with_capacity(plaintext.len() + 1);
        inner.push(kind.byte());
        inner.extend_from_slice(plaintext);
        let mut frame = vec![0; inner.len() + TAG_LEN];
        let n = self
            .transport
            .write_message(&inner, &mut frame)
            .map_err(|_| SecureError::Broken)?;
        frame.truncate(n);
        Ok(frame)
    }

    /// Decrypts the next frame, which the request line said is of `kind`.
    /// After any error the session is broken: the chat must end.
    pub fn open(&mut self, kind: FrameKind, frame: &[u8]) -> Result<Vec<u8>, SecureError> {
        if self.broken {
            return Err(SecureError::Broken);
        }
        let result = self.open_next(kind, frame);
        self.broken = result.is_err();
        result
    }

    fn open_next(&mut self, kind: FrameKind, frame: &[u8]) -> Result<Vec<u8>, SecureError> {
        if frame.len() > MAX_FRAME {
            return Err(SecureError::TooLong {
                len: frame.len(),
                max: MAX_FRAME,
            });
        }
        if frame.len() < OVERHEAD {
            return Err(SecureError::Frame);
        }
        let mut inner = vec![0; frame.len() - TAG_LEN];
        let n = self
            .transport
            .read_message(frame, &mut inner)
            .map_err(|_| SecureError::Frame)?;
        inner.truncate(n);
        match inner.split_first() {
            Some((&byte, rest)) if byte == kind.byte() => {
                if kind == FrameKind::Quit && !rest.is_empty() {
                    return Err(SecureError::WrongKind);
                }
                inner.remove(0);
                Ok(inner)
            }
            _ => Err(SecureError::WrongKind),
        }
    }
}

/// 8 decimal digits from the first 8 bytes of the handshake hash, as `1234 5678`.
/// 2^64 is 1.8 * 10^11 times 10^8, so the reduction is as good as uniform.
fn safety_code(handshake_hash: &[u8]) -> String {
    let mut first = [0; 8];
    first.copy_from_slice(&handshake_hash[..8]);
    let n = u64::from_be_bytes(first) % 100_000_000;
    format!("{:04} {:04}", n / 10_000, n % 10_000)
}

/// A handshake state for the match with `ticket`, with ephemeral keys from `seed`.
fn build(ticket: &[u8; TICKET_LEN], seed: [u8; SEED_LEN], initiator: bool) -> HandshakeState {
    let psk = psk(ticket);
    let params = PATTERN.parse().expect("a valid Noise pattern");
    let builder = snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }))
        .prologue(PROLOGUE)
        .expect("one prologue")
        .psk(0, &psk)
        .expect("one psk at position 0");
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.expect("the pattern's primitives are compiled in")
}

/// The 32-byte pre-shared key: BLAKE2s-256 of the context string and the ticket.
fn psk(ticket: &[u8; TICKET_LEN]) -> [u8; 32] {
    let mut hash = DefaultResolver
        .resolve_hash(&HashChoice::Blake2s)
        .expect("BLAKE2s is compiled in");
    hash.input(PSK_CONTEXT);
    hash.input(ticket);
    let mut out = [0; 32];
    hash.result(&mut out);
    out
}

/// snow's pure-Rust primitives, with randomness from the caller's seed only.
struct SeededResolver {
    seed: [u8; SEED_LEN],
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct SeededRng(ChaCha20Rng);

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_code_is_eight_digits_in_two_groups() {
        assert_eq!(safety_code(&[0; 32]), "0000 0000");
        // 0x0000_0000_05F5_E0FF = 99,999,999.
        let mut hash = [0; 32];
        hash[..8].copy_from_slice(&99_999_999u64.to_be_bytes());
        assert_eq!(safety_code(&hash), "9999 9999");
        hash[..8].copy_from_slice(&12_345_678u64.to_be_bytes());
        assert_eq!(safety_code(&hash), "1234 5678");
    }

    #[test]
    fn the_psk_depends_on_every_ticket_bit() {
        let ticket = [7; TICKET_LEN];
        let base = psk(&ticket);
        for bit in 0..TICKET_LEN * 8 {
            let mut other = ticket;
            other[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(psk(&other), base, "bit {bit}");
        }
    }
}
