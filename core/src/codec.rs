//! The wire codec: HTTP/1.1-shaped messages in, typed messages out, and back.
//!
//! [`Decoder`] is streaming and per connection: hand it whatever bytes arrived,
//! in any split, and it returns complete typed messages. It never holds more
//! than [`Limits::max_head`] bytes of an unfinished head plus one body of at
//! most [`Limits::max_body`]; past a limit it fails with the status to answer.
//! Every [`DecodeError`] means "answer this status, then close"; a request that
//! is well framed but carries a bad `Name`/`IP`/`Port` is *not* an error here:
//! it decodes to [`Request::Invalid`] and the connection may carry on.
//!
//! The `write_*` functions append a message to a caller's buffer, byte for byte
//! as in section 7 of the contract, so a server can answer without allocating.

use std::fmt;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::IpAddr;

use crate::contact::{parse_ip, parse_port, Contact, InvalidValue, Name};
use crate::operator::PageRequest;

/// Bounds on what one peer may make us hold. Defaults are the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start line plus headers, in bytes, including the blank line.
    pub max_head: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Body bytes (`Content-Length`).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 8 * 1024,
            max_headers: 32,
            max_body: 64 * 1024,
        }
    }
}

/// Hard ceiling on `max_headers`: the header array lives on the stack.
pub const HEADER_SLOTS: usize = 128;

/// An HTTP status code the protocol uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const BAD_REQUEST: Status = Status(400);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const CONFLICT: Status = Status(409);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);

    pub fn code(self) -> u16 {
        self.0
    }

    /// The reason phrase written after the code (RFC 9110 wording).
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Content Too Large",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }

    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The methods of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Bridge,
    Unregister,
    Chat,
    Message,
    Quit,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Register => "REGISTER",
            Method::Bridge => "BRIDGE",
            Method::Unregister => "UNREGISTER",
            Method::Chat => "CHAT",
            Method::Message => "MESSAGE",
            Method::Quit => "QUIT",
        }
    }

    /// Methods are case-sensitive tokens (RFC 9110 §9.1).
    fn from_token(token: &str) -> Option<Method> {
        Some(match token {
            "REGISTER" => Method::Register,
            "BRIDGE" => Method::Bridge,
            "UNREGISTER" => Method::Unregister,
            "CHAT" => Method::Chat,
            "MESSAGE" => Method::Message,
            "QUIT" => Method::Quit,
            _ => return None,
        })
    }
}

/// The contact headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Name,
    Ip,
    Port,
}

impl Header {
    pub fn as_str(self) -> &'static str {
        match self {
            Header::Name => "Name",
            Header::Ip => "IP",
            Header::Port => "Port",
        }
    }
}

/// A well-framed request whose contact headers break the contract (→ 400, connection kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    Missing(Header),
    Duplicate(Header),
    Invalid(Header, InvalidValue),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing(h) => write!(f, "missing header: {}", h.as_str()),
            HeaderError::Duplicate(h) => write!(f, "duplicate header: {}", h.as_str()),
            HeaderError::Invalid(h, why) => write!(f, "invalid header {}: {why}", h.as_str()),
        }
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register(Contact),
    /// `name` is the optional `Name` header, which must match the registration.
    Bridge {
        name: Option<Name>,
    },
    Unregister,
    Chat(Contact),
    /// One turn of the chat; the text as sent (UTF-8 expected, not enforced).
    Message(Vec<u8>),
    Quit,
    /// A method the contract does not name (→ 501, connection kept).
    Unknown,
    /// `GET` or `HEAD`: an operator page; a server answers it, anyone else treats it as `Unknown`.
    Page(PageRequest),
    /// A known method with a missing or malformed contact header (→ 400, connection kept).
    Invalid {
        method: Method,
        error: HeaderError,
    },
}

impl Request {
    /// Appends the wire form; `Unknown` and `Invalid` have none and write nothing.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Unencodable> {
        match self {
            Request::Register(contact) => write_register(out, contact),
            Request::Bridge { name } => write_bridge(out, name.as_ref()),
            Request::Unregister => write_unregister(out),
            Request::Chat(contact) => write_chat(out, contact),
            Request::Message(text) => write_message(out, text),
            Request::Quit => write_quit(out),
            Request::Unknown | Request::Invalid { .. } | Request::Page(_) => {
                return Err(Unencodable)
            }
        }
        Ok(())
    }
}

