//! Printing. Every line is flushed at once: tests and scripts read us through
//! pipes, where stdout is block-buffered. Write errors (a closed pipe) are
//! ignored rather than turned into a panic.

use std::io::{self, Write};

use bridgechat_core::client::Mode;
use bridgechat_core::{ConnId, Direction};

/// How a line looks at a terminal (colour, wrapping); pipes get the plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Advice and asides, shown dimmed.
    Hint,
    /// A mode line, in the mode's colour.
    Mode(Mode),
    /// A peer's message, `name: text`: the name stands out, and every further
    /// row is indented under it.
    Message {
        name_width: usize,
    },
}

/// Where a line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// stdout: what the user is meant to read.
    Out(String),
    /// stderr, prefixed `error: `.
    Error(String),
    /// stderr as is (`--trace`).
    Trace(String),
}

impl Line {
    pub fn print(&self) {
        match self {
            Line::Out(text) => say(text),
            Line::Error(text) => complain(text),
            Line::Trace(text) => {
                let mut err = io::stderr().lock();
                let _ = err.write_all(text.as_bytes());
                let _ = err.flush();
            }
        }
    }
}

/// One line on stdout, flushed.
pub fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// One `error: ` line on stderr.
pub fn complain(text: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "error: {text}");
    let _ = err.flush();
}

/// Renders bytes that went over `conn` for `--trace`: one output line per
/// wire line, each prefixed `#3 <- ` (received) or `#3 -> ` (sent), with CR
/// and LF shown as `␍␊` so a student sees exactly what was on the wire.
/// Other control bytes are shown as `\xNN`; invalid UTF-8 as U+FFFD.
/// The plaintext of an encrypted frame, marked `decrypted` so it is never
/// mistaken for what crossed the wire.
pub fn trace_decrypted(conn: ConnId, direction: Direction, text: &[u8]) -> String {
    trace(conn, direction, text)
        .lines()
        .map(|line| format!("{line} (decrypted)\n"))
        .collect()
}

pub fn trace(conn: ConnId, direction: Direction, bytes: &[u8]) -> String {
    let arrow = match direction {
        Direction::Received => "<-",
        Direction::Sent => "->",
    };
    let text = String::from_utf8_lossy(bytes);
    let mut rendered = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        rendered.push_str(&format!("{conn} {arrow} "));
        for c in line.chars() {
            match c {
                '\r' => rendered.push('␍'),
                '\n' => rendered.push('␊'),
                '\t' => rendered.push('\t'),
                c if c.is_control() => rendered.push_str(&format!("\\x{:02x}", c as u32)),
                c => rendered.push(c),
            }
        }
        rendered.push('\n');
    }
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypted_text_is_marked_on_every_line() {
        let shown = trace_decrypted(ConnId(4), Direction::Received, b"hi\nthere");
        assert_eq!(shown, "#4 <- hi␊ (decrypted)\n#4 <- there (decrypted)\n");
    }

    #[test]
    fn trace_shows_each_wire_line_with_its_line_end() {
        let shown = trace(
            ConnId(3),
            Direction::Received,
            b"REGISTER / HTTP/1.1\r\nName: alice\r\n\r\n",
        );
        assert_eq!(
            shown,
            "#3 <- REGISTER / HTTP/1.1␍␊\n#3 <- Name: alice␍␊\n#3 <- ␍␊\n"
        );
    }

    #[test]
    fn trace_ends_a_partial_line_and_escapes_control_bytes() {
        let shown = trace(ConnId(1), Direction::Sent, b"hi\x00\xff");
        assert_eq!(shown, "#1 -> hi\\x00\u{fffd}\n");
    }
}
