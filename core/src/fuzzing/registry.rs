//! The rendezvous registry as the protocol describes it, written apart from
//! the server: which contact each connection registered, and who waits to be
//! bridged. The server's fuzz target and the model-based property test both
//! check the server against this one model.

use std::collections::BTreeMap;

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
    /// 200 without a contact: this connection waits (or already waited).
    Waits,
    /// 200 with the contact of the client that was waiting, which waits no more.
    Paired(Contact),
}

/// The registry, keyed by whatever the caller names its connections with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryModel<K> {
    registered: BTreeMap<K, Contact>,
    waiting: Option<K>,
}

impl<K> Default for RegistryModel<K> {
    fn default() -> Self {
        RegistryModel {
            registered: BTreeMap::new(),
            waiting: None,
        }
    }
}

impl<K: Ord + Copy> RegistryModel<K> {
    /// The connection holding `name`, if any (names ignore ASCII case).
    pub fn holder(&self, name: Name) -> Option<K> {
        self.registered
            .iter()
            .find(|(_, c)| c.name.as_str().eq_ignore_ascii_case(name.as_str()))
            .map(|(k, _)| *k)
    }

    /// REGISTER on `who`: a name held by another connection is refused; otherwise
    /// the contact replaces whatever `who` held before.
    pub fn register(&mut self, who: K, contact: Contact) -> Registered {
        if self
            .holder(contact.name)
            .is_some_and(|holder| holder != who)
        {
            return Registered::NameTaken;
        }
        self.registered.insert(who, contact);
        Registered::Stored
    }

    /// BRIDGE on `who`, with the name it claims if it sent one.
    pub fn bridge(&mut self, who: K, claim: Option<Name>) -> Bridged {
        let Some(me) = self.registered.get(&who) else {
            return Bridged::NotRegistered;
        };
        if claim.is_some_and(|name| !name.as_str().eq_ignore_ascii_case(me.name.as_str())) {
            return Bridged::NameMismatch;
        }
        match self.waiting {
            Some(waiter) if waiter != who => {
                self.waiting = None;
                Bridged::Paired(self.registered[&waiter])
            }
            _ => {
                self.waiting = Some(who);
                Bridged::Waits
            }
        }
    }

    /// UNREGISTER on `who`, or its connection closed: it holds nothing and waits no more.
    pub fn unregister(&mut self, who: K) {
        self.registered.remove(&who);
        if self.waiting == Some(who) {
            self.waiting = None;
        }
    }

    /// The contact `who` holds, if any.
    pub fn registration(&self, who: K) -> Option<Contact> {
        self.registered.get(&who).copied()
    }

    /// The contact of the client waiting to be bridged, if any.
    pub fn waiting(&self) -> Option<Contact> {
        self.waiting.and_then(|w| self.registration(w))
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
