//! What end-to-end encryption costs: the Noise handshake, and sealing plus
//! opening one chat frame at several sizes. Bytes added per frame:
//! `secure::OVERHEAD` (a 16-byte tag and a 1-byte kind).
//! Run: `cargo bench -p bridgechat-core --bench secure -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bridgechat_core::secure::{FrameKind, Initiator, Responder, Session, MAX_PLAINTEXT};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TICKET: [u8; 16] = *b"0123456789abcdef";

fn pair() -> (Session, Session) {
    let (initiator, first) = Initiator::new(&TICKET, [1; 32]);
    let (responder, reply) = Responder::accept(&TICKET, [2; 32], &first).unwrap();
    (initiator.finish(&reply).unwrap(), responder)
}

fn secure_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("secure");

    // Both sides' whole handshake: two key generations and four X25519 operations.
    group.bench_function("handshake (both sides)", |b| {
        b.iter(|| {
            let (initiator, first) = Initiator::new(black_box(&TICKET), [1; 32]);
            let (responder, reply) = Responder::accept(&TICKET, [2; 32], &first).unwrap();
            (initiator.finish(black_box(&reply)).unwrap(), responder)
        })
    });

    // One long-lived pair, as in a chat: the nonces keep counting across iterations.
    let (mut sender, mut receiver) = pair();
    for size in [16, 1024, MAX_PLAINTEXT] {
        let plaintext = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("seal+open", size),
            &plaintext,
            |b, text| {
                b.iter(|| {
                    let frame = sender.seal(FrameKind::Message, black_box(text)).unwrap();
                    let opened = receiver.open(FrameKind::Message, &frame).unwrap();
                    assert_eq!(opened.len(), text.len());
                    opened
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, secure_benches);
criterion_main!(benches);
