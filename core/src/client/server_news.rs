//! What the rest of the client does when the server link moves: the commands
//! that start a request (`/register`, `/name`, `/bridge`) and the news the link
//! reports, turned into mode-table triggers.

use super::server_link::{Bridged, ServerNews};
use super::*;

impl Client {
    pub(super) fn command_register(&mut self) {
        if self.allowed(Trigger::RegisterCommand) {
            let name = self.server.name();
            self.server.register(&mut self.ctx, self.listening, name);
        }
    }

    /// `/name NEWNAME`: REGISTER as `NEWNAME`, which replaces a registration
    /// on the same connection (and keeps it if the new name is taken).
    pub(super) fn command_name(&mut self, raw: &str) {
        if !self.allowed(Trigger::NameCommand) {
            return;
        }
        if raw.is_empty() {
            return self.ctx.error(ClientError::NameMissing);
        }
        match raw.parse::<Name>() {
            Ok(name) => self.server.register(&mut self.ctx, self.listening, name),
            Err(why) => self.ctx.error(ClientError::InvalidName {
                raw: super::one_line(raw),
                why,
            }),
        }
    }

    pub(super) fn command_bridge(&mut self, peer: Option<Name>) {
        if self.allowed(Trigger::BridgeCommand) {
            self.server.bridge(&mut self.ctx, peer);
        }
    }

    pub(super) fn server_data(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        while !self.exited {
            match self.server.receive(&mut self.ctx, &mut input) {
                Some(news) => self.on_server_news(news),
                None => return,
            }
        }
    }

    pub(super) fn server_timeout(&mut self) {
        self.server.retry_due(&mut self.ctx);
        if let Some(news) = self.server.connect_expired(&mut self.ctx) {
            self.on_server_news(news);
        }
        if self.exited {
            return;
        }
        if let Some(news) = self.server.request_expired(&mut self.ctx) {
            self.on_server_news(news);
        }
    }

    /// Moves the rest of the client after the server link moved.
    pub(super) fn on_server_news(&mut self, news: ServerNews) {
        match news {
            ServerNews::Quiet => return,
            ServerNews::Fatal(error) => return self.finish(Err(error.into())),
            ServerNews::RequestOver => {}
            ServerNews::Registered { renamed } => {
                if renamed {
                    let name = self.server.name();
                    self.ctx.outputs.event(ClientEvent::NameChanged(name));
                }
                self.enter(Trigger::Registered);
            }
            ServerNews::Bridged(Bridged::Paired {
                contact,
                course,
                ticket,
                observed,
                unprotected,
            }) => {
                self.chat
                    .set_ready_peer(contact, ticket, unprotected, course);
                if let (Some(ticket), Some(observed)) = (ticket, observed) {
                    self.reach_asker(ticket, contact.socket_addr(), observed);
                }
                self.enter(Trigger::PeerWaiting);
            }
            ServerNews::Bridged(Bridged::Waiting { peer }) => {
                if self.mode != Mode::Write && self.mode != Mode::Read {
                    self.matching.wait(peer);
                    self.reach.stop_waiter(&mut self.ctx);
                }
                self.enter(Trigger::NoPeerWaiting);
            }
            ServerNews::Matched(intro) => return self.matched(intro),
            ServerNews::Unmatched(unmatched) => return self.unmatched(unmatched),
            ServerNews::Relay(ticket) => return self.relay_notified(ticket),
            ServerNews::Lost { malformed } => {
                let chat_goes_on = self.chat.has_link();
                self.ctx.error(match malformed {
                    None => ClientError::ServerLost { chat_goes_on },
                    Some(error) => ClientError::ServerMalformed {
                        error,
                        chat_goes_on,
                    },
                });
                self.enter(Trigger::ServerLost);
            }
        }
        // CHATs parked while BRIDGE was in flight are decided now that it is over.
        self.decide_parked();
        self.finish_startup();
        self.pump();
    }
}
