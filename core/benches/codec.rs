//! What the codec costs per message, next to bare httparse on the same bytes.
//!
//! Goal: decoding a REGISTER costs at most 1.3x `httparse::Request::parse`.
//! Run: `cargo bench -p bridgechat-core --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bridgechat_core::codec;
use bridgechat_core::{Contact, Decoder, Name, Request};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const REGISTER: &[u8] =
    b"REGISTER / HTTP/1.1\r\nName: alice\r\nIP: 127.0.0.1\r\nPort: 9001\r\n\r\n";

fn message_1k() -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_message(&mut out, &[b'x'; 1024]);
    out
}

fn codec_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));

    // A fresh decoder per request would measure allocation, not parsing: one
    // connection's decoder is reused, as the server does.
    let mut decoder = Decoder::default();
    group.bench_function("decode REGISTER", |b| {
        b.iter(|| {
            let mut input = black_box(REGISTER);
            let request = decoder.decode_request(&mut input);
            assert!(matches!(request, Ok(Some(Request::Register(..)))));
            request
        })
    });

    group.bench_function("httparse::Request::parse REGISTER", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            let status = request.parse(black_box(REGISTER));
            assert!(matches!(status, Ok(httparse::Status::Complete(_))));
            status.ok().map(|s| s.is_complete())
        })
    });

    let message = message_1k();
    let mut decoder = Decoder::default();
    group.bench_function("decode MESSAGE 1 KiB", |b| {
        b.iter(|| {
            let mut input = black_box(message.as_slice());
            let request = decoder.decode_request(&mut input);
            assert!(matches!(&request, Ok(Some(Request::Message(body))) if body.len() == 1024));
            request
        })
    });

    let alice = Contact::new(
        Name::new(b"alice").unwrap(),
        "127.0.0.1".parse().unwrap(),
        9001,
    )
    .unwrap();
    let mut out = Vec::with_capacity(256);
    group.bench_function("encode 200 OK with contact", |b| {
        b.iter(|| {
            out.clear();
            codec::write_ok(&mut out, Some(black_box(&alice)));
            out.len()
        })
    });

    group.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
