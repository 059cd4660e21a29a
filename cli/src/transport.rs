//! One code path for every transport: pick a `Runner` by `--transport`, hand
//! the caller a way to feed inputs, run until the endpoint exits.

use std::fmt;

use bridgechat_core::Endpoint;
use clap::ValueEnum;

/// Which event loop runs the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Transport {
    /// One mio poll loop (the default).
    #[default]
    Mio,
    /// Blocking std::net sockets.
    Std,
    /// One io_uring completion loop (Linux 6.0 or later).
    Uring,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Mio => "mio",
            Transport::Std => "std",
            Transport::Uring => "uring",
        })
    }
}

impl Transport {
    /// File descriptors each connection costs on this transport.
    pub fn fds_per_connection(self) -> u64 {
        match self {
            Transport::Mio => bridgechat_transport_mio::FDS_PER_CONNECTION,
            Transport::Std => bridgechat_transport_std::FDS_PER_CONNECTION,
            // Its socket; the ring and its buffer pool are the loop's, not the connection's.
            Transport::Uring => 1,
        }
    }
}

/// Feeds a running loop from any thread (stdin, Ctrl+C, the demo's script).
pub enum Inputs<I> {
    Mio(bridgechat_transport_mio::Controller<I>),
    Std(bridgechat_transport_std::Controller<I>),
    #[cfg(target_os = "linux")]
    Uring(bridgechat_transport_uring::Controller<I>),
}

impl<I: Send + 'static> Inputs<I> {
    /// Hands `input` to the loop; false once the loop has ended.
    pub fn send(&self, input: I) -> bool {
        match self {
            Inputs::Mio(c) => c.send(input),
            Inputs::Std(c) => c.send(input),
            #[cfg(target_os = "linux")]
            Inputs::Uring(c) => c.send(input),
        }
    }
}

impl<I> Clone for Inputs<I> {
    fn clone(&self) -> Self {
        match self {
            Inputs::Mio(c) => Inputs::Mio(c.clone()),
            Inputs::Std(c) => Inputs::Std(c.clone()),
            #[cfg(target_os = "linux")]
            Inputs::Uring(c) => Inputs::Uring(c.clone()),
        }
    }
}

impl<I> fmt::Debug for Inputs<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Inputs::Mio(_) => "Inputs(mio)",
            Inputs::Std(_) => "Inputs(std)",
            #[cfg(target_os = "linux")]
            Inputs::Uring(_) => "Inputs(uring)",
        })
    }
}

/// Why `--transport uring` cannot run here, if it cannot: the kernel's own
/// error from setting up a ring, or the system not being Linux.
pub fn uring_unavailable() -> Option<String> {
    #[cfg(target_os = "linux")]
    let refused = bridgechat_transport_uring::probe()
        .err()
        .map(|e| e.to_string());
    #[cfg(not(target_os = "linux"))]
    let refused = Some("io_uring is Linux only".to_string());
    refused.map(|e| format!("io_uring is not available on this system: {e}; use --transport mio"))
}

/// Runs `endpoint` on `transport` until it exits. `setup` gets the input
/// handle before the loop starts (to spawn a stdin thread, install Ctrl+C);
/// `on_event` sees every event on the loop thread.
pub fn run_with<E>(
    transport: Transport,
    endpoint: E,
    setup: impl FnOnce(Inputs<E::Input>) -> Result<(), String>,
    on_event: impl FnMut(E::Event),
) -> Result<(), String>
where
    E: Endpoint,
{
    let start_error = |e: std::io::Error| format!("cannot start the {transport} event loop: {e}");
    match transport {
        Transport::Mio => {
            let runner = bridgechat_transport_mio::Runner::new(endpoint).map_err(start_error)?;
            setup(Inputs::Mio(runner.controller()))?;
            runner.run(on_event).map_err(|e| e.to_string())
        }
        Transport::Std => {
            let runner = bridgechat_transport_std::Runner::new(endpoint).map_err(start_error)?;
            setup(Inputs::Std(runner.controller()))?;
            runner.run(on_event).map_err(|e| e.to_string())
        }
        Transport::Uring => {
            if let Some(why) = uring_unavailable() {
                return Err(why);
            }
            #[cfg(target_os = "linux")]
            {
                let runner =
                    bridgechat_transport_uring::Runner::new(endpoint).map_err(start_error)?;
                setup(Inputs::Uring(runner.controller()))?;
                runner.run(on_event).map_err(|e| e.to_string())
            }
            #[cfg(not(target_os = "linux"))]
            unreachable!("uring_unavailable is always Some off Linux")
        }
    }
}
