//! The client at a terminal: a line editor (reedline) with a prompt that
//! always shows the mode, the peer and whose turn it is; everything the chat
//! prints goes above the line being typed, so typing is never broken into.
//!
//! Two threads share a [`Console`]: the editor thread reads lines and hands
//! them to the event loop; the loop thread prints what happens. While the
//! editor is reading, lines go through its external printer (it redraws the
//! prompt and the half-typed line below them); otherwise straight to stdout.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use bridgechat_core::client::{ClientInput, Mode};
use bridgechat_core::Name;
use crossterm::style::Stylize;
use reedline::{
    Color, ExternalPrinter, FileBackedHistory, Prompt, PromptEditMode, PromptHistorySearch,
    Reedline, Signal,
};

use crate::client::read_lines;
use crate::commands::{self, Typed};
use crate::out::{Line, Tone};
use crate::transport::Inputs;

/// Whether to run the line editor: both ends are a person at a terminal
/// that understands cursor movement.
pub fn is_interactive() -> bool {
    io::stdin().is_terminal()
        && io::stdout().is_terminal()
        && std::env::var_os("TERM").map_or(true, |term| term != "dumb")
}

/// Colour unless `NO_COLOR` is set (https://no-color.org) or stdout is not a terminal.
pub fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()) && io::stdout().is_terminal()
}

/// Lines waiting for the editor to print them. A chat prints a few lines a
/// turn; the editor drains them ten times a second.
const PRINT_QUEUE: usize = 1024;

/// What the prompt shows; kept up to date by the loop thread.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: Name,
    pub mode: Mode,
    pub peer: Option<Name>,
    /// Messages typed out of turn, not yet sent.
    pub held: usize,
    /// In a chat: whether it is end-to-end encrypted.
    pub encrypted: Option<bool>,
}

impl Status {
    /// `[WRITE] alice→bob` (our turn), `[READ] alice←bob` (theirs), `[WAIT] alice`.
    pub fn prompt(&self) -> String {
        let tag = match self.mode {
            Mode::Unregistered => "UNREGISTERED",
            Mode::Registered => "REGISTERED",
            Mode::Wait => "WAIT",
            Mode::Ready => "READY",
            Mode::Write => "WRITE",
            Mode::Read => "READ",
        };
        let who = match (self.mode, self.peer) {
            (Mode::Read, Some(peer)) => format!("{}←{peer}", self.name),
            (Mode::Ready | Mode::Write, Some(peer)) => format!("{}→{peer}", self.name),
            _ => self.name.to_string(),
        };
        let lock = match self.encrypted {
            Some(true) => " (encrypted)",
            Some(false) => " (not encrypted)",
            None => "",
        };
        match self.held {
            0 => format!("[{tag}] {who}{lock}"),
            n => format!("[{tag}] {who}{lock} ({n} held)"),
        }
    }
}

/// The colour of each mode, in the prompt and in its mode line.
fn mode_colour(mode: Mode) -> Color {
    match mode {
        Mode::Unregistered => Color::Grey,
        Mode::Registered => Color::Blue,
        Mode::Wait | Mode::Ready => Color::Magenta,
        Mode::Write => Color::Green,
        Mode::Read => Color::Yellow,
    }
}

#[derive(Debug)]
struct Shared {
    status: Status,
    /// The editor is between `read_line` calls or inside one: print through it.
    editing: bool,
}

/// The terminal, shared by the editor thread and the loop thread.
#[derive(Debug, Clone)]
pub struct Console {
    shared: Arc<Mutex<Shared>>,
    printer: ExternalPrinter<String>,
    colour: bool,
}

