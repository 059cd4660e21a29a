//! `bridgechat bench`: a load generator in the spirit of redis-benchmark.
//!
//! Built directly on `mio` (one `Poll`, non-blocking sockets, no thread per
//! connection) and on the core codec: requests are written with
//! `codec::write_*`, answers read with `Decoder::decode_response`.
//! See [`load`] for the stages and [`pingpong`] for the raw TCP reference.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bridgechat_core::codec;
use clap::{Args, ValueEnum};

pub mod hist;
pub mod load;
pub mod pingpong;
pub mod relay;

use hist::Histogram;
use load::{LoadConfig, LoadReport, Stage};

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Register, (hold), bridge, chat turns (with --turns), then steady REGISTER load.
    All,
    /// Register, then steady REGISTER load only (no bridging).
    Steady,
    /// Register, (hold), bridge and chat turns; no steady load.
    Pair,
    /// No server: a raw TCP ping-pong on loopback of the same size as one MESSAGE
    /// turn, --turns messages per pair, --clients/2 pairs.
    Pingpong,
    /// --clients/2 pairs relayed through the server (v2 REGISTER and BRIDGE for a
    /// ticket, then RELAY), held for --hold; then --turns/2 round trips of
    /// --message-size bytes over one relay and over a direct loopback connection,
    /// alternating, and a 4 MiB bulk transfer over each. Needs a server started
    /// with --relay-rate and --relay-budget large enough for the bulk transfer.
    Relay,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  bridgechat bench                             50 clients: register, bridge, 10 s of REGISTER load
  bridgechat bench -c 10000 -P 16 -d 30        10,000 clients, 16 requests in flight on each
  bridgechat bench -c 1000 -t 100 --phase pair 500 pairs, each chatting 100 turns
  bridgechat bench -c 100000 --hold 30         hold 100,000 registered clients idle for 30 s
  bridgechat bench --phase pingpong -c 2 -t 10000   raw TCP reference, no server
  bridgechat bench --phase relay -c 2000 -t 2000 --hold 5   1,000 relayed pairs, relay vs direct

