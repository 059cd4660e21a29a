//! The rendezvous registry as the protocol describes it, written apart from
//! the server: which contact each connection registered, and who waits to be
//! bridged. The server's fuzz target and the model-based property test both
//! check the server against this one model.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::codec::Ticket;
use crate::contact::{Contact, Name};

/// What REGISTER should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// 200 echoing the contact, now held by this connection.
    Stored,
    /// 409: another live connection holds the name.
    NameTaken,
}

/// What BRIDGE should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridged {
    /// 403: this connection has not registered.
    NotRegistered,
    /// 403: the `Name` header names someone else.
    NameMismatch,
    /// 400 (version 2): a malformed `Peer`.
    BadPeer,
    /// 400 (version 2): `Peer` names the asker itself.
    WithYourself,
    /// 200 without a contact: this connection waits (or already waited).
    Waits,
    /// 200 with the contact of the client that was waiting, which waits no more.
    Paired(Contact),
}

/// A notification the server owes a v2 waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// Handed to `peer`; with a ticket when both speak version 2.
    Matched { peer: Name, ticket: bool },
    /// The match with `peer` fell through; waiting again.
    Unmatched { peer: Name },
}

/// A v2 waiter's match until its STARTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingMatch<K> {
    pub asker: K,
    asker_name: Name,
    /// Where it goes back to: `None` for anyone, else the name it waits for.
    place: Option<Name>,
    /// The match's ticket once the asker's answer showed it (`Some(None)`: none).
    pub ticket: Option<Option<Ticket>>,
}

/// The registry, keyed by whatever the caller names its connections with.
///
/// Version 2 (`register_as(.., true)`): named waits, MATCHED/UNMATCHED, STARTED and
/// fall-through by the asker's requests or leaving (time is not modelled: callers run
/// the server with `match_timeout` zero and no fall-through limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryModel<K> {
    registered: BTreeMap<K, Contact>,
    v2: BTreeSet<K>,
    /// Waiting for anyone, next handed out first.
    anyone: VecDeque<K>,
    /// Waiting for a name, in the order they are handed out.
    named: VecDeque<(K, Name)>,
    pending: BTreeMap<K, PendingMatch<K>>,
    notes: BTreeMap<K, Vec<Note>>,
}

impl<K> Default for RegistryModel<K> {
    fn default() -> Self {
        RegistryModel {
            registered: BTreeMap::new(),
            v2: BTreeSet::new(),
            anyone: VecDeque::new(),
            named: VecDeque::new(),
            pending: BTreeMap::new(),
            notes: BTreeMap::new(),
        }
    }
}

fn same(a: &Name, b: &Name) -> bool {
    a.as_str().eq_ignore_ascii_case(b.as_str())
}

impl<K: Ord + Copy> RegistryModel<K> {
    /// The connection holding `name`, if any (names ignore ASCII case).
    pub fn holder(&self, name: Name) -> Option<K> {
        self.registered
            .iter()
            .find(|(_, c)| same(&c.name, &name))
            .map(|(k, _)| *k)
    }

    /// REGISTER (version 1) on `who`.
    pub fn register(&mut self, who: K, contact: Contact) -> Registered {
        self.register_as(who, contact, false)
    }

    /// REGISTER on `who`, with `Bridgechat: 2` when `v2`: a name held by another
    /// connection is refused; otherwise the contact replaces what `who` held before.
    pub fn register_as(&mut self, who: K, contact: Contact, v2: bool) -> Registered {
        if self
            .holder(contact.name)
            .is_some_and(|holder| holder != who)
        {
            return Registered::NameTaken;
        }
        self.asker_moved_on(who);
        if v2 {
            self.v2.insert(who);
        } else {
            self.v2.remove(&who);
            self.pending.remove(&who);
            self.named.retain(|(k, _)| *k != who);
        }
        self.registered.insert(who, contact);
        Registered::Stored
    }

    /// BRIDGE (version 1 form) on `who`, with the name it claims if it sent one.
    pub fn bridge(&mut self, who: K, claim: Option<Name>) -> Bridged {
        self.bridge_for(who, claim, Ok(None))
    }

    /// BRIDGE on `who` with its `Name` claim and `Peer` (`Err`: malformed), which only a
    /// v2 connection reads.
    pub fn bridge_for(
        &mut self,
        who: K,
        claim: Option<Name>,
        peer: Result<Option<Name>, ()>,
    ) -> Bridged {
        let Some(me) = self.registered.get(&who).copied() else {
            return Bridged::NotRegistered;
        };
        if claim.is_some_and(|name| !same(&name, &me.name)) {
            return Bridged::NameMismatch;
        }
        self.asker_moved_on(who);
        self.pending.remove(&who);
        let peer = match peer {
            _ if !self.v2.contains(&who) => None,
            Ok(peer) => peer,
            Err(()) => return Bridged::BadPeer,
        };
        if peer.is_some_and(|p| same(&p, &me.name)) {
            return Bridged::WithYourself;
        }
        let found = match peer {
            None => {
                let for_me = self.named.iter().find(|(_, want)| same(want, &me.name));
                match for_me {
                    Some(&(w, want)) if w != who => Some((w, Some(want))),
                    _ => self
                        .anyone
                        .front()
                        .filter(|&&w| w != who)
                        .map(|&w| (w, None)),
                }
            }
            Some(peer) => self.holder(peer).filter(|&w| w != who).and_then(|w| {
                if self.anyone.contains(&w) {
                    return Some((w, None));
                }
                let wants = self.named.iter().find(|(k, _)| *k == w).map(|(_, n)| *n)?;
                same(&wants, &me.name).then_some((w, Some(wants)))
            }),
        };
        if let Some((waiter, place)) = found {
            self.leave_place(waiter);
            self.leave_place(who);
            if self.v2.contains(&waiter) {
                let both = self.v2.contains(&who);
                self.notes.entry(waiter).or_default().push(Note::Matched {
                    peer: me.name,
                    ticket: both,
                });
                self.pending.insert(
                    waiter,
                    PendingMatch {
                        asker: who,
                        asker_name: me.name,
                        place,
                        ticket: None,
                    },
                );
            }
            return Bridged::Paired(self.registered[&waiter]);
        }
        let already = match peer {
            None => self.anyone.contains(&who),
            Some(p) => self.named.iter().any(|(k, n)| *k == who && same(n, &p)),
        };
        if !already {
            self.leave_place(who);
            match peer {
                None => self.anyone.push_back(who),
                Some(p) => self.named.push_back((who, p)),
            }
        }
        Bridged::Waits
    }

