//! Which page a `GET` or `HEAD` asks for, and how the connection goes on after it.

/// The pages an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`: what this server is and how busy it is, in plain text.
    Status,
    /// `/healthz`: `200 ok` while the server is serving.
    Health,
    /// `/metrics`: Prometheus (OpenMetrics) text.
    Metrics,
    /// Any other path: `404`.
    NotFound,
}

/// A `GET` or `HEAD` request, as the codec decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page: Page,
    /// `HEAD`: the same head as `GET`, no body.
    pub head_only: bool,
    /// Close the connection after the answer (`Connection: close`, or HTTP/1.0
    /// without `Connection: keep-alive`).
    pub close: bool,
    /// The host part of a well-formed `Host` header, to show in the connect hint.
    pub host: Option<String>,
}

impl PageRequest {
    /// The page a `GET`/`HEAD` head asks for; `None` for any other method.
    pub(crate) fn parse(request: &httparse::Request<'_, '_>) -> Option<PageRequest> {
        let head_only = match request.method? {
            "GET" => false,
            "HEAD" => true,
            _ => return None,
        };
        let path = request.path.unwrap_or("/");
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let page = match path {
            "/" => Page::Status,
            "/healthz" => Page::Health,
            "/metrics" => Page::Metrics,
            _ => Page::NotFound,
        };
        let mut close = request.version == Some(0);
        let mut host = None;
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("connection") {
                for token in header.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive")
                        && request.version == Some(0)
                    {
                        close = false;
                    }
                }
            } else if header.name.eq_ignore_ascii_case("host") {
                host = host_name(header.value);
            }
        }
        Some(PageRequest {
            page,
            head_only,
            close,
            host,
        })
    }
}

/// The host part of a `Host` header (`example.org`, `10.0.0.1`, `[::1]`), if it
/// looks like one; anything else is ignored rather than echoed.
pub(super) fn host_name(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let host = match value.strip_prefix('[') {
        Some(rest) => &value[..rest.find(']')? + 2],
        None => value.split(':').next()?,
    };
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plausible.then(|| host.to_owned())
}
