//! The course format: the wire format of the "Let's Chat!" assignment that
//! bridgechat grew from, spoken by the class's own programs.
//!
//! A course message is a block of lines ending with an empty line: a verb
//! alone on the first line, then `Key: value` headers. There is no version,
//! no status code and no body:
//!
//! ```text
//! REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n
//! REGACK\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\nStatus: registered\r\n\r\n
//! BRIDGE\r\nclientID: alice\r\n\r\n
//! BRIDGEACK\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\n
//! BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\n          (nobody to pair with)
//! CHAT\r\nclientID: bob\r\nIP: 10.0.0.6\r\nPort: 2000\r\n\r\n  (opens a peer chat)
//! QUIT\r\n\r\n\r\n
//! ```
//!
//! After `CHAT`, the peers exchange *raw turns*: each turn is one write of
//! the text, with no framing, and the reader takes one read as one message.
//! [`read_turn`] models exactly that: a turn is whatever bytes one read
//! delivered, with the quit forms (`QUIT\r\n\r\n\r\n`, bare `QUIT`)
//! recognised. One family of programs frames its turns instead, as
//! `CHAT\r\nType: init|message|quit` blocks with a `Message: text` header;
//! [`CourseDecoder`] reads those too, since it costs one header.
//!
//! [`CourseDecoder`] is streaming, like [`crate::Decoder`]: hand it the bytes
//! of one connection in any split and it returns the same messages. It reads
//! leniently: bare LF line ends, blank lines between blocks, header names in
//! any case and order, spaces and tabs around values, unknown headers
//! (ignored). The `write_*` functions write exactly the forms above, byte for
//! byte, because several course programs parse answers by position.
//!
//! Values are checked with the bridgechat types: a `clientID` must be a valid
//! [`Name`] (1-32 characters from `A-Z a-z 0-9 _ - .`), so that course and
//! bridgechat clients share one namespace and a course peer can be named in
//! bridgechat's own `Name` header; `IP` is an IPv4 (or IPv6) address and
//! `Port` is 1-65535, as for [`Contact`].
//!
//! Errors come in two kinds (see [`CourseError::is_fatal`]): a block whose
//! *shape* is wrong (too large, too many headers, a control byte, a header
//! line without a colon) ends the connection, because where the next block
//! starts can no longer be trusted; a well-shaped block with an unknown verb
//! or a missing, repeated or invalid value is refused on its own and the
//! decoder carries on with the next block.

use std::fmt;
use std::net::IpAddr;

use crate::codec::Limits;
use crate::contact::{parse_ip, parse_port, Contact, InvalidValue, Name};

mod encode;
mod turns;
pub use encode::*;
pub use turns::*;

/// The verbs of the course format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Register,
    RegAck,
    Bridge,
    BridgeAck,
    Chat,
    Quit,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Register => "REGISTER",
            Verb::RegAck => "REGACK",
            Verb::Bridge => "BRIDGE",
            Verb::BridgeAck => "BRIDGEACK",
            Verb::Chat => "CHAT",
            Verb::Quit => "QUIT",
        }
    }

    /// Verbs are case-sensitive, as the course programs write them.
    fn from_line(line: &[u8]) -> Option<Verb> {
        Some(match line {
            b"REGISTER" => Verb::Register,
            b"REGACK" => Verb::RegAck,
            b"BRIDGE" => Verb::Bridge,
            b"BRIDGEACK" => Verb::BridgeAck,
            b"CHAT" => Verb::Chat,
            b"QUIT" => Verb::Quit,
            _ => return None,
        })
    }
}

/// The headers the course format uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    ClientId,
    Ip,
    Port,
    Status,
    Type,
    Message,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::ClientId => "clientID",
            Field::Ip => "IP",
            Field::Port => "Port",
            Field::Status => "Status",
            Field::Type => "Type",
            Field::Message => "Message",
        }
    }

    const ALL: [Field; 6] = [
        Field::ClientId,
        Field::Ip,
        Field::Port,
        Field::Status,
        Field::Type,
        Field::Message,
    ];

    fn from_name(name: &[u8]) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// Why a well-shaped block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    Missing(Field),
    Repeated(Field),
    Invalid(Field, InvalidValue),
    /// A `Status` or `Type` value the format does not define.
    UnknownValue(Field),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing(field) => write!(f, "missing header: {}", field.as_str()),
            FieldError::Repeated(field) => write!(f, "repeated header: {}", field.as_str()),
            FieldError::Invalid(field, why) => write!(f, "invalid {}: {why}", field.as_str()),
            FieldError::UnknownValue(field) => write!(f, "unknown {} value", field.as_str()),
        }
    }
}

