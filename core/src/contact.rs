//! The three values that identify a client on the wire: `Name`, `IP`, `Port`.
//!
//! Validation happens once, in the constructors; everything downstream can
//! trust a [`Contact`]. All types here are `Copy` and heap-free so the server
//! can hold 100,000 registrations cheaply and answer without allocating.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest name the contract allows.
pub const MAX_NAME_LEN: usize = 32;

/// A client name: 1–32 characters from `A–Z a–z 0–9 _ - .`, stored inline.
#[derive(Clone, Copy)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

/// Why a header value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidValue {
    Empty,
    TooLong,
    BadCharacter,
    NotAnAddress,
    NotAPort,
    NotATicket,
    NotNoise,
    NotAVersion,
}

impl fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidValue::Empty => "empty",
            InvalidValue::TooLong => "longer than 32 characters",
            InvalidValue::BadCharacter => "only A-Z a-z 0-9 _ - . are allowed",
            InvalidValue::NotAnAddress => "not an IPv4 or IPv6 address",
            InvalidValue::NotAPort => "not a decimal port 1-65535",
            InvalidValue::NotATicket => "not 32 hex digits",
            InvalidValue::NotNoise => "not 96 hex digits",
            InvalidValue::NotAVersion => "not 1 or 2",
        })
    }
}

/// `NAME_BYTES[b]`: whether byte `b` may appear in a name (`A–Z a–z 0–9 _ - .`).
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.';
        b += 1;
    }
    table
};

impl Name {
    /// Checks `raw` against the contract's name rule.
    #[inline]
    pub fn new(raw: &[u8]) -> Result<Name, InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if raw.len() > MAX_NAME_LEN {
            return Err(InvalidValue::TooLong);
        }
        if !raw.iter().all(|&b| NAME_BYTES[usize::from(b)]) {
            return Err(InvalidValue::BadCharacter);
        }
        // A fixed-length copy that pads with zeros: the compiler unrolls it, where
        // copy-then-zero-the-rest became two libc calls on the server's hot path.
        let mut bytes = [0u8; MAX_NAME_LEN];
        for (i, slot) in bytes.iter_mut().enumerate() {
            *slot = raw.get(i).copied().unwrap_or(0);
        }
        Ok(Name {
            len: raw.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // The constructor admits ASCII only, so this cannot fail.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name folded to ASCII lower case: `Bob`, `bob` and `BOB` share one key.
    /// Registrations are unique by key; each keeps its own spelling in `Name`.
    #[inline]
    pub fn key(&self) -> NameKey {
        let mut bytes = self.bytes;
        bytes.make_ascii_lowercase();
        NameKey {
            len: self.len,
            bytes,
        }
    }

    /// Whether two names are the same without regard to ASCII case.
    pub fn same_as(&self, other: &Name) -> bool {
        self.as_bytes().eq_ignore_ascii_case(other.as_bytes())
    }
}

/// A [`Name`] folded to lower case, for lookups that ignore case; fixed-size, no heap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameKey {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.bytes[..usize::from(self.len)];
        write!(f, "{:?}", String::from_utf8_lossy(text))
    }
}

impl std::str::FromStr for Name {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Name, InvalidValue> {
        Name::new(s.as_bytes())
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Name {}
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Parses an `IP` header value (`127.0.0.1`, `::1`).
pub fn parse_ip(raw: &[u8]) -> Result<IpAddr, InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::Empty);
    }
    if let Some(v4) = parse_dotted_quad(raw) {
        return Ok(IpAddr::V4(v4));
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(InvalidValue::NotAnAddress)
}

/// The common case, `a.b.c.d`, without the UTF-8 check and the IPv6 attempt of `from_str`.
/// Accepts only what `Ipv4Addr::from_str` accepts (no leading zeros); `None` means "ask std".
fn parse_dotted_quad(raw: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = raw.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut value: u16 = 0;
        for &digit in part {
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u16::from(digit - b'0');
        }
        *octet = u8::try_from(value).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

/// Why a registered IP cannot be a peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusableIp {
    /// `0.0.0.0` or `::`: "any address", nobody's in particular.
    Unspecified,
    /// `255.255.255.255`: every host on the link.
    Broadcast,
    /// `224.0.0.0/4` or `ff00::/8`: a group, not a host; TCP cannot connect to it.
    Multicast,
    /// `169.254.169.254` (and AWS's `fd00:ec2::254`): the cloud's metadata service.
    CloudMetadata,
}

impl fmt::Display for UnusableIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnusableIp::Unspecified => "the unspecified address",
            UnusableIp::Broadcast => "the broadcast address",
            UnusableIp::Multicast => "a multicast address",
            UnusableIp::CloudMetadata => "the cloud metadata service",
        })
    }
}

/// The cloud metadata service: a fixed service address on every major cloud, never a host.
const CLOUD_METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const CLOUD_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Whether `ip` is an address no peer could mean (IPv4-mapped IPv6 counts as its IPv4).
pub fn unusable_ip(ip: IpAddr) -> Option<UnusableIp> {
    match ip.to_canonical() {
        ip if ip.is_unspecified() => Some(UnusableIp::Unspecified),
        ip if ip.is_multicast() => Some(UnusableIp::Multicast),
        IpAddr::V4(v4) if v4.is_broadcast() => Some(UnusableIp::Broadcast),
        IpAddr::V4(CLOUD_METADATA_V4) | IpAddr::V6(CLOUD_METADATA_V6) => {
            Some(UnusableIp::CloudMetadata)
        }
        _ => None,
    }
}

