//! `bridgechat bench` works end to end against both transports (a functional check,
//! nothing timed): every stage runs, every client registers, pairs are handed out
//! exactly once, chats complete, and the summary line says so.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bridgechat")
}

/// Starts `bridgechat server` on a free loopback port; returns it and its address.
fn server(transport: &str) -> (Server, String) {
    let mut child = Command::new(bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
            "--transport",
            transport,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().expect("server stdout");
    let guard = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    (guard, addr)
}

fn summary(stdout: &str) -> Vec<(String, String)> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(summary: &'a [(String, String)], key: &str) -> &'a str {
    summary
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in the summary"))
}

fn run_bench(addr: &str) {
    let out = Command::new(bin())
        .args([
            "bench",
            "--quiet",
            "--server",
            addr,
            "--clients",
            "20",
            "--turns",
            "6",
            "--duration",
            "0.3",
            "--pipeline",
            "2",
        ])
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&stdout);
    assert_eq!(get(&s, "registered"), "20");
    assert_eq!(get(&s, "peak_registered"), "20");
    assert_eq!(get(&s, "held_probe"), "3/3", "the server holds the names");
    assert_eq!(get(&s, "pairs"), "10");
    assert_eq!(get(&s, "pairing_ok"), "true");
    assert_eq!(get(&s, "turns"), "60");
    assert_eq!(get(&s, "status_errors"), "0");
    assert_eq!(get(&s, "conn_errors"), "0");
    assert_eq!(get(&s, "protocol_errors"), "0");
    assert_ne!(get(&s, "steady_requests"), "0");
}

#[test]
fn bench_runs_every_stage_against_the_mio_server() {
    let (_server, addr) = server("mio");
    run_bench(&addr);
}

#[test]
fn bench_runs_every_stage_against_the_std_server() {
    let (_server, addr) = server("std");
    run_bench(&addr);
}

#[test]
fn bench_raw_pingpong_needs_no_server() {
    let out = Command::new(bin())
        .args([
            "bench",
            "--quiet",
            "--phase",
            "pingpong",
            "--clients",
            "2",
            "--turns",
            "200",
        ])
        .output()
        .expect("run the bench");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let s = summary(&stdout);
    assert_eq!(get(&s, "round_trips"), "100");
}

#[test]
fn bench_says_clearly_when_the_server_is_unreachable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = Command::new(bin())
        .args(["bench", "--server", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run the bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("server 127.0.0.1:{port} unreachable")),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clean line: {stderr}");
}
