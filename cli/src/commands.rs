//! What a line typed at the terminal means: a command, chat text, or a typo.
//!
//! The line editor checks every line here before the core sees it, so a
//! mistyped `/qiut` is refused instead of going to the peer as chat.

/// A command a person can type.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    /// The word that must follow it, for a command that takes one.
    pub argument: Option<&'static str>,
    pub what: &'static str,
}

const fn command(name: &'static str, what: &'static str) -> Command {
    Command {
        name,
        argument: None,
        what,
    }
}

/// Every command, with what it does (for `/help` and for refusing typos).
/// Adding one is a row here; the core does the rest.
pub const COMMANDS: &[Command] = &[
    command("/register", "register with the server"),
    Command {
        name: "/name",
        argument: Some("NEWNAME"),
        what: "register under a new name (UNREGISTERED or REGISTERED)",
    },
    command(
        "/bridge",
        "find a peer: WAIT MODE if nobody waits, else READY MODE",
    ),
    command("/chat", "(READY MODE) connect to the peer; you write first"),
    command("/quit", "leave the chat and exit (Ctrl+C and Ctrl+D too)"),
    command("/help", "this list"),
];

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// An empty (or blank) line: nothing to do.
    Nothing,
    /// `/help`: shown here, never sent.
    Help,
    /// A command, for the core as it is.
    Send(String),
    /// A message, whatever it looks like (`//quit` sends `/quit`).
    Text(String),
    /// A `/word` that is no command: say why, send nothing.
    Refused(String),
}

/// Classifies one submitted line (a paste may hold several line breaks).
pub fn classify(text: &str) -> Typed {
    classify_among(COMMANDS, text)
}

fn classify_among(commands: &'static [Command], text: &str) -> Typed {
    let find = |name: &str| commands.iter().find(|c| c.name == name);
    // Blank lines around a paste are not part of the message.
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return Typed::Nothing;
    };
    if first != last {
        // Several lines are always text: one message, line breaks kept.
        return Typed::Text(lines[first..=last].join("\n"));
    }
    let text = lines[first];
    let word = text.trim();
    if word.starts_with("//") {
        return Typed::Text(text.replacen("//", "/", 1));
    }
    let Some(rest) = word.strip_prefix('/') else {
        return Typed::Text(text.to_owned());
    };
    let name = rest.split_whitespace().next().unwrap_or("");
    let argument = rest[name.len()..].trim();
    match find(&format!("/{name}")) {
        Some(command) if command.name == "/help" && argument.is_empty() => Typed::Help,
        Some(command) => match (command.argument, argument.is_empty()) {
            (None, true) => Typed::Send(command.name.to_owned()),
            (Some(_), false) => Typed::Send(format!("{} {argument}", command.name)),
            (None, false) => Typed::Refused(format!("{} takes nothing after it", command.name)),
            (Some(needed), true) => Typed::Refused(format!("usage: {} {needed}", command.name)),
        },
        None => {
            Typed::Refused(format!(
            "unknown command /{name} (not sent); commands: {}; start a message with // to send a /",
            COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>().join(" ")
        ))
        }
    }
}

/// `/help`: one aligned row per command.
pub fn help() -> Vec<String> {
    let usage = |c: &Command| match c.argument {
        Some(argument) => format!("{} {argument}", c.name),
        None => c.name.to_owned(),
    };
    let width = COMMANDS.iter().map(|c| usage(c).len()).max().unwrap_or(0);
    let mut rows: Vec<String> = COMMANDS
        .iter()
        .map(|c| format!("  {:width$}  {}", usage(c), c.what))
        .collect();
    rows.push(format!("  {:width$}  send /text as a message", "//text"));
    rows.push(format!(
        "  {:width$}  a message; typed out of turn, it is held",
        "text"
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_go_to_the_core_and_text_is_text() {
        assert_eq!(classify("/quit"), Typed::Send("/quit".into()));
        assert_eq!(classify("  /bridge "), Typed::Send("/bridge".into()));
        assert_eq!(classify("hello"), Typed::Text("hello".into()));
        assert_eq!(classify("  spaced  "), Typed::Text("  spaced  ".into()));
        assert_eq!(classify("/name bob"), Typed::Send("/name bob".into()));
        assert_eq!(classify("/help"), Typed::Help);
    }

    #[test]
    fn a_mistyped_command_is_refused_with_the_list() {
        let Typed::Refused(why) = classify("/qiut") else {
            panic!("/qiut was not refused")
        };
        assert!(why.starts_with("unknown command /qiut (not sent)"), "{why}");
        assert!(
            why.contains("/register /name /bridge /chat /quit /help"),
            "{why}"
        );
        assert_eq!(
            classify("/chat now"),
            Typed::Refused("/chat takes nothing after it".into())
        );
    }

    #[test]
    fn a_command_with_an_argument_needs_it() {
        const WITH_NAME: &[Command] = &[Command {
            name: "/name",
            argument: Some("NEWNAME"),
            what: "register under a new name",
        }];
        assert_eq!(
            classify_among(WITH_NAME, " /name  carol "),
            Typed::Send("/name carol".into())
        );
        assert_eq!(
            classify_among(WITH_NAME, "/name"),
            Typed::Refused("usage: /name NEWNAME".into())
        );
    }

    #[test]
    fn a_double_slash_sends_one_slash() {
        assert_eq!(classify("//shrug"), Typed::Text("/shrug".into()));
        assert_eq!(classify("//usr/bin ok"), Typed::Text("/usr/bin ok".into()));
        assert_eq!(classify("//quit"), Typed::Text("/quit".into()));
    }

    #[test]
    fn blank_lines_are_ignored_and_pastes_are_one_message() {
        assert_eq!(classify(""), Typed::Nothing);
        assert_eq!(classify("   "), Typed::Nothing);
        assert_eq!(
            classify("one\ntwo\n/three\n"),
            Typed::Text("one\ntwo\n/three".into())
        );
    }

    #[test]
    fn help_is_aligned() {
        let rows = help();
        let column = rows[0].find("register with").unwrap();
        assert!(rows
            .iter()
            .all(|r| r.len() > column && &r[column - 2..column] == "  "));
    }
}
