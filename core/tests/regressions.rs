//! Regressions found by fuzzing, and the committed seed corpus, as ordinary tests.
//!
//! Every input that ever crashed a fuzz target (or broke one of its checks) is
//! kept here as a named test that feeds the exact bytes to the same target
//! body (`bridgechat_core::fuzzing`), so it runs on stable in every `cargo test`.
//! Name each after what it exercised, say where it was found, and keep the bytes
//! verbatim (`cargo fuzz fmt TARGET ARTIFACT` prints them).
//!
//! The regressions the targets found while they were written live beside their
//! targets (`core/src/fuzzing/`, `server_target_regression_*`); those of the long
//! runs recorded in docs/TESTING.md are below.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bridgechat_core::fuzzing;

/// The committed seeds (`fuzz/corpus/TARGET/seed-*`) of one target, sorted by name.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("seed-"))
        })
        .map(|path| {
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `body` on every seed of `target`, whole and with every one-byte-shorter
/// prefix, so the seeds' truncations (the first thing a fuzzer tries) stay clean too.
fn run_seeds(target: &str, body: impl Fn(&[u8])) {
    for (path, bytes) in seeds(target) {
        for end in (0..=bytes.len()).rev() {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&bytes[..end])));
            assert!(
                result.is_ok(),
                "{} (first {end} of {} bytes) panicked",
                path.display(),
                bytes.len()
            );
        }
    }
}

#[test]
fn every_decode_request_seed_and_its_prefixes_run_clean() {
    run_seeds("decode_request", fuzzing::decode_request);
}

#[test]
fn every_decode_response_seed_and_its_prefixes_run_clean() {
    run_seeds("decode_response", fuzzing::decode_response);
}

#[test]
fn every_course_seed_and_its_prefixes_run_clean() {
    run_seeds("course", fuzzing::course);
}

#[test]
fn every_server_seed_and_its_prefixes_run_clean() {
    let start = Instant::now();
    run_seeds("server", |data| drop(fuzzing::server(data, start)));
}

#[test]
fn every_client_seed_and_its_prefixes_run_clean() {
    let start = Instant::now();
    run_seeds("client", |data| fuzzing::client(data, start));
}

#[test]
fn every_secure_seed_and_its_prefixes_run_clean() {
    run_seeds("secure", fuzzing::secure);
}

/// The hostile openings of the hardening suite (cli/tests/hardening), through the
/// decoder targets: a TLS ClientHello, the HTTP/2 preface, NUL bytes, a head
/// past every limit.
#[test]
fn hostile_openings_run_clean_through_the_decoder_targets() {
    let long_line = vec![b'A'; 64 * 1024];
    let inputs: [&[u8]; 6] = [
        &[
            0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03,
        ],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00",
        b"REGISTER / HTTP/1.1\r\nName: al\0ice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n",
        b"UNREGISTER / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        b"MESSAGE / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &long_line,
    ];
    for input in inputs {
        fuzzing::decode_request(input);
        fuzzing::decode_response(input);
    }
}

/// Found by a `server` run after 1.1 million executions (build c3d9b69):
/// `\n`, `CHAT`, `\n` in three reads make a course-format first line, which
/// the server rightly serves as the course format while the model read it as
/// HTTP garbage. The model now keeps such a connection HTTP with a NUL, as it
/// already did for one-read garbage.
#[test]
fn server_a_course_verb_split_over_reads_stays_the_course_formats() {
    let data: &[u8] = &[
        0, 0, 16, 0, 126, 27, 1, 25, 3, 82, 82, 16, 0, 126, 27, 1, 25, 3, 82, 83, 0, 16, 35, 1, 0,
        0, 0, 0, 24, 1, 10, 32, 2, 67, 82, 83, 0, 16, 35, 1, 0, 0, 0, 0, 0, 16, 18, 0, 18, 1, 1,
        19, 127, 255, 25, 3, 18, 4, 20, 65, 4, 0, 24, 1, 10, 32, 2, 12, 15, 1, 0, 59, 0, 127, 0,
        16, 35, 1, 0, 0, 0, 0, 24, 1, 10, 32, 2, 12, 12, 15, 1, 0, 0, 127, 0, 82, 82, 16, 0, 126,
        27, 1, 25, 20, 0, 4, 0, 16, 0, 0, 241, 3, 82, 83, 0, 16, 35, 1, 0, 0, 0, 0, 24, 1, 10, 32,
        2, 3, 82, 83, 0, 16, 35, 1, 0, 0, 0, 0, 24, 1, 10, 32, 2, 12, 15, 1, 0, 0, 127, 0, 16, 35,
        1, 0, 0, 4, 20, 0, 4, 0, 16, 119, 119, 119, 119, 48, 52, 241, 0, 0, 16, 16, 0, 0, 241, 119,
    ];
    fuzzing::server(data, Instant::now());
}

/// Found by a `client` run after 1.5 million executions (build c3d9b69): a
/// waiter's relay connection, after the server's 200, carries the chat, so the
/// waiter's `400` to a malformed CHAT on it is an answer to its peer, not a
/// request to the server. The model now stops reading a connection as
/// server-bound after RELAY.
#[test]
fn client_answers_on_a_relay_connection_are_for_the_peer() {
    let data: &[u8] = &[
        0, 5, 1, 6, 1, 1, 121, 3, 1, 0, 135, 1, 8, 0, 20, 1, 2, 10, 0, 135, 1, 0, 135, 1, 109, 0,
        254, 255, 255, 255, 254, 255, 255, 255, 255, 255, 135, 255, 8, 128, 0, 0, 0, 10, 0, 135, 1,
        178, 0, 205, 254, 1, 6, 1, 49, 0, 0, 1, 7, 7, 0, 9, 0, 0, 0, 0, 0, 0, 0, 247, 14, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 5, 1, 6, 1, 1, 121, 3, 1, 0, 135, 1, 8, 0, 20, 1, 2, 10, 0, 135, 1, 0,
        135, 1, 109, 0, 254, 255, 255, 255, 254, 255, 255, 255, 255, 255, 135, 255, 8, 128, 0, 0,
        0, 10, 0, 135, 1, 178, 0, 205, 254, 1, 6, 1, 49, 0, 0, 1, 7, 7, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        247, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 1,
    ];
    fuzzing::client(data, Instant::now());
}
