//! Unit tests of the operator pages: request parsing and rendering.

use super::request::host_name;
use super::*;

fn parse(head: &str) -> Option<PageRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(head.as_bytes()).unwrap();
    PageRequest::parse(&request)
}

#[test]
fn paths_name_pages_and_query_strings_are_ignored() {
    let page = |head: &str| parse(head).map(|r| r.page);
    assert_eq!(page("GET / HTTP/1.1\r\n\r\n"), Some(Page::Status));
    assert_eq!(page("GET /healthz HTTP/1.1\r\n\r\n"), Some(Page::Health));
    assert_eq!(
        page("HEAD /metrics?x=1 HTTP/1.1\r\n\r\n"),
        Some(Page::Metrics)
    );
    assert_eq!(page("GET /admin HTTP/1.1\r\n\r\n"), Some(Page::NotFound));
    assert_eq!(
        page("get / HTTP/1.1\r\n\r\n"),
        None,
        "methods are case-sensitive"
    );
    assert_eq!(page("REGISTER / HTTP/1.1\r\n\r\n"), None);
}

#[test]
fn keep_alive_follows_http_1_1_and_connection_close_is_honoured() {
    let close = |head: &str| parse(head).unwrap().close;
    assert!(!close("GET / HTTP/1.1\r\n\r\n"));
    assert!(close(
        "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
    ));
    assert!(close("GET / HTTP/1.0\r\n\r\n"));
    assert!(!close("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
}

#[test]
fn only_a_plausible_host_is_kept() {
    let host = |value: &str| host_name(value.as_bytes());
    assert_eq!(host("example.org:7070").as_deref(), Some("example.org"));
    assert_eq!(host("[::1]:7070").as_deref(), Some("[::1]"));
    assert_eq!(host("10.0.0.1").as_deref(), Some("10.0.0.1"));
    assert_eq!(host("<script>"), None);
    assert_eq!(host(""), None);
}

#[test]
fn uptime_reads_like_a_clock() {
    let shown = |secs| Uptime(Duration::from_secs(secs)).to_string();
    assert_eq!(shown(7), "7s");
    assert_eq!(shown(3 * 60 + 7), "3m 07s");
    assert_eq!(shown(2 * 3600 + 3 * 60 + 7), "2h 03m 07s");
    assert_eq!(shown(86_400 + 7), "1d 00h 00m 07s");
}
