//! The mode table: the one place that says which mode a trigger leads to,
//! whatever sub-machine the trigger came from, and the one function that
//! changes the mode.
//!
//! Rule: a sub-machine never sets the mode itself. It reports what happened
//! (a [`Trigger`]); `Client::enter` looks it up here. A refusal of a trigger
//! the person caused is shown to them; a refusal of one the peer caused is a
//! protocol error against the peer; a refusal of one the client's own logic
//! caused is a bug (`debug_assert!` and a [`ClientError::Bug`] event).

use std::fmt;

use super::{Client, ClientError, ClientEvent};

/// The client's modes, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Unregistered,
    Registered,
    Wait,
    Ready,
    Write,
    Read,
}

impl Mode {
    /// The name printed when the mode is entered (`WAIT MODE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unregistered => "UNREGISTERED",
            Mode::Registered => "REGISTERED",
            Mode::Wait => "WAIT MODE",
            Mode::Ready => "READY MODE",
            Mode::Write => "WRITE MODE",
            Mode::Read => "READ MODE",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may move the client between modes; `next_mode` says where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    // The person's commands: an allowed one keeps the mode (its answer moves it).
    RegisterCommand,
    BridgeCommand,
    ChatCommand,
    /// `/name NEWNAME`: register under another name.
    NameCommand,
    /// A message line: sent in WRITE MODE, held while it is not our turn.
    MessageLine,
    // Answers from the server.
    Registered,
    NoPeerWaiting,
    PeerWaiting,
    // The chat.
    /// The peer answered our CHAT with 200.
    ChatAccepted,
    /// A peer's CHAT arrived on an incoming connection.
    ChatRequested,
    MessageSent,
    MessageReceived,
    /// QUIT either way, the chat connection lost, or a failed `/chat`.
    ChatEnded,
    ServerLost,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::RegisterCommand => "/register",
            Trigger::BridgeCommand => "/bridge",
            Trigger::ChatCommand => "/chat",
            Trigger::NameCommand => "/name",
            Trigger::MessageLine => "a message line",
            Trigger::Registered => "the REGISTER answer",
            Trigger::NoPeerWaiting | Trigger::PeerWaiting => "the BRIDGE answer",
            Trigger::ChatAccepted => "the CHAT answer",
            Trigger::ChatRequested => "a peer's CHAT",
            Trigger::MessageSent => "sending a MESSAGE",
            Trigger::MessageReceived => "the peer's MESSAGE",
            Trigger::ChatEnded => "the end of the chat",
            Trigger::ServerLost => "losing the server",
        }
    }
}

/// Why the table refuses a trigger; shown as one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AlreadyRegistered,
    AlreadyInChat,
    RegisterFirst,
    PeerIsReady,
    AlreadyStartingChat,
    NoPeerYet,
    PeerStartsChat,
    NoChatRegisterFirst,
    NoChatBridgeFirst,
    NotWaiting,
    OutOfTurn,
    NotExpected,
    NameInUse,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::AlreadyRegistered => "already registered",
            Refusal::AlreadyInChat => "already in a chat",
            Refusal::RegisterFirst => "register first: type /register",
            Refusal::PeerIsReady => "a peer is ready: type /chat to start the chat",
            Refusal::AlreadyStartingChat => "already starting the chat",
            Refusal::NoPeerYet => "no peer yet: type /bridge first",
            Refusal::PeerStartsChat => {
                "in WAIT MODE the peer starts the chat: /chat is for the READY side"
            }
            Refusal::NoChatRegisterFirst => {
                "not in a chat: type /register, then /bridge to find a peer"
            }
            Refusal::NoChatBridgeFirst => "not in a chat: type /bridge to find a peer",
            Refusal::NotWaiting => "not waiting for a peer",
            Refusal::OutOfTurn => "a message arrived out of turn",
            Refusal::NotExpected => "not expected in this mode",
            Refusal::NameInUse => {
                "your name cannot change in WAIT MODE, READY MODE or a chat: a peer may know you by it"
            }
        })
    }
}

/// Facts besides the mode that the table needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Context {
    pub(super) server_up: bool,
    /// A chat connection exists (being set up or open).
    pub(super) chat_link: bool,
}

