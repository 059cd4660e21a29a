//! What a line typed at the terminal means: a command, chat text, or a typo.
//!
//! The line editor checks every line here before the core sees it, so a
//! mistyped `/qiut` is refused instead of going to the peer as chat.

/// Every command a person can type, with what it does (for `/help` and for
/// refusing typos). Adding a command is one row here plus its handler.
pub const COMMANDS: &[(&str, &str)] = &[
    ("/register", "register with the server"),
    (
        "/bridge",
        "find a peer: WAIT MODE if nobody waits, else READY MODE",
    ),
    ("/chat", "(READY MODE) connect to the peer; you write first"),
    ("/quit", "leave the chat and exit (Ctrl+C and Ctrl+D too)"),
    ("/help", "this list"),
];

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// An empty (or blank) line: nothing to do.
    Nothing,
    /// `/help`: shown here, never sent.
    Help,
    /// A command or a message, for the core as it is.
    Send(String),
    /// A `/word` that is no command: say why, send nothing.
    Refused(String),
}

/// Classifies one submitted line (a paste may hold several line breaks).
pub fn classify(text: &str) -> Typed {
    // A paste ending in a line break would otherwise end in an empty line.
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Typed::Nothing;
    }
    if text.contains('\n') {
        // Several lines are always text: one message, line breaks kept.
        return Typed::Send(text.to_owned());
    }
    let word = text.trim();
    if let Some(literal) = word.strip_prefix("//") {
        return if is_command(&format!("/{literal}")) {
            // The core reads a line equal to a command name as that command.
            Typed::Refused(format!(
                "/{literal} cannot be sent as text: it would run the command"
            ))
        } else {
            Typed::Send(text.trim_start().replacen("//", "/", 1))
        };
    }
    if word == "/help" {
        return Typed::Help;
    }
    if is_command(word) {
        return Typed::Send(word.to_owned());
    }
    if let Some(rest) = word.strip_prefix('/') {
        let name = rest.split_whitespace().next().unwrap_or("");
        return Typed::Refused(format!(
            "unknown command /{name} (not sent); commands: {}; start a message with // to send a /",
            names().join(" ")
        ));
    }
    Typed::Send(text.to_owned())
}

fn is_command(word: &str) -> bool {
    COMMANDS.iter().any(|(name, _)| *name == word)
}

fn names() -> Vec<&'static str> {
    COMMANDS.iter().map(|(name, _)| *name).collect()
}

/// `/help`: one aligned row per command.
pub fn help() -> Vec<String> {
    let width = COMMANDS
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut rows: Vec<String> = COMMANDS
        .iter()
        .map(|(name, what)| format!("  {name:width$}  {what}"))
        .collect();
    rows.push(format!("  {:width$}  send /text as a message", "//text"));
    rows.push(format!(
        "  {:width$}  is a message; out of turn, it is held",
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
        assert_eq!(classify("hello"), Typed::Send("hello".into()));
        assert_eq!(classify("  spaced  "), Typed::Send("  spaced  ".into()));
        assert_eq!(classify("/help"), Typed::Help);
    }

    #[test]
    fn a_mistyped_command_is_refused_with_the_list() {
        let Typed::Refused(why) = classify("/qiut") else {
            panic!("/qiut was not refused")
        };
        assert!(why.starts_with("unknown command /qiut (not sent)"), "{why}");
        assert!(why.contains("/register /bridge /chat /quit /help"), "{why}");
        assert!(matches!(classify("/name bob"), Typed::Refused(_)));
    }

    #[test]
    fn a_double_slash_sends_one_slash() {
        assert_eq!(classify("//shrug"), Typed::Send("/shrug".into()));
        assert_eq!(classify("//usr/bin ok"), Typed::Send("/usr/bin ok".into()));
        assert!(matches!(classify("//quit"), Typed::Refused(_)));
    }

    #[test]
    fn blank_lines_are_ignored_and_pastes_are_one_message() {
        assert_eq!(classify(""), Typed::Nothing);
        assert_eq!(classify("   "), Typed::Nothing);
        assert_eq!(
            classify("one\ntwo\n/three\n"),
            Typed::Send("one\ntwo\n/three".into())
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