    /// The asker's answer showed the ticket of the match it was just given with `waiter`.
    pub fn record_ticket(&mut self, waiter: K, ticket: Option<Ticket>) {
        if let Some(p) = self.pending.get_mut(&waiter) {
            p.ticket = Some(ticket);
        }
    }

    /// STARTED on a v2 connection: completes its match if the ticket is the match's.
    pub fn started(&mut self, who: K, ticket: Option<Ticket>) {
        if self
            .pending
            .get(&who)
            .is_some_and(|p| p.ticket == Some(ticket))
        {
            self.pending.remove(&who);
        }
    }

    /// UNREGISTER on `who`: it holds nothing and waits no more.
    pub fn unregister(&mut self, who: K) {
        self.asker_moved_on(who);
        self.leave_place(who);
        self.pending.remove(&who);
        self.registered.remove(&who);
    }

    /// `who`'s connection closed.
    pub fn close(&mut self, who: K) {
        self.unregister(who);
        self.v2.remove(&who);
        self.notes.remove(&who);
    }

    /// `who` asked or left while a v2 waiter it was handed had not started: that
    /// waiter goes back to the front of its place and is owed UNMATCHED.
    fn asker_moved_on(&mut self, who: K) {
        let Some((&waiter, &p)) = self.pending.iter().find(|(_, p)| p.asker == who) else {
            return;
        };
        self.pending.remove(&waiter);
        match p.place {
            None => self.anyone.push_front(waiter),
            Some(name) => self.named.push_front((waiter, name)),
        }
        self.notes
            .entry(waiter)
            .or_default()
            .push(Note::Unmatched { peer: p.asker_name });
    }

    fn leave_place(&mut self, who: K) {
        self.anyone.retain(|&k| k != who);
        self.named.retain(|(k, _)| *k != who);
    }

    pub fn is_v2(&self, who: K) -> bool {
        self.v2.contains(&who)
    }

    /// The notifications owed to `who` since the last call, in order.
    pub fn take_notes(&mut self, who: K) -> Vec<Note> {
        self.notes.remove(&who).unwrap_or_default()
    }

    pub fn pending(&self, waiter: K) -> Option<PendingMatch<K>> {
        self.pending.get(&waiter).copied()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The contact `who` holds, if any.
    pub fn registration(&self, who: K) -> Option<Contact> {
        self.registered.get(&who).copied()
    }

    /// The contact of the client the next plain BRIDGE of a stranger is handed, if any.
    pub fn waiting(&self) -> Option<Contact> {
        self.anyone.front().and_then(|&w| self.registration(w))
    }

    /// Everyone waiting for anyone, next first.
    pub fn waiting_clients(&self) -> Vec<Contact> {
        self.anyone
            .iter()
            .filter_map(|&w| self.registration(w))
            .collect()
    }

    /// Everyone waiting for `name`, next first.
    pub fn waiting_for(&self, name: Name) -> Vec<Contact> {
        self.named
            .iter()
            .filter(|(_, want)| same(want, &name))
            .filter_map(|&(w, _)| self.registration(w))
            .collect()
    }

    /// How many wait for a name.
    pub fn named_count(&self) -> usize {
        self.named.len()
    }

    /// How many connections hold a name.
    pub fn len(&self) -> usize {
        self.registered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn contact(name: &str, port: u16) -> Contact {
        let name = Name::new(name.as_bytes()).unwrap();
        Contact::new(name, IpAddr::V4(Ipv4Addr::LOCALHOST), port).unwrap()
    }

    #[test]
    fn a_taken_name_is_refused_and_a_pair_forms_once() {
        let mut registry = RegistryModel::default();
        assert_eq!(registry.bridge(1, None), Bridged::NotRegistered);
        assert_eq!(registry.register(1, contact("ann", 1)), Registered::Stored);
        assert_eq!(
            registry.register(2, contact("ann", 2)),
            Registered::NameTaken
        );
        assert_eq!(registry.register(2, contact("bob", 2)), Registered::Stored);
        let bob = Name::new(b"bob").unwrap();
        assert_eq!(registry.bridge(1, Some(bob)), Bridged::NameMismatch);
        assert_eq!(registry.bridge(1, None), Bridged::Waits);
        assert_eq!(registry.bridge(1, None), Bridged::Waits);
        assert_eq!(registry.waiting(), Some(contact("ann", 1)));
        assert_eq!(
            registry.bridge(2, Some(bob)),
            Bridged::Paired(contact("ann", 1))
        );
        assert_eq!(registry.waiting(), None);
        registry.unregister(1);
        assert_eq!(registry.holder(Name::new(b"ann").unwrap()), None);
        assert_eq!(registry.len(), 1);
    }
}