/// The transition table: where `trigger` takes `mode`, or why it may not happen.
pub(super) fn next_mode(mode: Mode, trigger: Trigger, ctx: Context) -> Result<Mode, Refusal> {
    use Mode::*;
    use Refusal as R;
    use Trigger as T;
    let after_chat = if ctx.server_up {
        Registered
    } else {
        Unregistered
    };
    match (mode, trigger) {
        (Unregistered, T::RegisterCommand) => Ok(mode),
        (Registered | Wait | Ready, T::RegisterCommand) => Err(R::AlreadyRegistered),
        (Write | Read, T::RegisterCommand) => Err(R::AlreadyInChat),

        // Again from WAIT MODE: if the server handed us to a peer who never came,
        // this puts us back in its waiting slot (or pairs us with a newer waiter).
        (Registered | Wait, T::BridgeCommand) => Ok(mode),
        (Unregistered, T::BridgeCommand) => Err(R::RegisterFirst),
        (Ready, T::BridgeCommand) => Err(R::PeerIsReady),
        (Write | Read, T::BridgeCommand) => Err(R::AlreadyInChat),

        (Ready, T::ChatCommand) if !ctx.chat_link => Ok(mode),
        (Ready, T::ChatCommand) => Err(R::AlreadyStartingChat),
        (Unregistered, T::ChatCommand) => Err(R::RegisterFirst),
        (Registered, T::ChatCommand) => Err(R::NoPeerYet),
        (Wait, T::ChatCommand) => Err(R::PeerStartsChat),
        (Write | Read, T::ChatCommand) => Err(R::AlreadyInChat),

        // REGISTER again on the same connection replaces the registration.
        (Unregistered | Registered, T::NameCommand) => Ok(mode),
        (Wait | Ready | Write | Read, T::NameCommand) => Err(R::NameInUse),

        (Wait | Ready | Write | Read, T::MessageLine) => Ok(mode),
        (Unregistered, T::MessageLine) => Err(R::NoChatRegisterFirst),
        (Registered, T::MessageLine) => Err(R::NoChatBridgeFirst),

        (Unregistered, T::Registered) => Ok(Registered),
        // `/name` while registered: the same mode under the new name.
        (Registered, T::Registered) => Ok(Registered),
        (Registered | Wait, T::NoPeerWaiting) => Ok(Wait),
        (Registered | Wait, T::PeerWaiting) => Ok(Ready),
        // `/bridge` again from WAIT MODE, and a peer's CHAT came before the answer:
        // the chat goes on, the late answer changes nothing.
        (Write | Read, T::NoPeerWaiting | T::PeerWaiting) => Ok(mode),

        (Ready, T::ChatAccepted) => Ok(Write),
        (Wait, T::ChatRequested) => Ok(Read),
        (Write | Read, T::ChatRequested) => Err(R::AlreadyInChat),
        (Unregistered | Registered | Ready, T::ChatRequested) => Err(R::NotWaiting),
        (Write, T::MessageSent) => Ok(Read),
        (Read, T::MessageReceived) => Ok(Write),
        (Write, T::MessageReceived) => Err(R::OutOfTurn),
        (Ready | Write | Read, T::ChatEnded) => Ok(after_chat),

        // A chat outlives the server connection: the server never carries chat text.
        (Ready | Write | Read, T::ServerLost) if ctx.chat_link => Ok(mode),
        (_, T::ServerLost) => Ok(Unregistered),

        (
            _,
            T::Registered
            | T::NoPeerWaiting
            | T::PeerWaiting
            | T::ChatAccepted
            | T::MessageSent
            | T::MessageReceived
            | T::ChatEnded,
        ) => Err(R::NotExpected),
    }
}

impl Client {
    fn context(&self) -> Context {
        Context {
            server_up: self.server.is_up(),
            chat_link: self.chat.has_link() || self.reach.chat_wanted(),
        }
    }

    /// Looks `trigger` up in the table without changing anything.
    pub(super) fn check(&self, trigger: Trigger) -> Result<Mode, Refusal> {
        next_mode(self.mode, trigger, self.context())
    }

