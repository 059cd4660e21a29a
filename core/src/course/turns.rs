//! Raw chat turns (one read is one message) and telling the course format from HTTP.

use super::*;

/// What one read on a raw chat connection delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn<'a> {
    /// One message: the bytes exactly as read (UTF-8 expected, not enforced).
    Text(&'a [u8]),
    /// The peer quits: `QUIT` alone, with or without line ends after it.
    Quit,
    /// A message and the quit block (`QUIT` and an empty line) arrived in one read.
    TextThenQuit(&'a [u8]),
}

/// Reads what one read delivered on a raw chat connection; `None` for an empty read.
///
/// Raw turns have no framing, so the course programs take one read as one
/// message; so does this. The quit forms are recognised: the whole read being
/// `QUIT` followed only by line ends, or a read that *ends* with the quit
/// block `QUIT\r\n\r\n` (LF alone allowed), since a quit written right after
/// a turn may arrive in the same read.
pub fn read_turn(read: &[u8]) -> Option<Turn<'_>> {
    if read.is_empty() {
        return None;
    }
    let line_ends = read
        .iter()
        .rev()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let (rest, ends) = read.split_at(read.len() - line_ends);
    let Some(before) = rest.strip_suffix(b"QUIT") else {
        return Some(Turn::Text(read));
    };
    let blank_line =
        ends.windows(2).any(|w| w == b"\n\n") || ends.windows(3).any(|w| w == b"\n\r\n");
    Some(match (before.is_empty(), blank_line) {
        (true, _) => Turn::Quit,
        (false, true) => Turn::TextThenQuit(before),
        (false, false) => Turn::Text(read),
    })
}

/// Appends one raw turn: the text itself, nothing more. Send it as one write.
pub fn write_turn(out: &mut Vec<u8>, text: &[u8]) -> Result<(), UnencodableText> {
    if text.is_empty() {
        return Err(UnencodableText::Empty);
    }
    out.extend_from_slice(text);
    Ok(())
}

// ---------------------------------------------------------------------------
// Telling the course format from HTTP

/// Which format a connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Course,
    Http,
    /// The first line has not ended yet; ask again with more bytes.
    Undecided,
}

/// Tells from the first bytes of a connection whether it speaks the course
/// format or HTTP: an HTTP start line names its version (` HTTP/1.1` after a
/// request target, `HTTP/1.1 200 OK` for a response), a course line is a bare verb.
///
/// Blank lines before the first line are skipped (both formats allow them).
/// A first line that reaches `limits.max_head` bytes (blank lines before it
/// counted) is called HTTP, so that the HTTP decoder refuses it with its own error.
pub fn detect(first_bytes: &[u8], limits: &Limits) -> Dialect {
    let start = first_bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(first_bytes.len());
    let bytes = &first_bytes[start..];
    let (line, complete) = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => (&bytes[..end], true),
        None => (bytes, false),
    };
    let says_http = line.starts_with(b"HTTP/") || line.windows(6).any(|w| w == b" HTTP/");
    if says_http || start + line.len() >= limits.max_head {
        Dialect::Http
    } else if complete {
        Dialect::Course
    } else {
        Dialect::Undecided
    }
}

/// The first lines a course message can start with.
const VERBS: [&[u8]; 6] = [
    b"REGISTER",
    b"REGACK",
    b"BRIDGE",
    b"BRIDGEACK",
    b"CHAT",
    b"QUIT",
];

/// Whether the first line so far can still be a course verb (spaces, tabs and the
/// CR of its line end allowed after it). Anything else goes to the HTTP decoder at
/// once, so that HTTP clients see exactly what they saw before the course format
/// was served, garbage answered as early as ever.
pub fn may_be_course(first: &[u8]) -> bool {
    let start = first
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(first.len());
    let rest = &first[start..];
    let complete = rest.contains(&b'\n');
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let word_end = line
        .iter()
        .position(|b| !b.is_ascii_uppercase())
        .unwrap_or(line.len());
    let (word, tail) = line.split_at(word_end);
    if !tail.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
        return false;
    }
    match tail.is_empty() && !complete {
        true => VERBS.iter().any(|verb| verb.starts_with(word)),
        false => VERBS.contains(&word),
    }
}

/// [`detect`] for a connection that may also be HTTP garbage: only a first line
/// that is (or can still become) a course verb is the course format, so that
/// anything else goes to the HTTP reader, which answers it as it always did.
pub fn detect_verb(first_bytes: &[u8], limits: &Limits) -> Dialect {
    match may_be_course(first_bytes) {
        true => detect(first_bytes, limits),
        false => Dialect::Http,
    }
}
