//! How each client event is shown: its line, and its look at a terminal.

use bridgechat_core::client::{ClientEvent, Mode};
use bridgechat_core::Name;

use crate::out::{self, Line, Tone};

/// The line a mode change is shown as: always starts with the mode's name.
pub fn mode_line(mode: Mode, peer: Option<Name>) -> String {
    let waiting_for = peer;
    let peer = peer.map_or_else(|| "your peer".to_owned(), |p| p.to_string());
    match mode {
        Mode::Unregistered => "UNREGISTERED: type /register to register with the server".into(),
        Mode::Registered => "REGISTERED: type /bridge to find a peer".into(),
        Mode::Wait => match waiting_for {
            None => "WAIT MODE: waiting for a peer...".into(),
            Some(name) => format!("WAIT MODE: waiting for {name}..."),
        },
        Mode::Ready => format!("READY MODE: peer {peer} is waiting — type /chat"),
        Mode::Write => "WRITE MODE: your turn".into(),
        Mode::Read => format!("READ MODE: waiting for {peer}"),
    }
}

/// The line an event is shown as.
pub fn describe(event: &ClientEvent) -> Line {
    styled(event).1
}

/// The line an event is shown as, and how it looks at a terminal. A new kind
/// of status line is one arm here.
pub fn styled(event: &ClientEvent) -> (Tone, Line) {
    let out = |text: String| Line::Out(text);
    match event {
        ClientEvent::Listening(addr) => (Tone::Hint, out(format!("listening on {addr}"))),
        ClientEvent::ModeChanged { mode, peer } => {
            (Tone::Mode(*mode), out(mode_line(*mode, *peer)))
        }
        ClientEvent::MessageReceived { from, text } => (
            Tone::Message {
                name_width: from.as_str().len(),
            },
            out(message_lines(*from, text)),
        ),
        ClientEvent::MessageHeld { pending } => (
            Tone::Hint,
            out(match pending {
                1 => "(held: will send when it is your turn)".to_owned(),
                n => format!("(held: will send when it is your turn; {n} messages waiting)"),
            }),
        ),
        ClientEvent::PeerLeft { peer } => (Tone::Plain, out(format!("{peer} left the chat"))),
        ClientEvent::PeerLost { peer, reason } => (
            Tone::Plain,
            Line::Error(format!("lost the chat with {peer}: {reason}")),
        ),
        ClientEvent::Info(text) => (Tone::Plain, out(text.clone())),
        ClientEvent::NameChanged(name) => (Tone::Plain, out(format!("your name is now {name}"))),
        ClientEvent::Reconnecting(attempt) => (Tone::Hint, out(attempt.to_string())),
        ClientEvent::ServerVersion2 { observed } => (
            Tone::Hint,
            out(match observed {
                Some(addr) => format!("server speaks protocol version 2; it sees you at {addr}"),
                None => "server speaks protocol version 2".to_owned(),
            }),
        ),
        ClientEvent::Matched { peer, .. } => (
            Tone::Plain,
            out(format!(
                "matched with {peer} — waiting for {peer} to connect"
            )),
        ),
        ClientEvent::Unmatched {
            peer,
            reason,
            waiting_for,
        } => {
            let whom = waiting_for.map_or_else(|| "a peer".to_owned(), |n| n.to_string());
            let why = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            (
                Tone::Mode(Mode::Wait),
                out(format!(
                    "{peer} did not come{why} — WAIT MODE: waiting again for {whom}..."
                )),
            )
        }
        ClientEvent::Path { peer, path } => (Tone::Hint, out(format!("connected to {peer}{path}"))),
        ClientEvent::NotProtected { peer, why } => (
            Tone::Hint,
            out(format!(
                "this chat with {peer} is not encrypted: {why}; anyone on the path can read it"
            )),
        ),
        ClientEvent::Encrypted { peer, safety_code } => (
            Tone::Hint,
            out(format!(
                "safety code: {safety_code} (the chat with {peer} is end-to-end encrypted)"
            )),
        ),
        ClientEvent::Decrypted {
            conn,
            direction,
            text,
        } => (
            Tone::Hint,
            Line::Trace(out::trace_decrypted(*conn, *direction, text)),
        ),
        ClientEvent::Error(error) => (Tone::Plain, Line::Error(error.to_string())),
        ClientEvent::Trace {
            conn,
            direction,
            bytes,
        } => (
            Tone::Hint,
            Line::Trace(out::trace(*conn, *direction, bytes)),
        ),
    }
}

/// A received message as `from: first line`, every further line indented
/// under the text, so no line of it can pass for one of the client's own
/// (`REGISTERED`, `error: ...`), which always start at the left edge.
fn message_lines(from: Name, text: &str) -> String {
    let text = defang(text);
    let indent = " ".repeat(from.as_str().len() + 2);
    let mut shown = format!("{from}: ");
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            shown.push('\n');
            shown.push_str(&indent);
        }
        shown.push_str(line);
    }
    shown
}