Start a server first (e.g. `bridgechat server --quiet`). bench prints one line per
stage (count, rate, latency percentiles) and `summary` lines for scripts.
Opening connections is paced by --connect-window, below the server's listen
backlog of 4096, so no client waits on a SYN retransmit.")]
pub struct BenchArgs {
    /// The server to load.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "BRIDGECHAT_SERVER",
        default_value = "127.0.0.1:7070"
    )]
    server: String,
    /// Connections (clients) to open and register.
    #[arg(long, short = 'c', default_value_t = 50)]
    clients: usize,
    /// Seconds of steady REGISTER load after the other stages (0: none).
    #[arg(long, short = 'd', value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight per connection in the steady stage.
    #[arg(long, short = 'P', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pipeline: u32,
    /// Chat messages per pair (each pair chats over its own connection; 0: no chats).
    #[arg(long, short = 't', default_value_t = 0)]
    turns: u64,
    /// Which stages to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    phase: Phase,
    /// Bytes of text in each chat MESSAGE.
    #[arg(long, value_name = "BYTES", default_value_t = 32)]
    message_size: usize,
    /// Seconds to hold every client registered and idle before bridging, and again after
    /// pairing (e.g. to read the server's RSS and CPU time; lines on stderr mark both).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    hold: f64,
    /// Connections being opened at once (connecting, or first REGISTER unanswered).
    /// Keep it below the server's listen backlog (4096) to avoid SYN drops.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    connect_window: u32,
    /// Chats running at once (each costs two sockets in this process).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    chat_window: u32,
    /// Give up when a stage gets no answer for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    stall: f64,
    /// Add a `Host` header to every REGISTER (bridgechat ignores it), so that a plain
    /// HTTP/1.1 server such as nginx with `return 200` can take the very same load
    /// for comparison (use with --phase steady).
    #[arg(long)]
    http_host: bool,
    /// Connect from 127.0.0.1 with kernel-chosen ports even to a loopback server
    /// (by default each client binds its own address in 127.0.0.2–201 and port, which
    /// keeps connect() fast with tens of thousands of clients).
    #[arg(long)]
    no_source_spread: bool,
    /// Encrypt the chat turns as two v2 clients do (Noise handshake on CHAT and
    /// its 200, every MESSAGE and QUIT a sealed frame), to compare with plain text.
    /// The bench's two ends share a fixed ticket: it plays both peers.
    #[arg(long)]
    encrypted: bool,
    /// No progress lines on standard error.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn seconds(name: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--{name} must be a number of seconds ≥ 0"))
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    let nofile = raise_nofile_limit();
    let message = vec![b'x'; args.message_size];
    if args.phase == Phase::Pingpong {
        return run_pingpong(&args, &message);
    }
    let server = resolve(&args.server)?;
    if args.phase == Phase::Relay {
        return run_relay(&args, server);
    }
    let duration = seconds("duration", args.duration)?;
    let hold = seconds("hold", args.hold)?;
    let stall = seconds("stall", args.stall)?.max(Duration::from_millis(100));
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    // Own sockets: every client, two per running chat, the listener, a probe, stdio.
    let chats = if args.turns > 0 {
        2 * args.chat_window as u64
    } else {
        0
    };
    let needed = args.clients as u64 + chats + 16;
    if let Some(limit) = nofile {
        if needed > limit {
            return Err(format!(
                "{} clients need about {needed} open files here, but the limit is {limit} (ulimit -Hn)",
                args.clients
            ));
        }
    }

    // Fail fast and clearly when nothing listens there; learn our own address.
    let ip = preflight(server)?;
    let steady = matches!(args.phase, Phase::All | Phase::Steady);
    let cfg = LoadConfig {
        server,
        clients: args.clients,
        pipeline: args.pipeline as usize,
        turns: args.turns,
        message,
        hold,
        bridge: args.phase != Phase::Steady,
        duration: if steady { duration } else { Duration::ZERO },
        connect_window: args.connect_window as usize,
        chat_window: args.chat_window as usize,
        stall,
        progress: !args.quiet,
        host_header: args.http_host,
        encrypted: args.encrypted,
        spread_sources: !args.no_source_spread
            && matches!(server.ip(), IpAddr::V4(v4) if v4.is_loopback()),
    };
    println!(
        "bridgechat bench: {} clients -> {server}, pipeline {}, turns {}, steady {:.1} s, phase {:?}",
        cfg.clients,
        cfg.pipeline,
        cfg.turns,
        cfg.duration.as_secs_f64(),
        args.phase
    );
    let report = load::run(cfg.clone(), ip)?;
    print_report(&cfg, &report);
    let faults = report.pairing_faults.len();
    if faults > 0 {
        return Err(format!(
            "pairing went wrong ({faults} faults, listed above)"
        ));
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
fn raise_nofile_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    server
        .to_socket_addrs()
        .map_err(|e| format!("invalid --server {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("invalid --server {server}: no address"))
}

/// Connects once: a clean error when the server is unreachable, and the local IP to register.
fn preflight(server: SocketAddr) -> Result<IpAddr, String> {
    let probe = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .map_err(|e| format!("server {server} unreachable: {}", load::error_text(&e)))?;
    let ip = probe
        .local_addr()
        .map_err(|e| format!("server {server}: {e}"))?
        .ip();
    Ok(ip)
}

fn run_pingpong(args: &BenchArgs, message: &[u8]) -> Result<(), String> {
    let mut wire = Vec::new();
    codec::write_message(&mut wire, message);
    let pairs = (args.clients / 2).max(1);
    let rounds = (args.turns / 2).max(1);
    println!(
        "bridgechat bench: raw TCP ping-pong on loopback, {pairs} pair(s), {rounds} round trips each, {} bytes each way (one MESSAGE with {} bytes of text)",
        wire.len(),
        message.len()
    );
    let ip: IpAddr = [127, 0, 0, 1].into();
    let r = pingpong::run(ip, pairs, rounds, wire.len(), !args.quiet)?;
    let turns = 2 * r.round_trips;
    println!(
        "pingpong  {} round trips in {:.3} s  {:.0} turns/s  round trip {}",
        r.round_trips,
        r.elapsed.as_secs_f64(),
        turns as f64 / r.elapsed.as_secs_f64().max(1e-9),
        r.latency.summary()
    );
    println!(
        "summary phase=pingpong pairs={} bytes={} round_trips={} turns_per_s={:.0} rtt_p50_us={:.2} rtt_p99_us={:.2} rtt_mean_us={:.2}",
        r.pairs,
        r.size,
        r.round_trips,
        turns as f64 / r.elapsed.as_secs_f64().max(1e-9),
        us(r.latency.quantile(0.5)),
        us(r.latency.quantile(0.99)),
        us(r.latency.mean()),
    );
    Ok(())
}

fn run_relay(args: &BenchArgs, server: SocketAddr) -> Result<(), String> {
    let ip = preflight(server)?;
    let pairs = (args.clients / 2).max(1);
    let rounds = (args.turns / 2).max(1);
    let hold = seconds("hold", args.hold)?;
    println!(
        "bridgechat bench: {pairs} relayed pair(s) through {server}, then {rounds} round trips of {} bytes relayed and direct, alternating",
        args.message_size
    );
    let r = relay::run(server, ip, pairs, rounds, args.message_size, hold)?;
    println!(
        "setup     {} relayed pairs in {:.3} s",
        r.pairs,
        r.setup.as_secs_f64()
    );
    for (path, latency, rate) in [
        ("relayed", &r.relayed, r.relayed_bytes_per_sec),
        ("direct", &r.direct, r.direct_bytes_per_sec),
    ] {
        println!(
            "{path:<9} round trip {}  bulk {:.1} MiB/s",
            latency.summary(),
            rate / f64::from(1 << 20)
        );
    }
    println!(
        "summary phase=relay pairs={} bytes={} rtt_p50_us_relayed={:.2} rtt_p50_us_direct={:.2} rtt_ratio={:.3} mib_s_relayed={:.1} mib_s_direct={:.1}",
        r.pairs,
        r.size,
        us(r.relayed.quantile(0.5)),
        us(r.direct.quantile(0.5)),
        r.relayed.quantile(0.5).as_secs_f64() / r.direct.quantile(0.5).as_secs_f64().max(1e-12),
        r.relayed_bytes_per_sec / f64::from(1 << 20),
        r.direct_bytes_per_sec / f64::from(1 << 20),
    );
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn statuses(stage: &Stage) -> String {
    if stage.statuses.is_empty() {
        return String::new();
    }
    let list: Vec<String> = stage
        .statuses
        .iter()
        .map(|(code, n)| format!("{n}× {code}"))
        .collect();
    format!("  errors: {}", list.join(", "))
}

fn stage_line(label: &str, what: &str, count: u64, stage: &Stage, unit: &str) {
    println!(
        "{label:<9} {count} {what} in {:.3} s  {:.0} {unit}  {}{}",
        stage.elapsed.as_secs_f64(),
        stage.rate(count),
        stage.latency.summary(),
        statuses(stage)
    );
}

fn print_report(cfg: &LoadConfig, r: &LoadReport) {
    println!(
        "connect   {} connections  {}",
        r.connect.answered,
        r.connect.latency.summary()
    );
    stage_line(
        "register",
        "requests",
        r.register.answered,
        &r.register,
        "req/s",
    );
    let probe = match r.held_probe {
        Some((held, asked)) => format!("; server check: {held} of {asked} sampled names held (409 to a REGISTER of that name from another connection)"),
        None => String::new(),
    };
    println!(
        "peak      {} of {} clients registered at once (count of connections whose REGISTER was answered 200 and that were still open){probe}",
        r.peak_registered, cfg.clients
    );
    if let Some(bridge) = &r.bridge {
        stage_line("bridge", "pairs", r.pairs as u64, bridge, "pairs/s");
        println!(
            "pairing   {} pairs, {} waiters, {} left waiting: {}",
            r.pairs,
            r.waiters,
            r.left_waiting,
            if r.pairing_faults.is_empty() {
                "every waiter handed out exactly once".to_string()
            } else {
                format!("FAULTS: {}", r.pairing_faults.join("; "))
            }
        );
    }
    if let Some(setup) = &r.chat_setup {
        println!(
            "chat      {} chats opened (connect + CHAT + 200)  {}",
            setup.answered,
            setup.latency.summary()
        );
    }
    if let Some(chat) = &r.chat {
        println!(
            "turns     {} turns in {:.3} s  {:.0} turns/s  round trip (MESSAGE there and back): {}; {} chats ok, {} failed",
            r.turns,
            chat.elapsed.as_secs_f64(),
            chat.rate(r.turns),
            chat.latency.summary(),
            r.chats_ok,
            r.chats_failed
        );
    }
    if let Some(steady) = &r.steady {
        stage_line("steady", "requests", steady.answered, steady, "req/s");
    }
    let conn_errors: u64 = r.conn_errors.values().sum();
    if conn_errors == 0 {
        println!(
            "errors    connection errors: 0, protocol errors: {}",
            r.protocol_errors
        );
    } else {
        let list: Vec<String> = r
            .conn_errors
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        println!(
            "errors    connection errors: {conn_errors} ({}), protocol errors: {}",
            list.join(", "),
            r.protocol_errors
        );
    }
    let status_errors: u64 = [Some(&r.register), r.bridge.as_ref(), r.steady.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| s.statuses.values().sum::<u64>())
        .sum();
    let empty = Histogram::default();
    let steady_lat = r.steady.as_ref().map_or(&empty, |s| &s.latency);
    let chat_lat = r.chat.as_ref().map_or(&empty, |s| &s.latency);
    println!(
        "summary clients={} registered={} peak_registered={} held_probe={}/{} register_s={:.3} pairs={} bridge_s={:.4} pairs_per_s={:.0} pairing_ok={} turns={} turns_per_s={:.0} rtt_p50_us={:.2} rtt_p99_us={:.2} rtt_mean_us={:.2} steady_requests={} steady_rps={:.0} steady_p50_us={:.1} steady_p99_us={:.1} steady_p999_us={:.1} status_errors={} conn_errors={} protocol_errors={}",
        cfg.clients,
        r.registered,
        r.peak_registered,
        r.held_probe.map_or(0, |p| p.0),
        r.held_probe.map_or(0, |p| p.1),
        r.register.elapsed.as_secs_f64(),
        r.pairs,
        r.bridge.as_ref().map_or(0.0, |b| b.elapsed.as_secs_f64()),
        r.bridge.as_ref().map_or(0.0, |b| b.rate(r.pairs as u64)),
        r.pairing_faults.is_empty(),
        r.turns,
        r.chat.as_ref().map_or(0.0, |c| c.rate(r.turns)),
        us(chat_lat.quantile(0.5)),
        us(chat_lat.quantile(0.99)),
        us(chat_lat.mean()),
        r.steady.as_ref().map_or(0, |s| s.answered),
        r.steady.as_ref().map_or(0.0, |s| s.rate(s.answered)),
        us(steady_lat.quantile(0.5)),
        us(steady_lat.quantile(0.99)),
        us(steady_lat.quantile(0.999)),
        status_errors,
        conn_errors,
        r.protocol_errors,
    );
}