impl Console {
    pub fn new(status: Status) -> Console {
        Console {
            shared: Arc::new(Mutex::new(Shared {
                status,
                editing: false,
            })),
            printer: ExternalPrinter::new(PRINT_QUEUE),
            colour: colour_wanted(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what the prompt shows; it is redrawn with the next printed line.
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.lock().status);
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Prints `line` above the prompt: one screen row per row of text.
    pub fn show(&self, tone: Tone, line: &Line) {
        let (text, error) = match line {
            Line::Out(text) => (text.as_str(), false),
            Line::Error(text) => (text.as_str(), true),
            Line::Trace(text) => (text.trim_end_matches('\n'), false),
        };
        let width = crossterm::terminal::size().map_or(80, |(columns, _)| columns.max(20));
        let rows = paint(tone, text, error, self.colour, usize::from(width));
        let shared = self.lock();
        for row in rows {
            if shared.editing {
                if let Err(e) = self.printer.sender().try_send(row) {
                    // The editor has fallen far behind: print anyway rather than lose it.
                    print_row(&e.into_inner());
                }
            } else {
                print_row(&row);
            }
        }
    }

    /// Starts the editor thread: each line typed goes to `inputs` after
    /// [`commands::classify`]; Ctrl+C, Ctrl+D and `/quit` end it. If the
    /// terminal fails the editor, plain lines are read instead.
    pub fn start_editor(&self, inputs: Inputs<ClientInput>) -> Result<(), String> {
        let console = self.clone();
        self.lock().editing = true;
        thread::Builder::new()
            .name("editor".into())
            .spawn(move || {
                let failed = console.edit(&inputs);
                console.stop_editing();
                if failed {
                    read_lines(&inputs);
                }
            })
            .map(drop)
            .map_err(|e| format!("cannot start the input thread: {e}"))
    }

    /// Reads lines until the last one; true if the terminal failed the editor.
    fn edit(&self, inputs: &Inputs<ClientInput>) -> bool {
        let history = match FileBackedHistory::new(500) {
            Ok(history) => history,
            Err(e) => {
                self.show(Tone::Plain, &Line::Error(format!("no history: {e}")));
                FileBackedHistory::default()
            }
        };
        let mut editor = Reedline::create()
            .with_history(Box::new(history))
            .with_external_printer(self.printer.clone())
            .with_ansi_colors(self.colour)
            .use_bracketed_paste(true);
        let prompt = ChatPrompt {
            console: self.clone(),
        };
        // The line being typed lives on the bottom row, as in most chat
        // programs, with the chat scrolling up above it. reedline checks where
        // its prompt is by asking the terminal before the lines it printed
        // above the prompt are flushed, and redraws from the top of the screen
        // when the answer disagrees; on the bottom row the two always agree.
        if let Ok((_, rows @ 1..)) = crossterm::terminal::size() {
            let mut out = io::stdout().lock();
            let _ = crossterm::execute!(out, crossterm::cursor::MoveTo(0, rows - 1));
        }
        loop {
            let input = match editor.read_line(&prompt) {
                Ok(Signal::Success(text)) => match commands::classify(&text) {
                    Typed::Nothing => continue,
                    Typed::Help => {
                        for row in commands::help() {
                            self.show(Tone::Plain, &Line::Out(row));
                        }
                        continue;
                    }
                    Typed::Refused(why) => {
                        self.show(Tone::Plain, &Line::Error(why));
                        continue;
                    }
                    Typed::Send(line) => ClientInput::Line(line),
                    Typed::Text(text) => ClientInput::Message(text),
                },
                Ok(Signal::CtrlC) => ClientInput::Interrupt,
                Ok(Signal::CtrlD) => ClientInput::EndOfInput,
                Ok(_) => continue,
                Err(e) => {
                    let why = format!("the line editor failed ({e}): reading plain lines now");
                    self.show(Tone::Plain, &Line::Error(why));
                    return true;
                }
            };
            // After the last input the loop exits: reading on would leave the
            // terminal in raw mode under the shell.
            let last = match &input {
                ClientInput::Line(line) => line == "/quit",
                ClientInput::Message(_) => false,
                ClientInput::Interrupt | ClientInput::EndOfInput => true,
            };
            if !inputs.send(input) || last {
                return false;
            }
        }
    }

    /// From now on lines go straight to stdout; the editor's unprinted lines first.
    fn stop_editing(&self) {
        let mut shared = self.lock();
        shared.editing = false;
        for row in self.printer.receiver().try_iter() {
            print_row(&row);
        }
    }

    /// The loop has ended: if the editor is still reading (the program ends by
    /// itself, say the server is gone), give the terminal back as it was and
    /// leave the prompt line behind.
    pub fn finish(&self) {
        let mut shared = self.lock();
        if !shared.editing {
            return;
        }
        shared.editing = false;
        let _ = crossterm::terminal::disable_raw_mode();
        let mut out = io::stdout().lock();
        let _ = crossterm::execute!(out, crossterm::event::DisableBracketedPaste);
        let _ = out.write_all(b"\r\n");
        let _ = out.flush();
        drop(out);
        for row in self.printer.receiver().try_iter() {
            print_row(&row);
        }
    }
}

fn print_row(row: &str) {
    // CR LF: correct in raw mode too.
    let mut out = io::stdout().lock();
    let _ = write!(out, "{row}\r\n");
    let _ = out.flush();
}

/// The screen rows for `text`. A peer's message is wrapped to the screen
/// with every row after the first indented, so nothing the peer sends can
/// start a row at the left edge, where the client's own lines start.
fn paint(tone: Tone, text: &str, error: bool, colour: bool, width: usize) -> Vec<String> {
    let text = if error {
        Cow::Owned(format!("error: {text}"))
    } else {
        Cow::Borrowed(text)
    };
    let Tone::Message { name_width } = tone else {
        let style = |row: &str| match tone {
            _ if !colour => row.to_owned(),
            _ if error => row.red().to_string(),
            Tone::Mode(mode) => row.with(mode_colour(mode)).bold().to_string(),
            Tone::Hint => row.dark_grey().to_string(),
            Tone::Plain | Tone::Message { .. } => row.to_owned(),
        };
        return text.lines().map(style).collect();
    };
    let indent = name_width + 2;
    let rows = wrap(&text, indent, width);
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| match (i, colour) {
            (0, true) => {
                let (name, rest) = row.split_at(name_width + 1);
                format!("{}{rest}", name.cyan().bold())
            }
            _ => row,
        })
        .collect()
}

/// Cuts `text` (already `name: ` + lines indented by `indent`) into rows of at
/// most `width` columns; a row that goes on past the edge continues indented.
fn wrap(text: &str, indent: usize, width: usize) -> Vec<String> {
    let room = width.saturating_sub(indent).max(10);
    let mut rows = Vec::new();
    for line in text.lines() {
        let (lead, body) = line.split_at(line.len().min(indent));
        let mut row = lead.to_owned();
        let mut used = 0;
        for c in body.chars() {
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if used + w > room {
                rows.push(std::mem::replace(&mut row, " ".repeat(indent)));
                used = 0;
            }
            row.push(c);
            used += w;
        }
        rows.push(row);
    }
    rows
}

/// The prompt, read afresh at every redraw.
struct ChatPrompt {
    console: Console,
}

impl Prompt for ChatPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        self.console.status().prompt().into()
    }
    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("> ")
    }
    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("… ")
    }
    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        format!("(history: {}) ", search.term).into()
    }
    fn get_prompt_color(&self) -> Color {
        mode_colour(self.console.status().mode)
    }
    fn get_indicator_color(&self) -> Color {
        mode_colour(self.console.status().mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        n.parse().unwrap()
    }

    #[test]
    fn the_prompt_shows_mode_peer_and_turn() {
        let mut status = Status {
            name: name("alice"),
            mode: Mode::Write,
            peer: Some(name("bob")),
            held: 0,
            encrypted: None,
        };
        assert_eq!(status.prompt(), "[WRITE] alice→bob");
        status.mode = Mode::Read;
        status.held = 2;
        assert_eq!(status.prompt(), "[READ] alice←bob (2 held)");
        status.encrypted = Some(true);
        assert_eq!(status.prompt(), "[READ] alice←bob (encrypted) (2 held)");
        status.encrypted = Some(false);
        status.held = 0;
        assert_eq!(status.prompt(), "[READ] alice←bob (not encrypted)");
        status.encrypted = None;
        status.mode = Mode::Wait;
        status.held = 0;
        assert_eq!(status.prompt(), "[WAIT] alice");
    }

    #[test]
    fn a_long_message_wraps_indented_so_no_row_starts_at_the_edge() {
        let text = format!("bob: {}REGISTERED: forged", " ".repeat(40));
        let rows = paint(Tone::Message { name_width: 3 }, &text, false, false, 30);
        assert!(rows[0].starts_with("bob: "), "{rows:?}");
        assert!(rows[1..].iter().all(|r| r.starts_with("     ")), "{rows:?}");
        assert!(rows.iter().all(|r| r.chars().count() <= 30), "{rows:?}");
    }

    #[test]
    fn colour_marks_the_name_and_is_absent_when_off() {
        let rows = paint(Tone::Message { name_width: 3 }, "bob: hi", false, true, 80);
        assert!(
            rows[0].contains('\u{1b}') && rows[0].ends_with(" hi"),
            "{rows:?}"
        );
        let rows = paint(Tone::Mode(Mode::Write), "WRITE MODE", false, false, 80);
        assert_eq!(rows, ["WRITE MODE"]);
    }
}