/// A course message, as decoded and as encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourseMessage {
    /// A client registers its chat listener.
    Register(Contact),
    /// The server's answer to `REGISTER`; `registered` is whether it said `Status: registered`.
    RegAck { contact: Contact, registered: bool },
    /// A client asks for a peer, naming itself.
    Bridge(Name),
    /// The server's answer to `BRIDGE`: the other client, or `None` (the empty form).
    BridgeAck(Option<Contact>),
    /// Opens a raw peer chat; the initiator's own contact.
    Chat(Contact),
    /// `QUIT` as a block.
    Quit,
    /// Framed chat family: `CHAT` with `Type: init`, and the contact if it sent one.
    ChatInit(Option<Contact>),
    /// Framed chat family: `CHAT` with `Type: message`; the text as sent (UTF-8 expected).
    ChatMessage(Vec<u8>),
    /// Framed chat family: `CHAT` with `Type: quit`.
    ChatQuit,
}

impl CourseMessage {
    pub fn verb(&self) -> Verb {
        match self {
            CourseMessage::Register(_) => Verb::Register,
            CourseMessage::RegAck { .. } => Verb::RegAck,
            CourseMessage::Bridge(_) => Verb::Bridge,
            CourseMessage::BridgeAck(_) => Verb::BridgeAck,
            CourseMessage::Chat(_)
            | CourseMessage::ChatInit(_)
            | CourseMessage::ChatMessage(_)
            | CourseMessage::ChatQuit => Verb::Chat,
            CourseMessage::Quit => Verb::Quit,
        }
    }

    /// Appends the wire form. Only a `ChatMessage` whose text cannot be one header value fails.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), UnencodableText> {
        match self {
            CourseMessage::Register(contact) => write_register(out, contact),
            CourseMessage::RegAck {
                contact,
                registered,
            } => write_regack(out, contact, *registered),
            CourseMessage::Bridge(name) => write_bridge(out, name),
            CourseMessage::BridgeAck(contact) => write_bridgeack(out, contact.as_ref()),
            CourseMessage::Chat(contact) => write_chat(out, contact),
            CourseMessage::Quit => write_quit(out),
            CourseMessage::ChatInit(contact) => write_chat_init(out, contact.as_ref()),
            CourseMessage::ChatMessage(text) => return write_chat_message(out, text),
            CourseMessage::ChatQuit => write_chat_quit(out),
        }
        Ok(())
    }
}

/// Text that cannot be sent in the asked-for form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnencodableText {
    /// A raw turn must have at least one byte: an empty write sends nothing.
    Empty,
    /// A header value cannot hold CR, LF or another control byte.
    ControlByte,
}

impl fmt::Display for UnencodableText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnencodableText::Empty => "an empty turn cannot be sent",
            UnencodableText::ControlByte => "a framed message must be one line",
        })
    }
}

impl std::error::Error for UnencodableText {}

/// What the course decoder refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CourseError {
    /// The block is longer than `Limits::max_head` bytes. Fatal.
    HeadTooLarge,
    /// The block has more than `Limits::max_headers` header lines. Fatal.
    TooManyHeaders,
    /// A control byte (other than tab, or CR before LF) inside a line. Fatal.
    ControlByte,
    /// A header line without a colon, or with nothing before it. Fatal.
    MalformedHeader,
    /// The decoder already returned a fatal error. Fatal.
    Failed,
    /// The first line is not a course verb. The decoder carries on.
    UnknownVerb,
    /// A header the verb needs is missing, repeated or invalid. The decoder carries on.
    Field { verb: Verb, error: FieldError },
}

impl CourseError {
    /// Whether the connection's byte stream can no longer be trusted (close it).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CourseError::UnknownVerb | CourseError::Field { .. })
    }
}

impl fmt::Display for CourseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CourseError::HeadTooLarge => f.write_str("course message too large"),
            CourseError::TooManyHeaders => f.write_str("too many headers"),
            CourseError::ControlByte => f.write_str("control byte in a course message"),
            CourseError::MalformedHeader => f.write_str("header line without a name and colon"),
            CourseError::Failed => f.write_str("connection already failed"),
            CourseError::UnknownVerb => f.write_str("not a course verb"),
            CourseError::Field { verb, error } => write!(f, "{}: {error}", verb.as_str()),
        }
    }
}

impl std::error::Error for CourseError {}

/// Where the scanner is in the current block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Between blocks: blank lines are skipped and hold nothing.
    Between,
    InBlock(Lines),
    Failed,
}