/// Returned when asked to encode a request that only exists on the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unencodable;

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Present when the response carried all of `Name`, `IP` and `Port`.
    pub contact: Option<Contact>,
    /// For errors, the one-line reason.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text, invalid UTF-8 shown as U+FFFD.
    pub fn reason_text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_owned()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        if self.status == Status::OK && self.body.is_empty() {
            write_ok(out, self.contact.as_ref());
        } else {
            write_head_line(out, self.status);
            if let Some(c) = &self.contact {
                write_contact_headers(out, c);
            }
            // Error responses are text/plain even when a caller left the reason empty.
            if !self.body.is_empty() || !self.status.is_success() {
                out.extend_from_slice(TEXT_PLAIN);
            }
            write_body(out, &self.body);
        }
    }
}

/// A framing failure: answer `status` with `reason`, then close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub status: Status,
    pub reason: &'static str,
}

impl DecodeError {
    const fn new(status: Status, reason: &'static str) -> DecodeError {
        DecodeError { status, reason }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.reason)
    }
}

impl std::error::Error for DecodeError {}

const HEAD_TOO_LARGE: DecodeError =
    DecodeError::new(Status::HEADERS_TOO_LARGE, "request head too large");
const TOO_MANY_HEADERS: DecodeError =
    DecodeError::new(Status::HEADERS_TOO_LARGE, "too many headers");
const BODY_TOO_LARGE: DecodeError = DecodeError::new(Status::CONTENT_TOO_LARGE, "body too large");
const CHUNKED: DecodeError = DecodeError::new(
    Status::NOT_IMPLEMENTED,
    "Transfer-Encoding is not supported",
);
const BAD_LENGTH: DecodeError = DecodeError::new(Status::BAD_REQUEST, "invalid Content-Length");
const CONFLICTING_LENGTH: DecodeError =
    DecodeError::new(Status::BAD_REQUEST, "conflicting Content-Length");
const MALFORMED: DecodeError = DecodeError::new(Status::BAD_REQUEST, "malformed message");
const BAD_TARGET: DecodeError = DecodeError::new(Status::BAD_REQUEST, "target must start with /");
const BAD_RESPONSE_CONTACT: DecodeError = DecodeError::new(
    Status::BAD_REQUEST,
    "response has an incomplete or invalid contact",
);
const SWITCHING_PROTOCOLS: DecodeError = DecodeError::new(
    Status::BAD_REQUEST,
    "101 Switching Protocols was never asked for",
);
const FAILED_BEFORE: DecodeError =
    DecodeError::new(Status::BAD_REQUEST, "connection already failed");

/// What the head of a message said, kept while its body arrives.
#[derive(Debug)]
enum Head {
    Request(Request),
    Response(Status, Option<Contact>),
    /// A 1xx answer other than 101: not the answer yet (RFC 9110 §15.2).
    Interim,
}

/// A complete message of either kind.
enum Decoded {
    Request(Request),
    Response(Response),
    Interim,
}

impl Head {
    /// Whether the body is part of the message (MESSAGE text, error reasons) or dropped.
    fn keeps_body(&self) -> bool {
        matches!(
            self,
            Head::Request(Request::Message(_)) | Head::Response(..)
        )
    }

