//! Decoding: bytes in, typed messages out, one connection per [`Decoder`].

use super::fields::Fields;
use super::{DecodeError, Limits, Method, Request, Response, Status, HEADER_SLOTS};
use crate::operator::PageRequest;
use std::mem::MaybeUninit;

const HEAD_TOO_LARGE: DecodeError =
    DecodeError::new(Status::HEADERS_TOO_LARGE, "request head too large");
const TOO_MANY_HEADERS: DecodeError =
    DecodeError::new(Status::HEADERS_TOO_LARGE, "too many headers");
pub(super) const BODY_TOO_LARGE: DecodeError =
    DecodeError::new(Status::CONTENT_TOO_LARGE, "body too large");
pub(super) const CHUNKED: DecodeError = DecodeError::new(
    Status::NOT_IMPLEMENTED,
    "Transfer-Encoding is not supported",
);
pub(super) const BAD_LENGTH: DecodeError =
    DecodeError::new(Status::BAD_REQUEST, "invalid Content-Length");
pub(super) const CONFLICTING_LENGTH: DecodeError =
    DecodeError::new(Status::BAD_REQUEST, "conflicting Content-Length");
const MALFORMED: DecodeError = DecodeError::new(Status::BAD_REQUEST, "malformed message");
const BAD_TARGET: DecodeError = DecodeError::new(Status::BAD_REQUEST, "target must start with /");
pub(super) const BAD_RESPONSE_CONTACT: DecodeError = DecodeError::new(
    Status::BAD_REQUEST,
    "response has an incomplete or invalid contact",
);
const SWITCHING_PROTOCOLS: DecodeError = DecodeError::new(
    Status::BAD_REQUEST,
    "101 Switching Protocols was never asked for",
);
pub(super) const BAD_RESPONSE_V2: DecodeError = DecodeError::new(
    Status::BAD_REQUEST,
    "response has an invalid Peer-Version, Observed-IP/Port or Ticket",
);
const FAILED_BEFORE: DecodeError =
    DecodeError::new(Status::BAD_REQUEST, "connection already failed");

/// What the head of a message said, kept while its body arrives.
#[derive(Debug)]
enum Head {
    Request(Request),
    /// The response without its body.
    Response(Response),
    /// A 1xx answer other than 101: not the answer yet (RFC 9110 §15.2).
    Interim,
}

/// A complete message of either kind.
enum Parsed {
    Request(Request),
    Response(Response),
    Interim,
}

/// A complete message from a connection that carries both requests and answers
/// (a v2 client's server connection: answers and notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Request(Request),
    Response(Response),
}

impl Head {
    /// Whether the body is part of the message (MESSAGE text, error reasons) or dropped.
    fn keeps_body(&self) -> bool {
        matches!(
            self,
            Head::Request(Request::Message(_) | Request::Quit | Request::QuitWith { .. })
                | Head::Response(..)
        )
    }

    fn with_body(self, body: Vec<u8>) -> Parsed {
        match self {
            Head::Request(Request::Message(_)) => Parsed::Request(Request::Message(body)),
            Head::Request(Request::Quit) if !body.is_empty() => {
                Parsed::Request(Request::QuitWith { body, reason: None })
            }
            Head::Request(Request::QuitWith { reason, .. }) => {
                Parsed::Request(Request::QuitWith { body, reason })
            }
            Head::Request(request) => Parsed::Request(request),
            Head::Response(response) => Parsed::Response(Response { body, ..response }),
            Head::Interim => Parsed::Interim,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a head; partial bytes sit in `Decoder::buf`.
    Head,
    /// Head parsed; `remaining` body bytes still to come.
    Body {
        /// Boxed: only messages whose body spans reads come here, and an inline head
        /// would make every connection's decoder as large as the largest message.
        head: Box<Head>,
        body: Vec<u8>,
        /// False for bodies the protocol ignores: counted, never stored.
        keep: bool,
        remaining: usize,
    },
    /// A framing error was returned; the connection is finished.
    Failed,
}

/// Which kind of message a decoder reads: requests (server, chat listener), responses,
/// or either, told apart by the first line (`HTTP/` starts a response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
    Either,
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

    /// Hands back the bytes received after the last complete message and not parsed
    /// yet: a connection that stops speaking HTTP (a relay) passes them on verbatim.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        self.leftover_unparsed = false;
        std::mem::take(&mut self.buf)
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
            Some(Parsed::Request(r)) => Ok(Some(r)),
            Some(Parsed::Response(_) | Parsed::Interim) => Err(MALFORMED),
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
                Some(Parsed::Response(r)) => return Ok(Some(r)),
                Some(Parsed::Interim) => continue,
                Some(Parsed::Request(_)) => return Err(MALFORMED),
                None => return Ok(None),
            }
        }
    }

    /// Like [`decode_response`](Self::decode_response), on a connection where requests
    /// come too: a v2 server connection, where notifications arrive between answers.
    pub fn decode_message(&mut self, input: &mut &[u8]) -> Result<Option<Inbound>, DecodeError> {
        loop {
            match self.decode(Kind::Either, input)? {
                Some(Parsed::Response(r)) => return Ok(Some(Inbound::Response(r))),
                Some(Parsed::Request(r)) => return Ok(Some(Inbound::Request(r))),
                Some(Parsed::Interim) => continue,
                None => return Ok(None),
            }
        }
    }

    #[inline(always)]
    fn decode(&mut self, kind: Kind, input: &mut &[u8]) -> Result<Option<Parsed>, DecodeError> {
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
    ) -> Result<Option<Parsed>, DecodeError> {
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
                    if kind != Kind::Response {
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
    fn start_body(&mut self, head: Head, body_len: usize, input: &mut &[u8]) -> Option<Parsed> {
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
            head: Box::new(head),
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

/// How every response's first line starts, and no request's.
const RESPONSE_START: &[u8] = b"HTTP/";

/// Parses one head from `bytes`. `Ok(None)`: incomplete.
/// On success returns the head, its length in bytes, and the body length.
#[inline(always)]
fn parse_head(
    kind: Kind,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<(Head, usize, usize)>, DecodeError> {
    let kind = match kind {
        Kind::Either if bytes.len() < RESPONSE_START.len() && RESPONSE_START.starts_with(bytes) => {
            return Ok(None);
        }
        Kind::Either if bytes.starts_with(RESPONSE_START) => Kind::Response,
        Kind::Either => Kind::Request,
        kind => kind,
    };
    match kind {
        Kind::Request | Kind::Either => {
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
            let response = fields.response(Status(code))?;
            Ok(Some((
                Head::Response(response),
                head_len,
                fields.content_length,
            )))
        }
    }
}
