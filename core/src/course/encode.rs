//! Writing course messages: the exact bytes the class's programs expect.

use std::io::Write as _;

use super::*;

fn write_header(out: &mut Vec<u8>, field: Field, value: &[u8]) {
    out.extend_from_slice(field.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_verb(out: &mut Vec<u8>, verb: Verb) {
    out.extend_from_slice(verb.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `clientID`, `IP`, `Port`, in that order, one space after each colon.
fn write_contact(out: &mut Vec<u8>, contact: &Contact) {
    write_header(out, Field::ClientId, contact.name.as_bytes());
    out.extend_from_slice(b"IP: ");
    // Writing to a Vec cannot fail.
    let _ = match contact.ip {
        IpAddr::V4(v4) => write!(out, "{v4}"),
        IpAddr::V6(v6) => write!(out, "{v6}"),
    };
    let _ = write!(out, "\r\nPort: {}\r\n", contact.port());
}

/// `REGISTER` with the client's own `clientID`, `IP`, `Port`.
pub fn write_register(out: &mut Vec<u8>, contact: &Contact) {
    write_verb(out, Verb::Register);
    write_contact(out, contact);
    out.extend_from_slice(b"\r\n");
}

/// `REGACK` echoing the registration, with `Status: registered` when `registered`
/// (the instructor's server leaves it out).
pub fn write_regack(out: &mut Vec<u8>, contact: &Contact, registered: bool) {
    write_verb(out, Verb::RegAck);
    write_contact(out, contact);
    if registered {
        write_header(out, Field::Status, b"registered");
    }
    out.extend_from_slice(b"\r\n");
}

/// `BRIDGE` naming the asker.
pub fn write_bridge(out: &mut Vec<u8>, name: &Name) {
    write_verb(out, Verb::Bridge);
    write_header(out, Field::ClientId, name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `BRIDGEACK` naming the other client, or the empty form when there is none:
/// exactly `clientID`, `IP`, `Port`, since several clients parse it by position.
pub fn write_bridgeack(out: &mut Vec<u8>, peer: Option<&Contact>) {
    write_verb(out, Verb::BridgeAck);
    match peer {
        Some(contact) => write_contact(out, contact),
        None => {
            for field in [Field::ClientId, Field::Ip, Field::Port] {
                write_header(out, field, b"");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `CHAT` with the initiator's own contact; sent as its own write, never answered.
pub fn write_chat(out: &mut Vec<u8>, contact: &Contact) {
    write_verb(out, Verb::Chat);
    write_contact(out, contact);
    out.extend_from_slice(b"\r\n");
}

/// `QUIT\r\n\r\n\r\n`, the form most course programs send.
pub fn write_quit(out: &mut Vec<u8>) {
    out.extend_from_slice(b"QUIT\r\n\r\n\r\n");
}

/// Framed chat family: `CHAT` with `Type: init`, and the contact when given.
pub fn write_chat_init(out: &mut Vec<u8>, contact: Option<&Contact>) {
    write_verb(out, Verb::Chat);
    write_header(out, Field::Type, b"init");
    if let Some(contact) = contact {
        write_contact(out, contact);
    }
    out.extend_from_slice(b"\r\n");
}

/// Framed chat family: `CHAT` with `Type: message` and the text as `Message`.
/// The text must be one line: no CR, LF or other control byte (tab is fine).
pub fn write_chat_message(out: &mut Vec<u8>, text: &[u8]) -> Result<(), UnencodableText> {
    if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(UnencodableText::ControlByte);
    }
    write_verb(out, Verb::Chat);
    write_header(out, Field::Type, b"message");
    write_header(out, Field::Message, text);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Framed chat family: `CHAT` with `Type: quit`.
pub fn write_chat_quit(out: &mut Vec<u8>) {
    write_verb(out, Verb::Chat);
    write_header(out, Field::Type, b"quit");
    out.extend_from_slice(b"\r\n");
}
