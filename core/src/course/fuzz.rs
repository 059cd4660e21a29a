use super::*;

/// Small limits, so that a short input can reach every one of them.
const SMALL: Limits = Limits {
    max_head: 96,
    max_headers: 4,
    max_body: 0,
};

type Item = Result<CourseMessage, CourseError>;

/// Everything a decoder makes of `chunks`, up to and including a fatal error.
fn feed(chunks: &[&[u8]], limits: Limits) -> Vec<Item> {
    let mut decoder = CourseDecoder::new(limits);
    let mut items = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        loop {
            let before = input.len();
            let result = decoder.decode(&mut input);
            assert!(
                decoder.buffered() <= limits.max_head,
                "decoder holds {} bytes",
                decoder.buffered()
            );
            match result {
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) left input untaken");
                    break;
                }
                Ok(Some(message)) => items.push(Ok(message)),
                Err(error) => {
                    let fatal = error.is_fatal();
                    items.push(Err(error));
                    if fatal {
                        return items;
                    }
                }
            }
            assert!(input.len() < before, "a result without taking a byte");
        }
    }
    items
}

/// Decodes `data` whole and split, under default and small limits; checks that
/// every split gives the same results, that decoded messages re-encode to bytes
/// that decode to themselves, and that detection and raw turns never panic.
pub fn decode(data: &[u8]) {
    for limits in [Limits::default(), SMALL] {
        let whole = feed(&[data], limits);
        let bytewise: Vec<&[u8]> = data.chunks(1).collect();
        let mut uneven = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = (usize::from(data[i % data.len()]) % 64 + 1).min(rest.len());
            uneven.push(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        for chunks in [bytewise, uneven] {
            assert_eq!(
                feed(&chunks, limits),
                whole,
                "the split changed the results"
            );
        }
        for message in whole.iter().flatten() {
            let mut bytes = Vec::new();
            message
                .encode(&mut bytes)
                .expect("a decoded message encodes");
            let again = feed(&[&bytes], Limits::default());
            assert_eq!(again, [Ok(message.clone())], "re-encoded {message:?}");
        }
        // Once detection decides, more bytes never change its mind; the verb-only
        // detection (the server's and the client's chat port) calls course only
        // what `detect` does.
        for verb_only in [false, true] {
            let mut decided = None;
            for end in 0..=data.len().min(256) {
                let first = &data[..end];
                let dialect = match verb_only {
                    false => detect(first, &limits),
                    true => detect_verb(first, &limits),
                };
                if dialect == Dialect::Course {
                    assert_eq!(detect(first, &limits), Dialect::Course);
                }
                match (dialect, decided) {
                    (Dialect::Undecided, None) => {}
                    (Dialect::Undecided, Some(d)) => panic!("{d:?} became undecided"),
                    (d, None) => decided = Some(d),
                    (d, Some(before)) => assert_eq!(d, before, "detection changed its mind"),
                }
            }
        }
    }
    match read_turn(data) {
        None => assert!(data.is_empty()),
        Some(Turn::Text(text)) => assert_eq!(text, data),
        Some(Turn::Quit) => assert!(data.starts_with(b"QUIT")),
        Some(Turn::TextThenQuit(text)) => {
            assert!(!text.is_empty() && data.starts_with(text))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_body_runs_on_valid_and_broken_input() {
        super::decode(b"");
        super::decode(b"REGISTER\r\nclientID: alice\r\nIP: 10.0.0.5\r\nPort: 3000\r\n\r\n");
        super::decode(b"BRIDGEACK\r\nclientID: \r\nIP: \r\nPort: \r\n\r\nQUIT\r\n\r\n\r\n");
        super::decode(b"CHAT\nType: message\nMessage:  hi \n\nNOPE\n\nCHAT\n\x00\n\n");
        super::decode(b"REGISTER / HTTP/1.1\r\nName: alice\r\n\r\n");
        super::decode(&(0..=255).collect::<Vec<u8>>());
    }
}
