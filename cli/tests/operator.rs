//! Running `bridgechat server` for others, as its operator meets it: the
//! status page, health check and metrics through curl and raw sockets,
//! `--metrics-listen`, and the log formats (`RUST_LOG`, `--log-format`).
//! Every wait is for an expected line or answer, bounded by `WAIT`.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};

mod common;
use common::{on_each_transport, read_message, server, spawn_server, WAIT};

/// One request on a fresh connection; the whole response as text.
fn ask(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("set timeout");
    stream.write_all(request.as_bytes()).expect("write");
    String::from_utf8_lossy(&read_message(&mut stream)).into_owned()
}

fn register(stream: &mut TcpStream, name: &str) {
    stream.set_read_timeout(Some(WAIT)).expect("set timeout");
    let request =
        format!("REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let answer = String::from_utf8_lossy(&read_message(stream)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
}

fn curl_present() -> bool {
    let present = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        eprintln!("skipped: curl is not installed");
    }
    present
}

/// Runs curl with `args`; its stdout.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-s", "-m", "5"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl {args:?} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn curl_sees_the_status_page_health_and_metrics(transport: &str) {
    if !curl_present() {
        return;
    }
    let (mut server, addr) = server(transport, &[]);
    let mut alice = TcpStream::connect(&addr).expect("connect");
    register(&mut alice, "alice");
    server.expect("registered alice");

    let page = curl(&[&format!("http://{addr}/")]);
    assert!(page.starts_with("bridgechat "), "{page}");
    assert!(page.contains("clients registered   1\n"), "{page}");
    assert!(
        page.contains(&format!(
            "bridgechat client --name YOUR_NAME --server {addr}"
        )),
        "{page}"
    );
    assert_eq!(curl(&[&format!("http://{addr}/healthz")]), "ok\n");
    let head = curl(&["-I", &format!("http://{addr}/healthz")]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let metrics = curl(&[&format!("http://{addr}/metrics")]);
    assert!(
        metrics.contains("\nbridgechat_clients_registered 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nbridgechat_registrations_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/admin"),
    ]);
    assert_eq!(code, "404");

    // HTTP/1.1 keep-alive: curl asks twice over one connection, the server answers both.
    let url = format!("http://{addr}/healthz");
    let connects = curl(&[
        "-w",
        "%{num_connects}\n",
        "-o",
        "/dev/null",
        &url,
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(connects, "1\n0\n", "the second GET reused the connection");
    let closed = curl(&[
        "-H",
        "Connection: close",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert!(closed.contains("Connection: close\r\n"), "{closed}");
}

fn metrics_listen_serves_the_pages_on_a_private_address(transport: &str) {
    let mut server = spawn_server(transport, &["--metrics-listen", "127.0.0.1:0"], &[]);
    // Bound before the main port, so announced first.
    let line = server.expect("metrics on ");
    let private = line.rsplit(' ').next().unwrap_or_default().to_owned();
    let addr = server.listening();
    let mut alice = TcpStream::connect(&addr).expect("connect");
    register(&mut alice, "alice");

    let metrics = ask(&private, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(
        metrics.contains("\nbridgechat_clients_registered 1\n"),
        "{metrics}"
    );
    for path in ["/", "/healthz"] {
        let answer = ask(&private, &format!("GET {path} HTTP/1.1\r\n\r\n"));
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{path}: {answer}"
        );
        let answer = ask(&addr, &format!("GET {path} HTTP/1.1\r\n\r\n"));
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{path}: {answer}"
        );
    }
    let public = ask(&addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(public.starts_with("HTTP/1.1 404 Not Found\r\n"), "{public}");
    // The private address speaks only GET.
    let refused = ask(
        &private,
        "REGISTER / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 1\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 501 "), "{refused}");
}

fn json_log_lines_parse_as_json(transport: &str) {
    let mut server = spawn_server(transport, &["--log-format", "json"], &[]);
    let listening = server.expect("listening on ");
    let addr = json(&listening)["addr"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut alice = TcpStream::connect(&addr).expect("connect");
    register(&mut alice, "alice");
    drop(alice);
    for (needle, event) in [
        ("listening on", "listening"),
        ("connected from", "accepted"),
        ("registered alice", "registered"),
        ("closed", "closed"),
    ] {
        let line = if event == "listening" {
            listening.clone()
        } else {
            server.expect(needle)
        };
        let value = json(&line);
        assert_eq!(value["event"], event, "{line}");
        assert_eq!(value["level"], "INFO", "{line}");
        assert!(
            value["message"].as_str().unwrap().contains(needle),
            "{line}"
        );
        assert!(
            value["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn full_log_lines_carry_a_timestamp_and_a_level(transport: &str) {
    let (mut server, addr) = server(transport, &["--log-format", "full"]);
    let mut alice = TcpStream::connect(&addr).expect("connect");
    register(&mut alice, "alice");
    let line = server.expect("registered alice");
    let (stamp, rest) = line.split_once(' ').unwrap_or_default();
    assert!(
        stamp.len() >= 20 && stamp.ends_with('Z') && stamp.contains('T'),
        "{line}"
    );
    assert_eq!(
        rest.trim_start(),
        "INFO #1 registered alice at 127.0.0.1:9001",
        "{line}"
    );
}

fn rust_log_filters_the_log_but_never_the_listening_line(transport: &str) {
    let mut server = spawn_server(
        transport,
        &["--max-connections", "1"],
        &[("RUST_LOG", "warn")],
    );
    let addr = server.listening();
    let mut alice = TcpStream::connect(&addr).expect("connect");
    register(&mut alice, "alice");
    // Over --max-connections: a 503, which is logged at warn.
    let refused = ask(&addr, "BRIDGE / HTTP/1.1\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    // Alice's info lines (connected, registered) came first but were filtered out.
    let next = server.expect_on(common::Stream::Out, "after the listening line", |_| true);
    assert!(
        next.contains("rejected: 503"),
        "RUST_LOG=warn let through {next:?}"
    );
}

on_each_transport!(
    curl_sees_the_status_page_health_and_metrics,
    metrics_listen_serves_the_pages_on_a_private_address,
    json_log_lines_parse_as_json,
    full_log_lines_carry_a_timestamp_and_a_level,
);

#[test]
fn rust_log_filters_the_log_but_never_the_listening_line_on_mio() {
    rust_log_filters_the_log_but_never_the_listening_line("mio");
}
