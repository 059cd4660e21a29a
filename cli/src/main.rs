//! `bridgechat`: the rendezvous server, the chat client, a demo and a load generator.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod client;
mod commands;
mod console;
mod demo;
mod logging;
mod metrics_listen;
mod out;
mod server;
mod signals;
mod transport;

#[derive(Debug, Parser)]
#[command(
    name = "bridgechat",
    version,
    about = "A rendezvous server and peer-to-peer chat over TCP",
    after_help = "\
Try it:
  bridgechat demo                      a server and two scripted clients in one process
  bridgechat server                    then, in two more terminals:
  bridgechat client --name alice       type /register, then /bridge
  bridgechat client --name bob         type /register, /bridge, then /chat

Run `bridgechat help <COMMAND>` for a command's flags and examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the rendezvous server.
    Server(server::ServerArgs),
    /// Run a chat client: register, find a peer, chat turn by turn.
    Client(client::ClientArgs),
    /// Show the whole protocol: a server and two scripted clients chatting over loopback.
    Demo(demo::DemoArgs),
    /// Load-generate against a server: register, bridge, chat; print rates and latencies.
    Bench(bench::BenchArgs),
}

/// Parses `ADDR:PORT`, resolving a host name (`localhost:7070`) to its first address.
fn parse_addr(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    let mut resolved = raw
        .to_socket_addrs()
        .map_err(|e| format!("expected ADDR:PORT such as 127.0.0.1:7070 ({e})"))?;
    resolved
        .next()
        .ok_or_else(|| format!("{raw} resolves to no address"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version: clap's full text, exit 0.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error)
            if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // Bare `bridgechat`: the overview is more use than a one-line complaint.
            let _ = error.print();
            return ExitCode::from(2);
        }
        Err(error) => {
            out::complain(&flag_error(&error.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Server(args) => server::run(args),
        Command::Client(args) => client::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            out::complain(&error);
            ExitCode::FAILURE
        }
    }
}

/// Folds clap's multi-line usage error into the contract's "one clear line":
/// the error and its details, without the usage block and the `--help` hint.
/// clap's `tip:` lines (a similar flag exists...) follow, each on its own line.
fn flag_error(rendered: &str) -> String {
    let (tips, details): (Vec<&str>, Vec<&str>) = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .partition(|line| line.starts_with("tip:"));
    let text = details.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let mut shown = format!("{text} (see --help)");
    for tip in tips {
        shown.push_str("\n  ");
        shown.push_str(tip);
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flag_errors_fold_into_one_line() {
        let error = Cli::try_parse_from(["bridgechat", "client"]).unwrap_err();
        let line = flag_error(&error.render().to_string());
        assert_eq!(
            line,
            "the following required arguments were not provided: --name <NAME> (see --help)"
        );
    }

    #[test]
    fn a_tip_goes_on_its_own_line() {
        let error = Cli::try_parse_from(["bridgechat", "client", "--name", "al", "--serer", "x"])
            .unwrap_err();
        assert_eq!(
            flag_error(&error.render().to_string()),
            "unexpected argument '--serer' found (see --help)\n  \
             tip: a similar argument exists: '--server'"
        );
    }

    #[test]
    fn the_server_may_be_a_host_name_resolved_at_start() {
        let cli = Cli::try_parse_from([
            "bridgechat",
            "client",
            "--name",
            "al",
            "--server",
            "nosuchhost.invalid:7070",
        ])
        .unwrap();
        let Command::Client(args) = cli.command else {
            panic!("not client")
        };
        assert_eq!(
            args.server.resolve(),
            Err("cannot resolve host nosuchhost.invalid".to_owned())
        );
        assert!(Cli::try_parse_from([
            "bridgechat",
            "client",
            "--name",
            "al",
            "--server",
            "nosuchhost"
        ])
        .is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn section_6_defaults() {
        let cli = Cli::try_parse_from(["bridgechat", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert_eq!(args.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(args.transport, transport::Transport::Mio);

        // Only when BRIDGECHAT_SERVER is unset is the default visible.
        if std::env::var_os("BRIDGECHAT_SERVER").is_none() {
            let cli = Cli::try_parse_from(["bridgechat", "client", "--name", "alice"]).unwrap();
            let Command::Client(args) = cli.command else {
                panic!("not client")
            };
            assert_eq!(args.server.to_string(), "127.0.0.1:7070");
            assert_eq!(args.port, 0);
            assert_eq!(args.ip, None);
        }
    }

    #[test]
    fn every_flag_of_section_6_parses() {
        let cli = Cli::try_parse_from([
            "bridgechat",
            "client",
            "--name",
            "bob",
            "--port",
            "9002",
            "--server",
            "127.0.0.1:7071",
            "--ip",
            "::1",
            "--transport",
            "std",
        ])
        .unwrap();
        let Command::Client(args) = cli.command else {
            panic!("not client")
        };
        assert_eq!(args.port, 9002);
        assert_eq!(args.ip, Some("::1".parse().unwrap()));
        assert_eq!(args.transport, transport::Transport::Std);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let err = Cli::try_parse_from(["bridgechat", "client", "--name", "al ice"]).unwrap_err();
        assert!(err.to_string().contains("only A-Z a-z 0-9 _ - ."), "{err}");
        let err = Cli::try_parse_from(["bridgechat", "server", "--listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("ADDR:PORT"), "{err}");
        assert!(Cli::try_parse_from(["bridgechat", "server", "--transport", "tokio"]).is_err());
        assert!(Cli::try_parse_from(["bridgechat", "client"]).is_err());
    }

    #[test]
    fn every_transport_is_offered_to_server_client_and_demo() {
        for (word, transport) in [
            ("mio", transport::Transport::Mio),
            ("std", transport::Transport::Std),
            ("uring", transport::Transport::Uring),
        ] {
            let chosen = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
                Command::Server(a) => a.transport,
                Command::Client(a) => a.transport,
                Command::Demo(a) => a.transport,
                _ => panic!("not server, client or demo"),
            };
            assert_eq!(
                chosen(&["bridgechat", "server", "--transport", word]),
                transport
            );
            assert_eq!(
                chosen(&["bridgechat", "client", "--name", "a", "--transport", word]),
                transport
            );
            assert_eq!(
                chosen(&["bridgechat", "demo", "--transport", word]),
                transport
            );
        }
    }
}
