//! The client as a person meets it at a terminal: `bridgechat client` runs in
//! a real pseudo-terminal, keys go in as a terminal sends them, and what it
//! prints is fed to a terminal emulator (vt100) so the tests read the screen
//! a person would see. Also the display of a peer's message on the plain
//! (piped) path, which a hostile peer must not be able to disguise.
//!
//! Every wait is for something on the screen (or an exit), bounded by
//! [`WAIT`]; no fixed sleeps. Children are killed when their handle drops.
//!
//! `UPDATE_DOCS=1 cargo test -p bridgechat --test terminal` rewrites
//! docs/terminal-session.txt from the recorded chat.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use portable_pty::{native_pty_system, ChildKiller, CommandBuilder, MasterPty, PtySize};

mod common;
use common::{read_message, Proc, WAIT};

const ROWS: u16 = 60;
const COLUMNS: u16 = 100;
/// A terminal asks where the cursor is with this; the editor waits for the answer.
const CURSOR_QUERY: &[u8] = b"\x1b[6n";

struct Screen {
    parser: vt100::Parser,
    /// Everything the program wrote, escape sequences and all.
    raw: Vec<u8>,
    closed: bool,
}

/// A `bridgechat` in a pseudo-terminal, with the screen it draws.
struct Tty {
    name: String,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    keys: Arc<Mutex<Box<dyn Write + Send>>>,
    exit: Receiver<portable_pty::ExitStatus>,
    killer: Box<dyn ChildKiller + Send + Sync>,
    exited: bool,
    // Closing the master hangs up the terminal: keep it for the child's life.
    _master: Box<dyn MasterPty + Send>,
}

impl Tty {
    fn spawn(name: &str, args: &[&str]) -> Tty {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLUMNS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_bridgechat"));
        command.args(args);
        command.env("TERM", "xterm-256color");
        command.env_remove("BRIDGECHAT_SERVER");
        command.env_remove("NO_COLOR");
        let mut child = pty.slave.spawn_command(command).expect("start bridgechat");
        drop(pty.slave);
        let killer = child.clone_killer();
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        let screen = Arc::new((
            Mutex::new(Screen {
                parser: vt100::Parser::new(ROWS, COLUMNS, 0),
                raw: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        ));
        let keys = Arc::new(Mutex::new(pty.master.take_writer().expect("pty writer")));
        let mut output = pty.master.try_clone_reader().expect("pty reader");
        let (shared, answer) = (screen.clone(), keys.clone());
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            let mut pending = Vec::new();
            loop {
                let n = output.read(&mut chunk).unwrap_or(0);
                let (lock, changed) = &*shared;
                let mut screen = lock.lock().unwrap();
                if n == 0 {
                    screen.closed = true;
                    changed.notify_all();
                    return;
                }
                pending.extend_from_slice(&chunk[..n]);
                // Play the output up to each cursor query, then answer it as a terminal would.
                while let Some(at) = find(&pending, CURSOR_QUERY) {
                    let end = at + CURSOR_QUERY.len();
                    screen.parser.process(&pending[..end]);
                    screen.raw.extend_from_slice(&pending[..end]);
                    pending.drain(..end);
                    let (row, column) = screen.parser.screen().cursor_position();
                    let reply = format!("\x1b[{};{}R", row + 1, column + 1);
                    let mut keys = answer.lock().unwrap();
                    let _ = keys.write_all(reply.as_bytes()).and_then(|()| keys.flush());
                }
                // Keep a possible start of a query for the next read.
                let keep = (1..CURSOR_QUERY.len())
                    .rev()
                    .find(|&k| pending.ends_with(&CURSOR_QUERY[..k]))
                    .unwrap_or(0);
                let done = pending.len() - keep;
                screen.parser.process(&pending[..done]);
                screen.raw.extend_from_slice(&pending[..done]);
                pending.drain(..done);
                changed.notify_all();
            }
        });
        Tty {
            name: name.to_owned(),
            screen,
            keys,
            exit,
            killer,
            exited: false,
            _master: pty.master,
        }
    }

    /// Sends bytes as the terminal would for keys pressed (or text pasted).
    fn keys(&self, bytes: &str) {
        let mut keys = self.keys.lock().unwrap();
        keys.write_all(bytes.as_bytes())
            .and_then(|()| keys.flush())
            .unwrap_or_else(|e| panic!("{}: cannot type {bytes:?}: {e}", self.name));
    }

    /// Types `text` and Enter.
    fn line(&self, text: &str) {
        self.keys(&format!("{text}\r"));
    }