/// What the scanner knows of the block it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Lines {
    /// Complete lines so far, the verb line included.
    done: usize,
    /// Bytes of the current line, CR included.
    len: usize,
    /// The previous byte was a CR (only legal right before LF).
    after_cr: bool,
    /// Where the current line's first colon is, if it has one.
    colon: Option<usize>,
}

/// A streaming decoder of course blocks for one connection.
///
/// It holds at most `Limits::max_head` bytes of an unfinished block;
/// `Limits::max_body` is unused (the course format has no bodies).
#[derive(Debug)]
pub struct CourseDecoder {
    limits: Limits,
    buf: Vec<u8>,
    scan: Scan,
}

impl Default for CourseDecoder {
    fn default() -> CourseDecoder {
        CourseDecoder::new(Limits::default())
    }
}

impl CourseDecoder {
    pub fn new(limits: Limits) -> CourseDecoder {
        CourseDecoder {
            limits,
            buf: Vec::new(),
            scan: Scan::Between,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes held of an unfinished block.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True while a block has started but not ended.
    pub fn is_mid_message(&self) -> bool {
        matches!(self.scan, Scan::InBlock { .. })
    }

    /// Takes bytes from the front of `input` and returns the next complete block.
    ///
    /// `Ok(None)` means every byte of `input` was taken and more are needed. Call
    /// again after `Ok(Some(_))` or a non-fatal error: the bytes after a block stay
    /// in `input`. After a fatal error the decoder stays failed.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<CourseMessage>, CourseError> {
        let result = self.decode_inner(input);
        if matches!(&result, Err(e) if e.is_fatal()) {
            self.scan = Scan::Failed;
            self.buf = Vec::new();
        }
        result
    }

    fn decode_inner(&mut self, input: &mut &[u8]) -> Result<Option<CourseMessage>, CourseError> {
        let mut taken = 0;
        let result = self.scan_bytes(input, &mut taken);
        *input = &input[taken..];
        match result? {
            false => Ok(None),
            true => {
                let block = std::mem::take(&mut self.buf);
                let decoded = parse_block(&block);
                // Keep the allocation for the next block of this connection.
                self.buf = block;
                self.buf.clear();
                decoded.map(Some)
            }
        }
    }

    /// Scans `input` byte by byte, the same whatever the split; true when a block ended.
    /// `taken` counts the bytes consumed, the block's last LF included.
    fn scan_bytes(&mut self, input: &[u8], taken: &mut usize) -> Result<bool, CourseError> {
        if self.scan == Scan::Failed {
            return Err(CourseError::Failed);
        }
        for &byte in input {
            *taken += 1;
            if self.scan == Scan::Between {
                if byte == b'\r' || byte == b'\n' {
                    continue;
                }
                self.scan = Scan::InBlock(Lines::default());
            }
            let Scan::InBlock(line) = &mut self.scan else {
                return Err(CourseError::Failed);
            };
            if self.buf.len() >= self.limits.max_head {
                return Err(CourseError::HeadTooLarge);
            }
            self.buf.push(byte);
            if byte == b'\n' {
                if line.len == usize::from(line.after_cr) {
                    self.scan = Scan::Between;
                    return Ok(true);
                }
                if line.done > 0 && !line.colon.is_some_and(|at| at > 0) {
                    return Err(CourseError::MalformedHeader);
                }
                *line = Lines {
                    done: line.done + 1,
                    ..Lines::default()
                };
                if line.done > self.limits.max_headers + 1 {
                    return Err(CourseError::TooManyHeaders);
                }
                continue;
            }
            if line.after_cr || (byte < 0x20 && byte != b'\t' && byte != b'\r') || byte == 0x7f {
                return Err(CourseError::ControlByte);
            }
            if byte == b':' && line.colon.is_none() {
                line.colon = Some(line.len);
            }
            line.after_cr = byte == b'\r';
            line.len += 1;
        }
        Ok(false)
    }
}

/// One header value as it appeared; checked only when the verb needs it.
#[derive(Clone, Copy)]
enum Raw<'b> {
    Absent,
    Once(&'b [u8]),
    Repeated,
}

impl<'b> Raw<'b> {
    fn get(self, field: Field) -> Result<Option<&'b [u8]>, FieldError> {
        match self {
            Raw::Absent => Ok(None),
            Raw::Once(value) => Ok(Some(value)),
            Raw::Repeated => Err(FieldError::Repeated(field)),
        }
    }

    fn required(self, field: Field) -> Result<&'b [u8], FieldError> {
        self.get(field)?.ok_or(FieldError::Missing(field))
    }
}

/// The values of one block, by field.
struct Fields<'b> {
    values: [Raw<'b>; Field::ALL.len()],
}

