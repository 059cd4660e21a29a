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
        Tty::spawn_with_env(name, args, &[])
    }

    fn spawn_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Tty {
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
        for (key, value) in env {
            command.env(key, value);
        }
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
                let mut screen = lock.lock().unwrap_or_else(|e| e.into_inner());
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
                    let mut keys = answer.lock().unwrap_or_else(|e| e.into_inner());
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
        trimmed(&self.screen.0.lock().unwrap().parser.screen().contents())
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
                let shown = trimmed(&screen.parser.screen().contents());
                drop(screen);
                panic!(
                    "{}: {what} not on the screen within {} s; the screen:\n{shown}",
                    self.name,
                    WAIT.as_secs(),
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

/// Screen contents without trailing blanks on each row, from the first row
/// written (the editor keeps its prompt on the bottom row).
fn trimmed(contents: &str) -> String {
    let rows: Vec<&str> = contents.lines().map(str::trim_end).collect();
    let first = rows.iter().position(|r| !r.is_empty()).unwrap_or(0);
    rows[first..].join("\n")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn server() -> (Proc, String) {
    let mut server = Proc::spawn("server", &["server", "--listen", "127.0.0.1:0"]);
    let addr = server.listening();
    (server, addr)
}

/// `name` asks the server for a peer as a v1 client would, so the server
/// introduces it to the client waiting there (who then lets its CHAT in).
/// The connection stays open until the chat has started.
fn introduced(server: &str, name: &str) -> TcpStream {
    let mut asker = TcpStream::connect(server).expect("connect to the server");
    asker.set_read_timeout(Some(WAIT)).unwrap();
    let ask = format!(
        "REGISTER / HTTP/1.1\r\nName: {name}\r\nIP: 127.0.0.1\r\nPort: 9\r\n\r\nBRIDGE / HTTP/1.1\r\n\r\n"
    );
    asker.write_all(ask.as_bytes()).unwrap();
    assert!(read_message(&mut asker).starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(read_message(&mut asker).starts_with(b"HTTP/1.1 200 OK\r\nName: "));
    asker
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
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
    alice.keys("I was half way typ");
    alice.expect_prompt("[READ] alice←bob (encrypted)> I was half way typ");
    bob.send("hello again");
    let screen = alice.expect_prompt_after(
        "bob: hello again",
        "[WRITE] alice→bob (encrypted)> I was half way typ",
    );
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
    alice.expect_prompt("[WRITE] alice→bob (encrypted)>");
    // What a terminal sends for a paste: the text between ESC[200~ and ESC[201~,
    // its line breaks as CR.
    alice.keys("\x1b[200~first line\rsecond line\rthird line\x1b[201~");
    alice.expect("third line");
    alice.keys("\r");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
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
    alice.expect_prompt("[WRITE] alice→bob (encrypted)>");
    alice.line("/qiut");
    let screen = alice.expect("unknown command /qiut");
    assert!(
        screen.contains("/register /name /bridge /chat /quit /help"),
        "{screen}"
    );
    // Still alice's turn; the next thing bob gets is her real message.
    alice.expect_prompt("[WRITE] alice→bob (encrypted)>");
    alice.line("");
    alice.line("//shrug");
    // The first message bob gets is that one: nothing before it was sent.
    let first = bob.expect_on(common::Stream::Out, "from alice", |l| {
        l.starts_with("alice")
    });
    assert_eq!(first, "alice: /shrug");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
    // A command's name sent as text stays text.
    bob.send("and?");
    alice.expect_prompt("[WRITE] alice→bob (encrypted)>");
    alice.line("//quit");
    bob.expect_exact("alice: /quit");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
}

/// A taken name is no dead end: the client says how to pick another, and
/// `/name` registers under it.
#[test]
fn slash_name_after_a_taken_name_registers_under_the_new_one() {
    let (_server, addr) = server();
    let mut holder = Proc::spawn("alice", &["client", "--name", "alice", "--server", &addr]);
    holder.listening();
    holder.send("/register");
    holder.expect_mode("REGISTERED");

    let alice = Tty::spawn("alice2", &["client", "--name", "alice", "--server", &addr]);
    alice.expect_prompt("[UNREGISTERED] alice>");
    alice.line("/register");
    alice.expect("is taken");
    let screen = alice.text();
    assert!(
        screen.contains("\nerror: the name alice is taken — choose another with /name NEWNAME\n"),
        "{screen}"
    );
    assert!(!screen.contains("409"), "HTTP words: {screen}");
    alice.expect_prompt("[UNREGISTERED] alice>");
    alice.line("/name no spaces");
    alice.expect("error: \"no spaces\" cannot be a name");
    alice.line("/name alice2");
    alice.expect("your name is now alice2");
    alice.expect("REGISTERED: type /bridge");
    alice.expect_prompt("[REGISTERED] alice2>");

    // The peer meets the new name.
    alice.line("/bridge");
    alice.expect_prompt("[WAIT] alice2>");
    holder.send("/bridge");
    assert!(holder.expect_mode("READY MODE").contains("alice2"));
}

#[test]
fn ctrl_c_says_goodbye_on_a_clean_line_and_exits_0() {
    let (_server, addr) = server();
    let mut alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = piped_peer("bob", &addr, "alice");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
    alice.keys("never sent");
    alice.expect_prompt("[READ] alice←bob (encrypted)> never sent");
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
        "[READ] alice←bob (encrypted)> never sent",
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
    let _introduced = introduced(&addr, "evil");
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

/// A whole chat between two people at terminals: a paste, a held message, a
/// refused typo and clean exits. With `UPDATE_DOCS=1` the three screens are
/// written to docs/terminal-session.txt, which README's walkthrough shows.
#[test]
fn a_whole_chat_in_three_terminals() {
    let (server, addr) = server();
    let mut alice = waiting_at_a_terminal("alice", &addr);
    let mut bob = Tty::spawn("bob", &["client", "--name", "bob", "--server", &addr]);
    bob.expect_prompt("[UNREGISTERED] bob>");
    bob.line("/register");
    bob.expect_prompt("[REGISTERED] bob>");
    bob.line("/bridge");
    bob.expect_prompt("[READY] bob→alice>");
    bob.line("/chat");
    bob.expect_prompt("[WRITE] bob→alice (encrypted)>");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
    bob.expect("connected to alice directly");
    alice.expect("connected to bob directly");

    bob.line("hi alice! what's the plan?");
    alice.expect_prompt("[WRITE] alice→bob (encrypted)>");
    alice.line("/qiut");
    alice.expect("unknown command /qiut");
    alice.keys("\x1b[200~the plan:\r1. meet at noon\r2. bring the map\x1b[201~");
    alice.expect("2. bring the map");
    alice.keys("\r");
    alice.expect_prompt("[READ] alice←bob (encrypted)>");
    bob.expect("\n       2. bring the map");
    bob.expect_prompt("[WRITE] bob→alice (encrypted)>");

    alice.line("see you there");
    alice.expect_prompt("[READ] alice←bob (encrypted) (1 held)>");
    bob.line("deal");
    alice.expect("(sent your held message)");
    bob.expect("alice: see you there");
    bob.expect_prompt("[WRITE] bob→alice (encrypted)>");
    bob.line("/quit");
    assert_eq!(bob.exit_code(), 0);
    alice.expect("bob left the chat");
    alice.expect_prompt("[REGISTERED] alice>");
    alice.keys("\x04"); // Ctrl+D
    assert_eq!(alice.exit_code(), 0);
    server.interrupt();
    let mut server_log = vec![format!("listening on {addr}")];
    while !server_log.last().is_some_and(|l| l == "server stopped") {
        match server.lines.recv_timeout(WAIT) {
            Ok((_, line)) => server_log.push(line),
            Err(_) => panic!("the server did not stop: {server_log:#?}"),
        }
    }

    let (alice_screen, bob_screen) = (alice.text(), bob.text());
    // What each person sees: one message per turn, the paste whole, the
    // typo refused (never sent), the held message going out, clean exits.
    assert!(alice_screen.contains("\nbob: hi alice! what's the plan?\n"));
    assert!(bob_screen
        .contains("\nalice: the plan:\n       1. meet at noon\n       2. bring the map\n"));
    assert!(!bob_screen.contains("qiut"));
    assert!(bob_screen.contains("\nalice: see you there\n"));
    assert!(alice_screen.ends_with("bye: you left the server, which forgets your name"));
    assert!(bob_screen.ends_with("(alice is told) and the server"));

    if std::env::var_os("UPDATE_DOCS").is_some() {
        let ports = Ports::new(&addr, &alice_screen, &bob_screen);
        let session = format!(
            "{}\n── terminal 1: the server ──\n$ bridgechat server\n{}\n\n\
             ── terminal 2: alice ──\n$ bridgechat client --name alice\n{}\n\n\
             ── terminal 3: bob ──\n$ bridgechat client --name bob\n{}\n",
            SESSION_HEADER,
            ports.renumber(&server_log.join("\n")),
            ports.renumber(&alice_screen),
            ports.renumber(&bob_screen),
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/terminal-session.txt");
        std::fs::write(path, session).expect("write docs/terminal-session.txt");
    }
}

const SESSION_HEADER: &str = "\
A chat in three terminals, as recorded by the test a_whole_chat_in_three_terminals
(cli/tests/terminal.rs): the clients ran in pseudo-terminals, and this is what
each screen showed at the end, colour dropped. The test ran on ports the system
chose; they are renumbered as the default ones. To record it again:
UPDATE_DOCS=1 cargo test -p bridgechat --test terminal a_whole_chat
";

/// Renumbers the ports of one run as a person would see them with the defaults.
struct Ports(Vec<(String, String)>);

impl Ports {
    fn new(server: &str, alice: &str, bob: &str) -> Ports {
        let chat_port = |screen: &str| {
            let line = screen.lines().find(|l| l.starts_with("listening on "));
            line.and_then(|l| l.rsplit(':').next())
                .unwrap_or("")
                .to_owned()
        };
        let server_port = server.rsplit(':').next().unwrap_or("").to_owned();
        Ports(vec![
            (server_port, "7070".into()),
            (chat_port(alice), "9001".into()),
            (chat_port(bob), "9002".into()),
        ])
    }

    /// Every `IP:PORT` gets the default port for a known one, else a
    /// made-up connection port (numbered in order of appearance).
    fn renumber(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        let mut others: Vec<String> = Vec::new();
        while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
            let (before, from) = rest.split_at(at);
            let digits = from
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(from.len());
            let (number, after) = from.split_at(digits);
            out.push_str(before);
            let is_port = out
                .strip_suffix(':')
                .is_some_and(|ip| ip.ends_with(|c: char| c.is_ascii_digit()));
            if is_port && number.len() >= 4 {
                match self.0.iter().find(|(real, _)| real == number) {
                    Some((_, shown)) => out.push_str(shown),
                    None => {
                        let index = others.iter().position(|o| o == number).unwrap_or_else(|| {
                            others.push(number.to_owned());
                            others.len() - 1
                        });
                        out.push_str(&(50_000 + index + 1).to_string());
                    }
                }
            } else {
                out.push_str(number);
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }
}

#[test]
fn the_readme_walkthrough_is_the_recorded_session() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let session = std::fs::read_to_string(format!("{root}/docs/terminal-session.txt")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let screens: Vec<&str> = session.split("── terminal ").skip(1).collect();
    assert_eq!(screens.len(), 3, "{session}");
    for screen in screens {
        // Past the title line; the server's `$ bridgechat server` is shown apart.
        let shown = screen.split_once('\n').map_or("", |(_, s)| s).trim_end();
        let shown = shown.strip_prefix("$ bridgechat server\n").unwrap_or(shown);
        assert!(
            readme.contains(&format!("{shown}\n```")),
            "README.md does not show this screen of docs/terminal-session.txt:\n{shown}"
        );
    }
}

/// What a person is told when the server cannot be found.
#[test]
fn server_errors_are_said_in_peoples_words() {
    let mut alice = Proc::spawn(
        "alice",
        &[
            "client",
            "--name",
            "alice",
            "--server",
            "nosuchhost.invalid:7070",
        ],
    );
    assert!(!alice.exit_within(WAIT).success());
    alice.expect_err("error: cannot resolve host nosuchhost.invalid");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("localhost:{port}");
    let mut alice = Proc::spawn("alice", &["client", "--name", "alice", "--server", &addr]);
    assert!(!alice.exit_within(WAIT).success());
    let line = alice.expect_err("error: cannot reach the server");
    assert!(line.contains(&format!(":{port}")), "{line}");
    assert!(
        line.contains("start one with `bridgechat server`"),
        "{line}"
    );
}

/// At a terminal too: every row of a peer's message is visibly the peer's,
/// and no escape sequence of theirs reaches the terminal.
#[test]
fn at_a_terminal_a_peer_cannot_forge_lines_or_drive_the_terminal() {
    let (_server, addr) = server();
    let alice = waiting_at_a_terminal("alice", &addr);
    let screen = alice.text();
    let port: u16 = screen
        .lines()
        .find_map(|l| l.strip_prefix("listening on 0.0.0.0:"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no chat port on the screen:\n{screen}"));
    let _introduced = introduced(&addr, "evil");
    let mut evil = TcpStream::connect(("127.0.0.1", port)).expect("connect to alice");
    let chat = format!("CHAT / HTTP/1.1\r\nName: evil\r\nIP: 127.0.0.1\r\nPort: {port}\r\n\r\n");
    evil.write_all(chat.as_bytes()).unwrap();
    assert!(read_message(&mut evil).starts_with(b"HTTP/1.1 200 OK\r\n"));
    alice.expect_prompt("[READ] alice←evil (not encrypted)>");
    let body = "see you\nerror: lost the chat with evil\nREGISTERED: type /bridge\n\
                \u{1b}]0;pwned\u{7}\u{1b}[2Jstill here";
    let message = format!(
        "MESSAGE / HTTP/1.1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    evil.write_all(message.as_bytes()).unwrap();
    alice.expect_prompt("[WRITE] alice→evil (not encrypted)>");
    let screen = alice.text();
    assert!(
        screen.contains(
            "\nevil: see you\n      error: lost the chat with evil\n      REGISTERED: type /bridge\n"
        ),
        "{screen}"
    );
    // The screen was not cleared: what came before is still there.
    assert!(screen.starts_with("listening on"), "{screen}");
    let raw = alice.screen.0.lock().unwrap().raw.clone();
    assert!(find(&raw, b"\x1b]0;pwned").is_none(), "the title was set");
    // (vt100 does not draw U+FFFD, so look for it in what was written.)
    let defanged = "      \u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2Jstill here";
    assert!(find(&raw, defanged.as_bytes()).is_some(), "{screen}");
}

#[test]
fn colour_marks_modes_and_names_unless_no_color_is_set() {
    let (_server, addr) = server();
    for (name, env, coloured) in [
        ("alice", &[][..], true),
        ("carol", &[("NO_COLOR", "1")][..], false),
    ] {
        let tty = Tty::spawn_with_env(name, &["client", "--name", name, "--server", &addr], env);
        tty.expect_prompt(&format!("[UNREGISTERED] {name}>"));
        tty.line("/register");
        tty.expect_prompt(&format!("[REGISTERED] {name}>"));
        let raw = tty.screen.0.lock().unwrap().raw.clone();
        // A foreground colour: ESC[3Xm, ESC[9Xm or ESC[38;...m.
        let colours = raw
            .windows(3)
            .any(|w| w[0] == 0x1b && w[1] == b'[' && matches!(w[2], b'3' | b'9'));
        let raw = String::from_utf8_lossy(&raw);
        assert_eq!(colours, coloured, "{env:?}: {raw:?}");
    }
}

#[test]
fn help_is_an_aligned_list_and_up_recalls_the_last_line() {
    let (_server, addr) = server();
    let alice = Tty::spawn("alice", &["client", "--name", "alice", "--server", &addr]);
    alice.expect_prompt("[UNREGISTERED] alice>");
    alice.line("/help");
    let screen = alice.expect("  text ");
    let rows: Vec<&str> = screen.lines().filter(|r| r.starts_with("  /")).collect();
    assert!(rows.len() >= 5, "{screen}");
    // Where the description starts: past the command (and its argument, as in
    // `/bridge NAME`) and the two or more spaces after it.
    let column = |row: &str| {
        let gap = row[2..].find("  ").map_or(0, |i| i + 2);
        gap + row[gap..].find(|c| c != ' ').unwrap_or(0)
    };
    assert!(
        rows.iter().all(|r| column(r) == column(rows[0])),
        "not aligned:\n{screen}"
    );
    alice.expect_prompt("[UNREGISTERED] alice>");
    alice.keys("\x1b[A"); // Up
    alice.expect_prompt("[UNREGISTERED] alice> /help");
}