/// Whether `ip` belongs to a private network: RFC 1918, loopback, link-local, or
/// IPv6 unique-local (`fc00::/7`). Such an address means something only near its owner.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xffc0) == 0xfe80 || (first & 0xfe00) == 0xfc00
        }
    }
}

/// Parses a `Port` header value: plain decimal digits, 1–65535.
pub fn parse_port(raw: &[u8]) -> Result<u16, InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::Empty);
    }
    if raw.len() > 5 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(InvalidValue::NotAPort);
    }
    let value = raw
        .iter()
        .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(InvalidValue::NotAPort),
    }
}

/// Where a client can be reached for a chat: its name and its chat listener.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    pub name: Name,
    pub ip: IpAddr,
    port: u16,
}

impl Contact {
    /// A contact; `port` must be 1–65535.
    pub fn new(name: Name, ip: IpAddr, port: u16) -> Result<Contact, InvalidValue> {
        if port == 0 {
            return Err(InvalidValue::NotAPort);
        }
        Ok(Contact { name, ip, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.name, self.socket_addr())
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(Name::new(b"alice").is_ok());
        assert!(Name::new(b"A-z_0.9").is_ok());
        assert_eq!(Name::new(b""), Err(InvalidValue::Empty));
        assert_eq!(Name::new(&[b'a'; 33]), Err(InvalidValue::TooLong));
        assert!(Name::new(&[b'a'; 32]).is_ok());
        assert_eq!(Name::new(b"al ice"), Err(InvalidValue::BadCharacter));
        assert_eq!(Name::new("é".as_bytes()), Err(InvalidValue::BadCharacter));
    }

    #[test]
    fn keys_ignore_ascii_case_and_names_keep_their_spelling() {
        let (bob, upper) = (Name::new(b"bob").unwrap(), Name::new(b"BoB").unwrap());
        assert_eq!(bob.key(), upper.key());
        assert!(bob.same_as(&upper));
        assert_ne!(bob, upper);
        assert_eq!(upper.as_str(), "BoB");
        assert_ne!(bob.key(), Name::new(b"bobb").unwrap().key());
        assert_eq!(
            Name::new(b"A-z_0.9").unwrap().key(),
            Name::new(b"a-Z_0.9").unwrap().key()
        );
    }

    #[test]
    fn addresses_no_peer_could_mean_are_unusable() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (text, why) in [
            ("0.0.0.0", UnusableIp::Unspecified),
            ("::", UnusableIp::Unspecified),
            ("::ffff:0.0.0.0", UnusableIp::Unspecified),
            ("255.255.255.255", UnusableIp::Broadcast),
            ("224.0.0.1", UnusableIp::Multicast),
            ("239.255.255.250", UnusableIp::Multicast),
            ("ff02::1", UnusableIp::Multicast),
            ("::ffff:224.0.0.1", UnusableIp::Multicast),
            ("169.254.169.254", UnusableIp::CloudMetadata),
            ("fd00:ec2::254", UnusableIp::CloudMetadata),
        ] {
            assert_eq!(unusable_ip(ip(text)), Some(why), "{text}");
        }
        for usable in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "169.254.1.1",
            "8.8.8.8",
            "2001:db8::1",
        ] {
            assert_eq!(unusable_ip(ip(usable)), None, "{usable}");
        }
    }

    #[test]
    fn private_addresses_are_rfc1918_loopback_link_local_and_ula() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd12::1",
            "fc00::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private_ip(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "fec0::1",
            "100.64.0.1",
        ] {
            assert!(!is_private_ip(ip(public)), "{public}");
        }
    }

    #[test]
    fn ports_are_plain_decimal_1_to_65535() {
        assert_eq!(parse_port(b"9001"), Ok(9001));
        assert_eq!(parse_port(b"65535"), Ok(65535));
        assert_eq!(parse_port(b"0"), Err(InvalidValue::NotAPort));
        assert_eq!(parse_port(b"70000"), Err(InvalidValue::NotAPort));
        assert_eq!(parse_port(b"+80"), Err(InvalidValue::NotAPort));
        assert_eq!(parse_port(b""), Err(InvalidValue::Empty));
    }

    proptest::proptest! {
        #[test]
        fn the_ipv4_fast_path_agrees_with_std(raw in "[0-9.:a-f]{0,17}") {
            let std_says = raw.parse::<IpAddr>().ok();
            proptest::prop_assert_eq!(parse_ip(raw.as_bytes()).ok(), std_says);
        }
    }

    #[test]
    fn ips_accept_v4_and_v6_text() {
        assert_eq!(
            parse_ip(b"10.0.0.255"),
            Ok(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 255)))
        );
        for refused in [
            &b"01.2.3.4"[..],
            b"1.2.3",
            b"1.2.3.4.5",
            b"256.1.1.1",
            b"1..2.3",
            b"1.2.3.4 ",
        ] {
            assert_eq!(
                parse_ip(refused),
                Err(InvalidValue::NotAnAddress),
                "{refused:?}"
            );
        }
        assert!(parse_ip(b"127.0.0.1").is_ok());
        assert!(parse_ip(b"::1").is_ok());
        assert_eq!(parse_ip(b"localhost"), Err(InvalidValue::NotAnAddress));
    }
}