    /// Looks up a trigger the person caused: refused with the reason shown to them.
    pub(super) fn allowed(&mut self, trigger: Trigger) -> bool {
        match self.check(trigger) {
            Ok(_) => true,
            Err(refusal) => {
                self.ctx.error(ClientError::Refused(refusal));
                false
            }
        }
    }

    /// Enters the mode a trigger the client's own logic caused leads to. The
    /// sub-machines only report triggers the table allows, so a refusal is a bug.
    pub(super) fn enter(&mut self, trigger: Trigger) {
        match self.check(trigger) {
            Ok(next) => self.set_mode(next),
            Err(refusal) => {
                let mode = self.mode;
                debug_assert!(false, "{trigger:?} refused in {mode}: {refusal}");
                self.ctx.error(ClientError::Bug {
                    trigger: trigger.name(),
                    mode,
                    refusal,
                });
            }
        }
    }

    /// The one place the mode changes.
    pub(super) fn set_mode(&mut self, next: Mode) {
        // WAIT MODE is announced again when whom we wait for changed (`/bridge NAME`).
        let peer_changed = next == Mode::Wait && self.matching.waiting_for() != self.announced_peer;
        if next == self.mode && !peer_changed {
            return;
        }
        if matches!(next, Mode::Unregistered | Mode::Registered) {
            self.chat.forget_ready_peer();
            self.chat.drop_held(&mut self.ctx);
        }
        if next != Mode::Wait {
            self.matching.leave();
        }
        self.reach_mode(next);
        self.mode = next;
        let peer = self.peer();
        self.announced_peer = peer;
        self.ctx
            .outputs
            .event(ClientEvent::ModeChanged { mode: next, peer });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Context = Context {
        server_up: true,
        chat_link: false,
    };

    #[test]
    fn the_table_follows_the_contracts_mode_order() {
        let path = [
            (Mode::Unregistered, Trigger::Registered, Mode::Registered),
            (Mode::Registered, Trigger::NoPeerWaiting, Mode::Wait),
            (Mode::Wait, Trigger::ChatRequested, Mode::Read),
            (Mode::Read, Trigger::MessageReceived, Mode::Write),
            (Mode::Write, Trigger::MessageSent, Mode::Read),
            (Mode::Read, Trigger::ChatEnded, Mode::Registered),
            (Mode::Registered, Trigger::PeerWaiting, Mode::Ready),
            (Mode::Ready, Trigger::ChatAccepted, Mode::Write),
        ];
        for (from, trigger, to) in path {
            assert_eq!(next_mode(from, trigger, UP), Ok(to), "{from} + {trigger:?}");
        }
    }

    #[test]
    fn commands_keep_the_mode_or_are_refused() {
        let modes = [
            Mode::Unregistered,
            Mode::Registered,
            Mode::Wait,
            Mode::Ready,
            Mode::Write,
            Mode::Read,
        ];
        let commands = [
            Trigger::RegisterCommand,
            Trigger::BridgeCommand,
            Trigger::ChatCommand,
            Trigger::NameCommand,
            Trigger::MessageLine,
        ];
        for mode in modes {
            for command in commands {
                if let Ok(next) = next_mode(mode, command, UP) {
                    assert_eq!(next, mode, "{command:?} must not move {mode}");
                }
            }
        }
        assert!(next_mode(Mode::Wait, Trigger::ChatCommand, UP).is_err());
        assert!(next_mode(Mode::Write, Trigger::MessageReceived, UP).is_err());
    }

    #[test]
    fn a_chat_ending_without_the_server_leaves_the_client_unregistered() {
        let down = Context {
            server_up: false,
            chat_link: true,
        };
        assert_eq!(
            next_mode(Mode::Read, Trigger::ServerLost, down),
            Ok(Mode::Read)
        );
        assert_eq!(
            next_mode(Mode::Read, Trigger::ChatEnded, down),
            Ok(Mode::Unregistered)
        );
        assert_eq!(
            next_mode(Mode::Wait, Trigger::ServerLost, UP),
            Ok(Mode::Unregistered)
        );
    }
}