    fn with_body(self, body: Vec<u8>) -> Decoded {
        match self {
            Head::Request(Request::Message(_)) => Decoded::Request(Request::Message(body)),
            Head::Request(request) => Decoded::Request(request),
            Head::Response(status, contact) => Decoded::Response(Response {
                status,
                contact,
                body,
            }),
            Head::Interim => Decoded::Interim,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a head; partial bytes sit in `Decoder::buf`.
    Head,
    /// Head parsed; `remaining` body bytes still to come.
    Body {
        head: Head,
        body: Vec<u8>,
        /// False for bodies the protocol ignores: counted, never stored.
        keep: bool,
        remaining: usize,
    },
    /// A framing error was returned; the connection is finished.
    Failed,
}

/// Which kind of message a decoder reads: requests (server, chat listener) or responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// A streaming decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Bytes received but not yet consumed; never more than `limits.max_head`.
    buf: Vec<u8>,
    /// `buf` starts with bytes left over from the previous message that were never parsed.
    leftover_unparsed: bool,
    state: State,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        let limits = Limits {
            max_headers: limits.max_headers.min(HEADER_SLOTS),
            ..limits
        };
        Decoder {
            limits,
            buf: Vec::new(),
            leftover_unparsed: false,
            state: State::Head,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes held for unfinished messages (head bytes plus body so far).
    pub fn buffered(&self) -> usize {
        self.buf.len()
            + match &self.state {
                State::Body { body, .. } => body.len(),
                _ => 0,
            }
    }

    /// True while part of a message has arrived but not all of it.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty() || matches!(self.state, State::Body { .. })
    }

    /// True while the head of a message has started but not finished.
    pub fn is_mid_head(&self) -> bool {
        !self.buf.is_empty() && matches!(self.state, State::Head)
    }

    /// Takes bytes from the front of `input` and returns the next complete request.
    ///
    /// `Ok(None)` means every byte of `input` was taken and more are needed.
    /// Call again while it returns `Ok(Some(_))`: pipelined requests come out one by one.
    /// After an `Err` the decoder stays failed.
    pub fn decode_request(&mut self, input: &mut &[u8]) -> Result<Option<Request>, DecodeError> {
        match self.decode(Kind::Request, input)? {
            Some(Decoded::Request(r)) => Ok(Some(r)),
            Some(Decoded::Response(_) | Decoded::Interim) => Err(MALFORMED),
            None => Ok(None),
        }
    }

    /// Like [`decode_request`](Self::decode_request), for responses.
    ///
    /// Interim `1xx` answers (`100 Continue`, `102`, `103`) are skipped until the final
    /// one, as RFC 9110 §15.2 asks, so callers only ever see final answers.
    /// `101 Switching Protocols` is a framing error: nobody here asks to switch.
    pub fn decode_response(&mut self, input: &mut &[u8]) -> Result<Option<Response>, DecodeError> {
        loop {
            match self.decode(Kind::Response, input)? {
                Some(Decoded::Response(r)) => return Ok(Some(r)),
                Some(Decoded::Interim) => continue,
                Some(Decoded::Request(_)) => return Err(MALFORMED),
                None => return Ok(None),
            }
        }
    }

    #[inline(always)]
    fn decode(&mut self, kind: Kind, input: &mut &[u8]) -> Result<Option<Decoded>, DecodeError> {
        let result = self.decode_inner(kind, input);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        result
    }

    #[inline(always)]
    fn decode_inner(
        &mut self,
        kind: Kind,
        input: &mut &[u8],
    ) -> Result<Option<Decoded>, DecodeError> {
        loop {
            match &mut self.state {
                State::Failed => return Err(FAILED_BEFORE),
                State::Body {
                    body,
                    keep,
                    remaining,
                    ..
                } => {
                    // Body bytes first come from what `buf` still holds, then from input.
                    let keep = *keep;
                    let source: &mut &[u8] = input;
                    let from_buf = self.buf.len().min(*remaining);
                    if from_buf > 0 {
                        if keep {
                            body.extend_from_slice(&self.buf[..from_buf]);
                        }
                        self.buf.drain(..from_buf);
                        self.leftover_unparsed = !self.buf.is_empty();
                        *remaining -= from_buf;
                    }
                    let take = source.len().min(*remaining);
                    if keep {
                        body.extend_from_slice(&source[..take]);
                    }
                    *source = &source[take..];
                    *remaining -= take;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    let State::Body { head, body, .. } =
                        std::mem::replace(&mut self.state, State::Head)
                    else {
                        unreachable!("matched Body above")
                    };
                    return Ok(Some(head.with_body(body)));
                }
                State::Head => {
                    if kind == Kind::Request {
                        // RFC 9112 §2.2: empty lines before a request line are ignored;
                        // they start no head, so they hold no buffer and no head timer.
                        if self.leftover_unparsed {
                            let blank = self.buf.iter().take_while(|b| is_cr_or_lf(b)).count();
                            self.buf.drain(..blank);
                            self.leftover_unparsed = !self.buf.is_empty();
                        }
                        if self.buf.is_empty() {
                            let blank = input.iter().take_while(|b| is_cr_or_lf(b)).count();
                            *input = &input[blank..];
                        }
                    }
                    if self.buf.is_empty() {
                        // Fast path: parse straight from the caller's bytes, no copy.
                        if input.is_empty() {
                            return Ok(None);
                        }
                        match parse_head(kind, input, &self.limits)? {
                            Some((head, head_len, body_len)) => {
                                *input = &input[head_len..];
                                if let Some(done) = self.start_body(head, body_len, input) {
                                    return Ok(Some(done));
                                }
                                continue;
                            }
                            None => {
                                if input.len() >= self.limits.max_head {
                                    return Err(HEAD_TOO_LARGE);
                                }
                                self.buf.extend_from_slice(input);
                                *input = &[];
                                return Ok(None);
                            }
                        }
                    }
                    // Slow path: a head is split across reads; top `buf` up to the limit.
                    let room = self.limits.max_head - self.buf.len();
                    let take = input.len().min(room);
                    let new_bytes = &input[..take];
                    // A head can only complete at a line end, so skip parsing unless one
                    // arrived or `buf` holds a pipelined message not parsed yet.
                    let may_complete =
                        std::mem::take(&mut self.leftover_unparsed) || new_bytes.contains(&b'\n');
                    self.buf.extend_from_slice(new_bytes);
                    *input = &input[take..];
                    if !may_complete {
                        if self.buf.len() >= self.limits.max_head {
                            return Err(HEAD_TOO_LARGE);
                        }
                        return Ok(None);
                    }
                    match parse_head(kind, &self.buf, &self.limits)? {
                        Some((head, head_len, body_len)) => {
                            self.buf.drain(..head_len);
                            self.leftover_unparsed = !self.buf.is_empty();
                            let mut empty: &[u8] = &[];
                            if let Some(done) = self.start_body(head, body_len, &mut empty) {
                                return Ok(Some(done));
                            }
                            continue;
                        }
                        None => {
                            if self.buf.len() >= self.limits.max_head {
                                return Err(HEAD_TOO_LARGE);
                            }
                            if input.is_empty() {
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Finishes a message whose body is empty or wholly in `input`; else enters `Body`.
    #[inline(always)]
    fn start_body(&mut self, head: Head, body_len: usize, input: &mut &[u8]) -> Option<Decoded> {
        let keep = head.keeps_body();
        if body_len == 0 {
            return Some(head.with_body(Vec::new()));
        }
        if self.buf.is_empty() && input.len() >= body_len {
            let body = if keep {
                input[..body_len].to_vec()
            } else {
                Vec::new()
            };
            *input = &input[body_len..];
            return Some(head.with_body(body));
        }
        let body = if keep {
            Vec::with_capacity(body_len)
        } else {
            Vec::new()
        };
        self.state = State::Body {
            head,
            body,
            keep,
            remaining: body_len,
        };
        None
    }
}

fn is_cr_or_lf(byte: &u8) -> bool {
    matches!(byte, b'\r' | b'\n')
}

/// Parses one head from `bytes`. `Ok(None)`: incomplete.
/// On success returns the head, its length in bytes, and the body length.
#[inline(always)]
fn parse_head(
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Head, usize, usize)>, DecodeError> {
    match kind {
        Kind::Request => {
            // Uninitialised slots: no 4 KiB memset on the server's hot path.
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
            let slots = &mut slots[..limits.max_headers];
            let mut req = httparse::Request::new(&mut []);
            let status = req.parse_with_uninit_headers(bytes, slots);
            let head_len = match status {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY_HEADERS),
                Err(_) => return Err(MALFORMED),
            };
            if head_len > limits.max_head {
                return Err(HEAD_TOO_LARGE);
            }
            if !req.path.is_some_and(|p| p.starts_with('/')) {
                return Err(BAD_TARGET);
            }
            let fields = Fields::collect(req.headers, limits)?;
            let request = match req.method.and_then(Method::from_token) {
                None => PageRequest::parse(&req).map_or(Request::Unknown, Request::Page),
                Some(method) => fields.request(method),
            };
            Ok(Some((
                Head::Request(request),
                head_len,
                fields.content_length,
            )))
        }
        Kind::Response => {
            let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
            let mut resp = httparse::Response::new(&mut slots[..limits.max_headers]);
            let status = resp.parse(bytes);
            let head_len = match status {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY_HEADERS),
                Err(_) => return Err(MALFORMED),
            };
            if head_len > limits.max_head {
                return Err(HEAD_TOO_LARGE);
            }
            let code = resp.code.ok_or(MALFORMED)?;
            match code {
                101 => return Err(SWITCHING_PROTOCOLS),
                // RFC 9112 §6.3: a 1xx has no body whatever its headers say.
                100..=199 => return Ok(Some((Head::Interim, head_len, 0))),
                _ => {}
            }
            let fields = Fields::collect(resp.headers, limits)?;
            let contact = if fields.has_any_contact_header() {
                Some(fields.contact().map_err(|_| BAD_RESPONSE_CONTACT)?)
            } else {
                None
            };
            Ok(Some((
                Head::Response(Status(code), contact),
                head_len,
                fields.content_length,
            )))
        }
    }
}

/// A contact header as it appeared; its value is checked only when the request needs it.
#[derive(Clone, Copy)]
enum Raw<'h> {
    Absent,
    Once(&'h [u8]),
    Repeated,
}

impl<'h> Raw<'h> {
    fn see(&mut self, value: &'h [u8]) {
        *self = match self {
            Raw::Absent => Raw::Once(value),
            _ => Raw::Repeated,
        };
    }

    /// The value, parsed; `None` if the header is absent.
    #[inline(always)]
    fn parse<T>(
        self,
        header: Header,
        parse: impl Fn(&[u8]) -> Result<T, InvalidValue>,
    ) -> Option<Result<T, HeaderError>> {
        match self {
            Raw::Absent => None,
            Raw::Once(value) => Some(parse(value).map_err(|why| HeaderError::Invalid(header, why))),
            Raw::Repeated => Some(Err(HeaderError::Duplicate(header))),
        }
    }

    #[inline(always)]
    fn required<T>(
        self,
        header: Header,
        parse: impl Fn(&[u8]) -> Result<T, InvalidValue>,
    ) -> Result<T, HeaderError> {
        self.parse(header, parse)
            .unwrap_or(Err(HeaderError::Missing(header)))
    }
}

/// The headers the protocol reads; all others are ignored. Values borrow the input,
/// so nothing is parsed or copied until the request is built.
struct Fields<'h> {
    content_length: usize,
    name: Raw<'h>,
    ip: Raw<'h>,
    port: Raw<'h>,
}

impl<'h> Fields<'h> {
    #[inline(always)]
    fn collect(
        headers: &[httparse::Header<'h>],
        limits: &Limits,
    ) -> Result<Fields<'h>, DecodeError> {
        let mut content_length: Option<usize> = None;
        let mut fields = Fields {
            content_length: 0,
            name: Raw::Absent,
            ip: Raw::Absent,
            port: Raw::Absent,
        };
        for h in headers {
            let name = h.name.as_bytes();
            // Dispatch on length first: a header that is none of ours costs one compare.
            match name.len() {
                2 if name.eq_ignore_ascii_case(b"ip") => fields.ip.see(trim_ows(h.value)),
                4 if name.eq_ignore_ascii_case(b"name") => fields.name.see(trim_ows(h.value)),
                4 if name.eq_ignore_ascii_case(b"port") => fields.port.see(trim_ows(h.value)),
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    let n = parse_content_length(trim_ows(h.value), limits)?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(CONFLICTING_LENGTH);
                    }
                    content_length = Some(n);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Err(CHUNKED),
                _ => {}
            }
        }
        fields.content_length = content_length.unwrap_or(0);
        Ok(fields)
    }

    fn has_any_contact_header(&self) -> bool {
        !matches!(
            (self.name, self.ip, self.port),
            (Raw::Absent, Raw::Absent, Raw::Absent)
        )
    }

    /// All three contact headers, checked in the order `Name`, `IP`, `Port`.
    #[inline(always)]
    fn contact(&self) -> Result<Contact, HeaderError> {
        let name = self.name.required(Header::Name, Name::new)?;
        let ip = self.ip.required(Header::Ip, parse_ip)?;
        let port = self.port.required(Header::Port, parse_port)?;
        Contact::new(name, ip, port).map_err(|why| HeaderError::Invalid(Header::Port, why))
    }

    #[inline(always)]
    fn request(&self, method: Method) -> Request {
        let invalid = |error| Request::Invalid { method, error };
        match method {
            Method::Register => self.contact().map_or_else(invalid, Request::Register),
            Method::Chat => self.contact().map_or_else(invalid, Request::Chat),
            Method::Bridge => match self.name.parse(Header::Name, Name::new) {
                None => Request::Bridge { name: None },
                Some(Ok(name)) => Request::Bridge { name: Some(name) },
                Some(Err(error)) => invalid(error),
            },
            Method::Unregister => Request::Unregister,
            Method::Message => Request::Message(Vec::new()),
            Method::Quit => Request::Quit,
        }
    }
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

/// `Content-Length` must be plain decimal digits; too large is 413, not 400.
fn parse_content_length(value: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD_LENGTH);
    }
    let mut n: usize = 0;
    for d in value {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(BODY_TOO_LARGE)?;
    }
    if n > limits.max_body {
        return Err(BODY_TOO_LARGE);
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Encoding

const CRLF: &[u8] = b"\r\n";
const TEXT_PLAIN: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n";

fn write_request_line(out: &mut Vec<u8>, method: Method) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" / HTTP/1.1\r\n");
}

fn write_head_line(out: &mut Vec<u8>, status: Status) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // Always three digits: httparse, like RFC 9112, reads no other form.
    if status.code() < 100 {
        out.push(b'0');
    }
    if status.code() < 10 {
        out.push(b'0');
    }
    write_decimal(out, usize::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(CRLF);
}

fn write_contact_headers(out: &mut Vec<u8>, contact: &Contact) {
    out.extend_from_slice(b"Name: ");
    out.extend_from_slice(contact.name.as_bytes());
    out.extend_from_slice(b"\r\nIP: ");
    match contact.ip {
        // By hand: `Display` for an address costs as much as the rest of a REGISTER answer.
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_decimal(out, usize::from(octet));
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    out.extend_from_slice(b"\r\nPort: ");
    write_decimal(out, usize::from(contact.port()));
    out.extend_from_slice(CRLF);
}

/// `Content-Length`, the blank line, and the body.
fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

fn write_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `REGISTER / HTTP/1.1` with `Name`, `IP`, `Port`.
pub fn write_register(out: &mut Vec<u8>, contact: &Contact) {
    write_request_line(out, Method::Register);
    write_contact_headers(out, contact);
    out.extend_from_slice(CRLF);
}

/// `BRIDGE / HTTP/1.1`, with the optional `Name` header.
pub fn write_bridge(out: &mut Vec<u8>, name: Option<&Name>) {
    write_request_line(out, Method::Bridge);
    if let Some(name) = name {
        out.extend_from_slice(b"Name: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(CRLF);
    }
    out.extend_from_slice(CRLF);
}

pub fn write_unregister(out: &mut Vec<u8>) {
    write_request_line(out, Method::Unregister);
    out.extend_from_slice(CRLF);
}

/// `CHAT / HTTP/1.1` with the initiator's own `Name`, `IP`, `Port`.
pub fn write_chat(out: &mut Vec<u8>, contact: &Contact) {
    write_request_line(out, Method::Chat);
    write_contact_headers(out, contact);
    out.extend_from_slice(CRLF);
}

/// One chat turn: `MESSAGE` with a `text/plain` body.
pub fn write_message(out: &mut Vec<u8>, text: &[u8]) {
    write_request_line(out, Method::Message);
    out.extend_from_slice(TEXT_PLAIN);
    write_body(out, text);
}

pub fn write_quit(out: &mut Vec<u8>) {
    write_request_line(out, Method::Quit);
    write_body(out, b"");
}

/// `200 OK`, echoing a contact when there is one, with `Content-Length: 0`.
pub fn write_ok(out: &mut Vec<u8>, contact: Option<&Contact>) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    if let Some(contact) = contact {
        write_contact_headers(out, contact);
    }
    write_body(out, b"");
}

/// How an error response ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterError {
    /// The connection stays open (bad header value, 403, 409, unknown method).
    KeepOpen,
    /// The connection stays open, and the client should wait this many seconds (429).
    KeepOpenRetryAfter(u32),
    /// The connection closes after this response (framing errors); says `Connection: close`.
    Close,
    /// Like `Close`, and tells the client when to retry (503).
    CloseRetryAfter(u32),
}

/// An error response with a one-line `text/plain` reason.
pub fn write_error(
    out: &mut Vec<u8>,
    status: Status,
    reason: &dyn fmt::Display,
    after: AfterError,
) {
    write_head_line(out, status);
    match after {
        AfterError::KeepOpen => {}
        AfterError::KeepOpenRetryAfter(seconds) => {
            out.extend_from_slice(b"Retry-After: ");
            write_decimal(out, seconds as usize);
            out.extend_from_slice(CRLF);
        }
        AfterError::Close => out.extend_from_slice(b"Connection: close\r\n"),
        AfterError::CloseRetryAfter(seconds) => {
            out.extend_from_slice(b"Connection: close\r\nRetry-After: ");
            write_decimal(out, seconds as usize);
            out.extend_from_slice(CRLF);
        }
    }
    out.extend_from_slice(TEXT_PLAIN);
    let mut line = ReasonLine::default();
    let _ = fmt::write(&mut line, format_args!("{reason}"));
    write_body(out, line.as_bytes());
}

/// A reason formatted on the stack: one line, at most `REASON_MAX` bytes.
const REASON_MAX: usize = 200;

struct ReasonLine {
    bytes: [u8; REASON_MAX],
    len: usize,
}

impl Default for ReasonLine {
    fn default() -> ReasonLine {
        ReasonLine {
            bytes: [0; REASON_MAX],
            len: 0,
        }
    }
}

impl ReasonLine {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for ReasonLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            // Line breaks would break "one line"; overlong reasons are cut at a char boundary.
            let ch = if ch == '\r' || ch == '\n' { ' ' } else { ch };
            let mut utf8 = [0u8; 4];
            let encoded = ch.encode_utf8(&mut utf8).as_bytes();
            if self.len + encoded.len() > REASON_MAX {
                return Ok(());
            }
            self.bytes[self.len..self.len + encoded.len()].copy_from_slice(encoded);
            self.len += encoded.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Result<Request, DecodeError>> {
        let mut d = Decoder::default();
        let mut input = bytes;
        let mut out = Vec::new();
        loop {
            match d.decode_request(&mut input) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn register_from_the_contract_round_trips() {
        let wire = b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
        let got = decode_all(wire);
        let contact = Contact::new(
            Name::new(b"alice").unwrap(),
            "127.0.0.1".parse().unwrap(),
            9001,
        )
        .unwrap();
        assert_eq!(got, vec![Ok(Request::Register(contact))]);
        let mut out = Vec::new();
        Request::Register(contact).encode(&mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_messages() {
        let wire: &[u8] = b"BRIDGE / HTTP/1.1\r\n\r\nMESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nhiQUIT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in wire.chunks(1) {
            let mut input = b;
            while let Some(r) = d.decode_request(&mut input).unwrap() {
                got.push(r);
            }
            assert!(input.is_empty());
        }
        assert_eq!(
            got,
            vec![
                Request::Bridge { name: None },
                Request::Message(b"hi".to_vec()),
                Request::Quit
            ]
        );
    }

    #[test]
    fn error_reason_is_one_line_with_exact_length() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            Status::BAD_REQUEST,
            &HeaderError::Missing(Header::Port),
            AfterError::KeepOpen,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nmissing header: Port"
        );
    }
}