    /// The screen as text, one line per row, trailing blanks dropped, from
    /// the first row written (the editor keeps its prompt on the bottom row).
    fn text(&self) -> String {
        let contents = self.screen.0.lock().unwrap().parser.screen().contents();
        let rows: Vec<&str> = contents.lines().map(str::trim_end).collect();
        let first = rows.iter().position(|r| !r.is_empty()).unwrap_or(0);
        rows[first..].join("\n")
    }

    /// The row the cursor is on.
    fn cursor_row(&self) -> String {
        let screen = self.screen.0.lock().unwrap();
        let (row, _) = screen.parser.screen().cursor_position();
        let rows: Vec<String> = screen.parser.screen().rows(0, COLUMNS).collect();
        rows[usize::from(row)].trim_end().to_owned()
    }

    /// Waits until the screen satisfies `wanted`; returns its text.
    fn wait_for(&self, what: &str, wanted: impl Fn(&Screen) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let (lock, changed) = &*self.screen;
        let mut screen = lock.lock().unwrap();
        loop {
            if wanted(&screen) {
                return screen.parser.screen().contents();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || screen.closed {
                panic!(
                    "{}: {what} not on the screen within {} s; the screen:\n{}",
                    self.name,
                    WAIT.as_secs(),
                    screen.parser.screen().contents()
                );
            }
            screen = changed.wait_timeout(screen, left).unwrap().0;
        }
    }

    /// Waits for a row that contains `needle`.
    fn expect(&self, needle: &str) -> String {
        self.wait_for(&format!("a row containing {needle:?}"), |s| {
            s.parser.screen().contents().contains(needle)
        })
    }

    /// Waits for the prompt (the cursor row) to read `prompt`.
    fn expect_prompt(&self, prompt: &str) {
        self.wait_for(&format!("the prompt {prompt:?}"), |s| {
            let (row, _) = s.parser.screen().cursor_position();
            let rows: Vec<String> = s.parser.screen().rows(0, COLUMNS).collect();
            rows[usize::from(row)].trim_end() == prompt && s.parser.screen().bracketed_paste()
        });
    }

    fn exit_code(&mut self) -> u32 {
        let status = self
            .exit
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{} still running:\n{}", self.name, self.text()));
        self.exited = true;
        // The last output may still be on its way to the screen.
        self.wait_for("the terminal to close", |s| s.closed);
        status.exit_code()
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.killer.kill();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn server() -> (Proc, String) {
    let mut server = Proc::spawn("server", &["server", "--listen", "127.0.0.1:0"]);
    let addr = server.listening();
    (server, addr)
}

/// A client at a terminal, registered and waiting for a peer.
fn waiting_at_a_terminal(name: &str, server: &str) -> Tty {
    let tty = Tty::spawn(name, &["client", "--name", name, "--server", server]);
    tty.expect("listening on");
    tty.expect_prompt(&format!("[UNREGISTERED] {name}>"));
    tty.line("/register");
    tty.expect_prompt(&format!("[REGISTERED] {name}>"));
    tty.line("/bridge");
    tty.expect_prompt(&format!("[WAIT] {name}>"));
    tty
}

/// A piped client that finds `peer` waiting and opens the chat: its turn.
fn piped_peer(name: &str, server: &str, peer: &str) -> Proc {
    let mut proc = Proc::spawn(name, &["client", "--name", name, "--server", server]);
    proc.listening();
    proc.send("/register");
    proc.expect_mode("REGISTERED");
    proc.send("/bridge");
    assert!(proc.expect_mode("READY MODE").contains(peer));
    proc.send("/chat");
    proc.expect_mode("WRITE MODE");
    proc
}

#[test]
fn half_a_typed_line_survives_a_message_arriving() {
    let (_server, addr) = server();
    let alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = piped_peer("bob", &addr, "alice");
    alice.expect_prompt("[READ] alice←bob>");
    alice.keys("I was half way typ");
    alice.expect_prompt("[READ] alice←bob> I was half way typ");
    bob.send("hello again");
    let screen =
        alice.expect_prompt_after("bob: hello again", "[WRITE] alice→bob> I was half way typ");
    assert!(
        screen.lines().any(|row| row == "bob: hello again"),
        "the message is broken up:\n{screen}"
    );
    alice.line("ing");
    bob.expect_exact("alice: I was half way typing");
}

impl Tty {
    /// Waits until `row` is on the screen and the prompt reads `prompt`.
    fn expect_prompt_after(&self, row: &str, prompt: &str) -> String {
        self.expect(row);
        self.expect_prompt(prompt);
        assert_eq!(self.cursor_row(), prompt);
        self.text()
    }
}

#[test]
fn a_pasted_block_of_three_lines_is_one_message() {
    let (_server, addr) = server();
    let alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = piped_peer("bob", &addr, "alice");
    bob.send("paste me something");
    alice.expect_prompt("[WRITE] alice→bob>");
    // What a terminal sends for a paste: the text between ESC[200~ and ESC[201~,
    // its line breaks as CR.
    alice.keys("\x1b[200~first line\rsecond line\rthird line\x1b[201~");
    alice.expect("third line");
    alice.keys("\r");
    alice.expect_prompt("[READ] alice←bob>");
    bob.expect_exact("alice: first line");
    bob.expect_exact("       second line");
    bob.expect_exact("       third line");
    bob.expect_mode("WRITE MODE");
}

#[test]
fn a_mistyped_command_is_refused_and_not_sent() {
    let (_server, addr) = server();
    let alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = piped_peer("bob", &addr, "alice");
    bob.send("over to you");
    alice.expect_prompt("[WRITE] alice→bob>");
    alice.line("/qiut");
    let screen = alice.expect("unknown command /qiut");
    assert!(
        screen.contains("/register /bridge /chat /quit /help"),
        "{screen}"
    );
    // Still alice's turn; the next thing bob gets is her real message.
    alice.expect_prompt("[WRITE] alice→bob>");
    alice.line("");
    alice.line("//shrug");
    // The first message bob gets is that one: nothing before it was sent.
    let first = bob.expect_on(common::Stream::Out, "from alice", |l| {
        l.starts_with("alice")
    });
    assert_eq!(first, "alice: /shrug");
    alice.expect_prompt("[READ] alice←bob>");
}

#[test]
fn ctrl_c_says_goodbye_on_a_clean_line_and_exits_0() {
    let (_server, addr) = server();
    let mut alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = piped_peer("bob", &addr, "alice");
    alice.expect_prompt("[READ] alice←bob>");
    alice.keys("never sent");
    alice.expect_prompt("[READ] alice←bob> never sent");
    alice.keys("\x03");
    assert_eq!(alice.exit_code(), 0);
    let screen = alice.text();
    let rows: Vec<&str> = screen.lines().collect();
    let goodbye = rows.last().copied().unwrap_or_default();
    assert!(
        goodbye.starts_with("bye: you left the chat with bob"),
        "last row {goodbye:?}:\n{screen}"
    );
    assert_eq!(
        rows[rows.len() - 2],
        "[READ] alice←bob> never sent",
        "{screen}"
    );
    assert!(!screen.contains("^C"), "{screen}");
    // The terminal is left as it was found: no bracketed paste, cursor at the left.
    let (lock, _) = &*alice.screen;
    assert!(!lock.lock().unwrap().parser.screen().bracketed_paste());
    bob.expect("alice left the chat");
}

/// A peer's message cannot pass its lines off as the client's own, on the
/// plain (piped) path too; bidi and zero-width controls are neutralised.
#[test]
fn a_peer_cannot_forge_status_lines() {
    let (_server, addr) = server();
    let mut alice = Proc::spawn("alice", &["client", "--name", "alice", "--server", &addr]);
    let port = alice.listening_port();
    alice.send("/register");
    alice.expect_mode("REGISTERED");
    alice.send("/bridge");
    alice.expect_mode("WAIT MODE");
    let mut evil = TcpStream::connect(("127.0.0.1", port)).expect("connect to alice");
    let chat = format!("CHAT / HTTP/1.1\r\nName: evil\r\nIP: 127.0.0.1\r\nPort: {port}\r\n\r\n");
    evil.write_all(chat.as_bytes()).unwrap();
    let answer = read_message(&mut evil);
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // The one who sends CHAT writes first.
    alice.expect_mode("READ MODE");
    let forged = "see you\nerror: lost the chat with evil: connection reset\n\
                  REGISTERED: type /bridge to find a peer\n\u{202E}gnp.exe \u{2066}x\u{200B}y";
    let body = forged.as_bytes();
    let message = format!(
        "MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    evil.write_all(message.as_bytes()).unwrap();
    evil.write_all(body).unwrap();
    alice.expect_exact("evil: see you");
    alice.expect_exact("      error: lost the chat with evil: connection reset");
    alice.expect_exact("      REGISTERED: type /bridge to find a peer");
    alice.expect_exact("      \u{FFFD}gnp.exe \u{FFFD}x\u{FFFD}y");
    alice.expect_mode("WRITE MODE");
    alice.send("/quit");
    alice.exits_cleanly();
}
