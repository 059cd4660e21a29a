//! Running out of file descriptors: the loop backs off instead of spinning or
//! dying, keeps serving the connections it has, and accepts again once
//! descriptors are free.
//!
//! The descriptor limit is per process, so the scenario runs in a child copy
//! of this test binary started under `ulimit -n`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bridgechat_core::server::{Server, ServerConfig, ServerEvent, ServerInput};
use bridgechat_transport_mio::Runner;

const CHILD_ENV: &str = "BRIDGECHAT_EMFILE_CHILD";
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn out_of_file_descriptors_backs_off_then_accepts() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 128 && exec "$0" --exact emfile_scenario --ignored --nocapture --test-threads=1"#)
        .arg(exe)
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child test");
    let id = child.id();
    let (done_tx, done) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let output = match done.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("wait for the child test"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("the child test did not finish in time");
        }
    };
    assert!(
        output.status.success(),
        "the child test failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs only in the child, under the lowered limit.
#[test]
#[ignore = "run by out_of_file_descriptors_backs_off_then_accepts in a child process"]
fn emfile_scenario() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let (events_tx, events) = mpsc::channel();
    let runner = Runner::new(Server::new(
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            ..ServerConfig::default()
        },
        [1; 32],
    ))
    .expect("create the runner");
    let controller = runner.controller();
    let server = thread::spawn(move || {
        runner.run(move |event| {
            let _ = events_tx.send(event);
        })
    });
    let addr = loop {
        match events
            .recv_timeout(WAIT)
            .expect("the server reports Listening")
        {
            ServerEvent::Listening(addr) => break addr,
            _ => continue,
        }
    };
    let mut alice = connect(addr);
    assert!(request(&mut alice, REGISTER_ALICE).starts_with("HTTP/1.1 200"));
    // Opened before the descriptors run out; read again with `read_at`.
    let stat = File::open("/proc/self/stat").expect("open /proc/self/stat");
    let cpu_before = cpu_ticks(&stat);

    // Use up every descriptor but one, which the next client takes: the
    // server's accept then fails with EMFILE.
    let mut filler = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => filler.push(file),
            Err(e) if e.raw_os_error() == Some(24) => break, // EMFILE
            Err(e) => panic!("unexpected error while using up descriptors: {e}"),
        }
    }
    filler.pop();
    let mut bob = connect(addr);
    bob.write_all(REGISTER_BOB.as_bytes())
        .expect("send bob's REGISTER");
    // Not accepted while there are no descriptors: no answer within half a second.
    bob.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    let err = bob
        .read(&mut byte)
        .expect_err("bob was answered without a descriptor");
    assert!(matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ));
    // The loop kept serving the connection it had, without spinning.
    assert!(request(&mut alice, "BRIDGE / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    let cpu_used = cpu_ticks(&stat) - cpu_before;
    assert!(
        cpu_used < 20,
        "used {cpu_used} ticks of CPU while out of descriptors"
    );

    // Descriptors free again: bob is accepted and answered.
    drop(filler);
    bob.set_read_timeout(Some(WAIT)).expect("set read timeout");
    assert!(read_response(&mut bob).starts_with("HTTP/1.1 200"));

    assert!(controller.send(ServerInput::Shutdown));
    server
        .join()
        .expect("the server thread")
        .expect("clean shutdown");
}

const REGISTER_ALICE: &str =
    "REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";
const REGISTER_BOB: &str =
    "REGISTER / HTTP/1.1\r\nName: bob\r\nIP: 127.0.0.1\r\nPort: 9002\r\n\r\n";

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    stream
}

fn request(stream: &mut TcpStream, request: &str) -> String {
    stream
        .write_all(request.as_bytes())
        .expect("send a request");
    read_response(stream)
}

/// Reads one body-less response (every answer here is `Content-Length: 0`).
fn read_response(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read a response");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("a UTF-8 head")
}

/// User plus system CPU time of this process, in clock ticks (fields 14 and 15).
fn cpu_ticks(stat: &File) -> u64 {
    let mut buf = [0u8; 1024];
    let n = stat.read_at(&mut buf, 0).expect("read /proc/self/stat");
    let text = String::from_utf8_lossy(&buf[..n]);
    // The command name (field 2) may hold spaces; count fields after its ')'.
    let after_name = &text[text.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let field = |n: usize| -> u64 { fields[n - 3].parse().expect("a number") };
    field(14) + field(15)
}
