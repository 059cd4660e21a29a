//! Errors that cross the boundary between the core and its transport.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::client::ClientError;

/// An I/O call failed: the OS error's kind and its text, kept so that errors
/// stay comparable and cloneable (an `io::Error` is neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    pub kind: io::ErrorKind,
    pub message: String,
}

impl IoFailure {
    pub fn new(kind: io::ErrorKind, message: impl Into<String>) -> IoFailure {
        IoFailure {
            kind,
            message: message.into(),
        }
    }
}

impl From<&io::Error> for IoFailure {
    fn from(error: &io::Error) -> IoFailure {
        IoFailure::new(error.kind(), error.to_string())
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why an endpoint or its event loop stopped: the error of `Output::Exit(Err)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitError {
    /// The server's listener could not be bound.
    Listen { addr: SocketAddr, error: IoFailure },
    /// The chat client cannot go on (its chat port, or the server unreachable).
    Client(ClientError),
    /// The transport's own event loop broke.
    Transport(IoFailure),
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            ExitError::Client(error) => error.fmt(f),
            ExitError::Transport(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ExitError {}

impl From<ClientError> for ExitError {
    fn from(error: ClientError) -> ExitError {
        ExitError::Client(error)
    }
}
