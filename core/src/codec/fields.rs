//! The headers of one message head, read once and checked only when the message needs them.

use std::net::SocketAddr;

use super::decode::{
    BAD_LENGTH, BAD_RESPONSE_CONTACT, BAD_RESPONSE_V2, BODY_TOO_LARGE, CHUNKED, CONFLICTING_LENGTH,
};
use super::v2::{Introduction, Noise, Ticket, Unmatched, Version};
use super::{DecodeError, Header, HeaderError, Limits, Method, Request, Response, Status};
use crate::contact::{parse_ip, parse_port, Contact, InvalidValue, Name};

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
pub(super) struct Fields<'h> {
    pub(super) content_length: usize,
    name: Raw<'h>,
    ip: Raw<'h>,
    port: Raw<'h>,
    bridgechat: Raw<'h>,
    peer: Raw<'h>,
    ticket: Raw<'h>,
    noise: Raw<'h>,
    peer_version: Raw<'h>,
    observed_ip: Raw<'h>,
    observed_port: Raw<'h>,
    reason: Raw<'h>,
    dialect: Raw<'h>,
}

impl<'h> Fields<'h> {
    #[inline(always)]
    pub(super) fn collect(
        headers: &[httparse::Header<'h>],
        limits: &Limits,
    ) -> Result<Fields<'h>, DecodeError> {
        let mut content_length: Option<usize> = None;
        let mut fields = Fields {
            content_length: 0,
            name: Raw::Absent,
            ip: Raw::Absent,
            port: Raw::Absent,
            bridgechat: Raw::Absent,
            peer: Raw::Absent,
            ticket: Raw::Absent,
            noise: Raw::Absent,
            peer_version: Raw::Absent,
            observed_ip: Raw::Absent,
            observed_port: Raw::Absent,
            reason: Raw::Absent,
            dialect: Raw::Absent,
        };
        for h in headers {
            let name = h.name.as_bytes();
            // Dispatch on length first: a header that is none of ours costs one compare.
            match name.len() {
                2 if name.eq_ignore_ascii_case(b"ip") => fields.ip.see(trim_ows(h.value)),
                4 if name.eq_ignore_ascii_case(b"name") => fields.name.see(trim_ows(h.value)),
                4 if name.eq_ignore_ascii_case(b"port") => fields.port.see(trim_ows(h.value)),
                4 if name.eq_ignore_ascii_case(b"peer") => fields.peer.see(trim_ows(h.value)),
                5 if name.eq_ignore_ascii_case(b"noise") => fields.noise.see(trim_ows(h.value)),
                6 if name.eq_ignore_ascii_case(b"ticket") => fields.ticket.see(trim_ows(h.value)),
                6 if name.eq_ignore_ascii_case(b"reason") => fields.reason.see(trim_ows(h.value)),
                7 if name.eq_ignore_ascii_case(b"dialect") => fields.dialect.see(trim_ows(h.value)),
                10 if name.eq_ignore_ascii_case(b"bridgechat") => {
                    fields.bridgechat.see(trim_ows(h.value))
                }
                11 if name.eq_ignore_ascii_case(b"observed-ip") => {
                    fields.observed_ip.see(trim_ows(h.value))
                }
                12 if name.eq_ignore_ascii_case(b"peer-version") => {
                    fields.peer_version.see(trim_ows(h.value))
                }
                13 if name.eq_ignore_ascii_case(b"observed-port") => {
                    fields.observed_port.see(trim_ows(h.value))
                }
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

    /// `Bridgechat: 2` once; anything else (absent, repeated, another value) is version 1.
    fn version(&self) -> Version {
        match self.bridgechat {
            Raw::Once(value) => Version::from_opt_in(value),
            _ => Version::V1,
        }
    }

    fn noise(&self) -> Result<Option<Noise>, HeaderError> {
        self.noise.parse(Header::Noise, Noise::parse).transpose()
    }

    fn ticket(&self) -> Result<Option<Ticket>, HeaderError> {
        self.ticket.parse(Header::Ticket, Ticket::parse).transpose()
    }

    /// `Observed-IP` and `Observed-Port`, both or neither.
    fn observed(&self) -> Result<Option<SocketAddr>, HeaderError> {
        let ip = self.observed_ip.parse(Header::ObservedIp, parse_ip);
        let port = self.observed_port.parse(Header::ObservedPort, parse_port);
        match (ip, port) {
            (None, None) => Ok(None),
            (Some(ip), Some(port)) => Ok(Some(SocketAddr::new(ip?, port?))),
            (None, Some(_)) => Err(HeaderError::Missing(Header::ObservedIp)),
            (Some(_), None) => Err(HeaderError::Missing(Header::ObservedPort)),
        }
    }

    fn introduction(&self) -> Result<Introduction, HeaderError> {
        Ok(Introduction {
            peer: self.contact()?,
            peer_version: self
                .peer_version
                .required(Header::PeerVersion, Version::parse)?,
            observed: self
                .observed()?
                .ok_or(HeaderError::Missing(Header::ObservedIp))?,
            ticket: self.ticket()?,
        })
    }

    fn unmatched(&self) -> Result<Unmatched, HeaderError> {
        let reason = match self.reason {
            Raw::Once(text) => String::from_utf8_lossy(text).into_owned(),
            _ => String::new(),
        };
        Ok(Unmatched {
            name: self.name.required(Header::Name, Name::new)?,
            ticket: self.ticket()?,
            reason,
        })
    }

    #[inline(always)]
    pub(super) fn request(&self, method: Method) -> Request {
        let invalid = |error| Request::Invalid { method, error };
        match method {
            Method::Register => match self.contact() {
                Ok(contact) => Request::Register(contact, self.version()),
                Err(error) => invalid(error),
            },
            Method::Chat => match (self.contact(), self.ticket(), self.noise()) {
                (Ok(contact), Ok(ticket), Ok(noise)) => Request::Chat(contact, ticket, noise),
                (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => invalid(error),
            },
            Method::Bridge => match self.name.parse(Header::Name, Name::new) {
                None => Request::Bridge {
                    name: None,
                    peer: self.peer.parse(Header::Peer, Name::new).transpose(),
                },
                Some(Ok(name)) => Request::Bridge {
                    name: Some(name),
                    peer: self.peer.parse(Header::Peer, Name::new).transpose(),
                },
                Some(Err(error)) => invalid(error),
            },
            Method::Unregister => Request::Unregister,
            Method::Message => Request::Message(Vec::new()),
            Method::Quit => match self.reason {
                Raw::Once(text) => Request::QuitWith {
                    body: Vec::new(),
                    reason: Some(String::from_utf8_lossy(text).into_owned()),
                },
                _ => Request::Quit,
            },
            Method::Matched => self.introduction().map_or_else(invalid, Request::Matched),
            Method::Unmatched => self.unmatched().map_or_else(invalid, Request::Unmatched),
            Method::Started => self.ticket().map_or_else(invalid, Request::Started),
            Method::Relay => match self.ticket() {
                Ok(Some(ticket)) => Request::Relay(ticket),
                Ok(None) => invalid(HeaderError::Missing(Header::Ticket)),
                Err(error) => invalid(error),
            },
        }
    }

    /// A response's head; a contact or v2 header that is present must be whole and valid.
    pub(super) fn response(&self, status: Status) -> Result<Response, DecodeError> {
        let contact = if self.has_any_contact_header() {
            Some(self.contact().map_err(|_| BAD_RESPONSE_CONTACT)?)
        } else {
            None
        };
        let peer_version = self
            .peer_version
            .parse(Header::PeerVersion, Version::parse)
            .transpose()
            .map_err(|_| BAD_RESPONSE_V2)?;
        Ok(Response {
            status,
            contact,
            body: Vec::new(),
            version: self.version(),
            observed: self.observed().map_err(|_| BAD_RESPONSE_V2)?,
            peer_version,
            ticket: self.ticket().map_err(|_| BAD_RESPONSE_V2)?,
            noise: self.noise().map_err(|_| BAD_RESPONSE_V2)?,
            // Another dialect, or a repeated header, is none we know: the peer's is ours.
            course_peer: matches!(self.dialect, Raw::Once(v) if v.eq_ignore_ascii_case(b"course")),
        })
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