/// A peer's text with everything that could change how the screen reads
/// shown as U+FFFD: control characters (escape sequences could move the
/// cursor, recolour or retitle the terminal; CR could overwrite the line) and
/// invisible formatting characters (bidi overrides and isolates reorder what
/// follows; zero-width spaces hide text). Line breaks and tabs are kept; the
/// zero-width joiners U+200C and U+200D too, since Persian, Indic scripts and
/// emoji sequences need them. Other text is untouched, so it stays byte-exact.
fn defang(text: &str) -> std::borrow::Cow<'_, str> {
    let harmful = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_invisible_format(c);
    if !text.contains(harmful) {
        return text.into();
    }
    text.chars()
        .map(|c| if harmful(c) { '\u{FFFD}' } else { c })
        .collect::<String>()
        .into()
}

/// Format characters that reorder or hide text (Unicode's Bidi_Control, and
/// the invisible spaces and marks).
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'                  // Arabic letter mark
            | '\u{180E}'            // Mongolian vowel separator
            | '\u{200B}'            // zero-width space
            | '\u{200E}'..='\u{200F}' // left-to-right and right-to-left marks
            | '\u{2028}'..='\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{206A}'..='\u{206F}' // deprecated format controls
            | '\u{FEFF}'            // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotation
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridgechat_core::client::ClientError;
    fn alice() -> Name {
        "alice".parse().unwrap()
    }

    #[test]
    fn every_mode_line_starts_with_the_mode_name_in_capitals() {
        for mode in [
            Mode::Unregistered,
            Mode::Registered,
            Mode::Wait,
            Mode::Ready,
            Mode::Write,
            Mode::Read,
        ] {
            let line = mode_line(mode, Some(alice()));
            assert!(line.starts_with(mode.as_str()), "{line}");
        }
        assert_eq!(
            mode_line(Mode::Read, Some(alice())),
            "READ MODE: waiting for alice"
        );
    }

    fn received(text: &str) -> Line {
        describe(&ClientEvent::MessageReceived {
            from: alice(),
            text: text.into(),
        })
    }

    #[test]
    fn the_path_line_says_direct_or_relayed() {
        use bridgechat_core::client::Path;
        let line = |path| {
            describe(&ClientEvent::Path {
                peer: alice(),
                path,
            })
        };
        assert_eq!(
            line(Path::Direct),
            Line::Out("connected to alice directly".into())
        );
        assert_eq!(
            line(Path::HolePunched),
            Line::Out("connected to alice directly (hole punched)".into())
        );
        assert_eq!(
            line(Path::Relayed),
            Line::Out(
                "connected to alice, relayed through the server (no direct path could be made)"
                    .into()
            )
        );
    }

    #[test]
    fn a_received_message_is_printed_as_peer_colon_text() {
        assert_eq!(
            received("héllo: one line"),
            Line::Out("alice: héllo: one line".into())
        );
    }

    #[test]
    fn every_further_line_of_a_message_is_indented_under_the_peers_name() {
        assert_eq!(
            received("see you\nerror: lost the chat with evil\nREGISTERED: type /bridge\n"),
            Line::Out(
                "alice: see you\n       error: lost the chat with evil\n       REGISTERED: type /bridge\n       "
                    .into()
            )
        );
    }

    #[test]
    fn bidi_and_zero_width_controls_are_neutralised() {
        assert_eq!(
            received("a\u{202E}b\u{2066}c\u{2069}d\u{200B}e\u{200F}f\u{061C}g\u{FEFF}h\u{2028}i"),
            Line::Out(
                "alice: a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{FFFD}g\u{FFFD}h\u{FFFD}i"
                    .into()
            )
        );
        // Joiners that scripts and emoji need are kept.
        assert_eq!(
            received("👩\u{200D}💻 می\u{200C}خواهم"),
            Line::Out("alice: 👩\u{200D}💻 می\u{200C}خواهم".into())
        );
    }

    #[test]
    fn a_peer_cannot_send_terminal_escape_sequences() {
        let event = ClientEvent::MessageReceived {
            from: alice(),
            text: "\u{1b}]0;pwned\u{7}\u{1b}[2Jhi\tthere\r".into(),
        };
        assert_eq!(
            describe(&event),
            Line::Out("alice: \u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2Jhi\tthere\u{FFFD}".into())
        );
    }

    #[test]
    fn errors_go_to_stderr() {
        let event = ClientEvent::Error(ClientError::ServerRefused {
            status: bridgechat_core::Status::CONFLICT,
            reason: "name already taken: alice".into(),
        });
        assert!(matches!(describe(&event), Line::Error(_)));
    }
}