impl<'b> Fields<'b> {
    fn raw(&self, field: Field) -> Raw<'b> {
        self.values[field as usize]
    }

    fn contact(&self) -> Result<Contact, FieldError> {
        let id = self.raw(Field::ClientId).required(Field::ClientId)?;
        let ip = self.raw(Field::Ip).required(Field::Ip)?;
        let port = self.raw(Field::Port).required(Field::Port)?;
        parse_contact(id, ip, port)
    }

    /// A contact if any of its three headers is present; all three then.
    fn optional_contact(&self) -> Result<Option<Contact>, FieldError> {
        let any_present = [Field::ClientId, Field::Ip, Field::Port]
            .into_iter()
            .any(|f| !matches!(self.raw(f), Raw::Absent));
        any_present.then(|| self.contact()).transpose()
    }
}

fn parse_contact(id: &[u8], ip: &[u8], port: &[u8]) -> Result<Contact, FieldError> {
    let name = Name::new(id).map_err(|why| FieldError::Invalid(Field::ClientId, why))?;
    let ip = parse_ip(ip).map_err(|why| FieldError::Invalid(Field::Ip, why))?;
    let port = parse_port(port).map_err(|why| FieldError::Invalid(Field::Port, why))?;
    Contact::new(name, ip, port).map_err(|why| FieldError::Invalid(Field::Port, why))
}

/// Splits a complete block (its shape already checked) into lines without line ends.
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    block
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
}

fn parse_block(block: &[u8]) -> Result<CourseMessage, CourseError> {
    let mut lines = lines(block);
    let verb = lines
        .next()
        .map(trim_ows)
        .and_then(Verb::from_line)
        .ok_or(CourseError::UnknownVerb)?;
    let mut fields = Fields {
        values: [Raw::Absent; Field::ALL.len()],
    };
    for line in lines {
        // The scanner saw a colon after a non-empty name on every header line.
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(CourseError::MalformedHeader);
        };
        let Some(field) = Field::from_name(trim_ows(&line[..colon])) else {
            continue;
        };
        let after = &line[colon + 1..];
        let value = if field == Field::Message {
            // Chat text keeps its own spaces; only the one after the colon is the format's.
            after.strip_prefix(b" ").unwrap_or(after)
        } else {
            trim_ows(after)
        };
        let slot = &mut fields.values[field as usize];
        *slot = match slot {
            Raw::Absent => Raw::Once(value),
            _ => Raw::Repeated,
        };
    }
    message(verb, &fields).map_err(|error| CourseError::Field { verb, error })
}

fn message(verb: Verb, fields: &Fields<'_>) -> Result<CourseMessage, FieldError> {
    Ok(match verb {
        Verb::Register => CourseMessage::Register(fields.contact()?),
        Verb::RegAck => {
            let registered = match fields.raw(Field::Status).get(Field::Status)? {
                None => false,
                Some(v) if v.eq_ignore_ascii_case(b"registered") => true,
                Some(_) => return Err(FieldError::UnknownValue(Field::Status)),
            };
            CourseMessage::RegAck {
                contact: fields.contact()?,
                registered,
            }
        }
        Verb::Bridge => {
            let id = fields.raw(Field::ClientId).required(Field::ClientId)?;
            CourseMessage::Bridge(
                Name::new(id).map_err(|why| FieldError::Invalid(Field::ClientId, why))?,
            )
        }
        Verb::BridgeAck => {
            let id = fields.raw(Field::ClientId).required(Field::ClientId)?;
            let ip = fields.raw(Field::Ip).required(Field::Ip)?;
            let port = fields.raw(Field::Port).required(Field::Port)?;
            if id.is_empty() && ip.is_empty() && port.is_empty() {
                CourseMessage::BridgeAck(None)
            } else {
                CourseMessage::BridgeAck(Some(parse_contact(id, ip, port)?))
            }
        }
        Verb::Chat => match fields.raw(Field::Type).get(Field::Type)? {
            None => CourseMessage::Chat(fields.contact()?),
            Some(kind) if kind.eq_ignore_ascii_case(b"init") => {
                CourseMessage::ChatInit(fields.optional_contact()?)
            }
            Some(kind) if kind.eq_ignore_ascii_case(b"message") => CourseMessage::ChatMessage(
                fields
                    .raw(Field::Message)
                    .required(Field::Message)?
                    .to_vec(),
            ),
            Some(kind) if kind.eq_ignore_ascii_case(b"quit") => CourseMessage::ChatQuit,
            Some(_) => return Err(FieldError::UnknownValue(Field::Type)),
        },
        Verb::Quit => CourseMessage::Quit,
    })
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

// ---------------------------------------------------------------------------
// Raw chat turns

/// The body of the course fuzz target, as a plain function so it also runs as a test.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
