//! Percent-decoding of URL paths and query strings (RFC 3986), one home for
//! the route matcher and the function URL event.

/// `s` with every `%XX` decoded; None for a malformed escape or bytes that
/// are not UTF-8 once decoded. (`+` is left alone: a query's caller
/// replaces it first.)
pub fn decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_escapes_and_refuses_bad_ones() {
        assert_eq!(decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode("plain+text").as_deref(), Some("plain+text"));
        for bad in ["%", "%2", "%zz", "%FF", "%+1"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
