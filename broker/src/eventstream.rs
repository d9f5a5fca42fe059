//! AWS's event stream encoding (`application/vnd.amazon.eventstream`), as
//! Lambda's `InvokeWithResponseStream` answers with it and the SDKs read
//! it: each message is a prelude (total length, headers length, both
//! big-endian u32, and the prelude's CRC32), string headers (name length
//! u8, name, type 7, value length u16, value), the payload, and the CRC32
//! of everything before it.

use bytes::{BufMut, Bytes, BytesMut};

/// The header value type of a string.
const STRING: u8 = 7;

/// One event message: `:message-type` event, `:event-type` and
/// `:content-type` as given.
pub(crate) fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    let mut headers = BytesMut::new();
    for (name, value) in [
        (":event-type", event_type),
        (":content-type", content_type),
        (":message-type", "event"),
    ] {
        headers.put_u8(name.len() as u8);
        headers.put_slice(name.as_bytes());
        headers.put_u8(STRING);
        headers.put_u16(value.len() as u16);
        headers.put_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut m = BytesMut::with_capacity(total);
    m.put_u32(total as u32);
    m.put_u32(headers.len() as u32);
    m.put_u32(crc32fast::hash(&m[..8]));
    m.put_slice(&headers);
    m.put_slice(payload);
    m.put_u32(crc32fast::hash(&m));
    m.freeze()
}

/// A piece of the function's answer.
pub(crate) fn payload_chunk(data: &[u8]) -> Bytes {
    event("PayloadChunk", "application/octet-stream", data)
}

/// The end of the answer: `{}`, or the error that ended it.
pub(crate) fn invoke_complete(error: Option<(&str, &str)>) -> Bytes {
    let body = match error {
        None => serde_json::json!({}),
        Some((code, details)) => serde_json::json!({"ErrorCode": code, "ErrorDetails": details}),
    };
    event("InvokeComplete", "application/json", body.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_its_lengths_and_checksums() {
        let m = payload_chunk(b"hello");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[..8])
        );
        let end = m.len() - 4;
        assert_eq!(
            u32::from_be_bytes(m[end..].try_into().unwrap()),
            crc32fast::hash(&m[..end])
        );
        assert_eq!(&m[12 + headers..end], b"hello");
        // The first header: ":event-type" = "PayloadChunk".
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
        assert_eq!(m[24], STRING);
        assert_eq!(u16::from_be_bytes([m[25], m[26]]), 12);
        assert_eq!(&m[27..39], b"PayloadChunk");
    }
}
