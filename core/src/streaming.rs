//! Lambda's response streaming, as a runtime speaks it: a response posted
//! with `Lambda-Runtime-Function-Response-Mode: streaming` (chunked), an
//! error after the first byte in the `Lambda-Runtime-Function-Error-Type`
//! and `-Body` (base64) trailers, and — for an HTTP answer — the content
//! type [`HTTP_INTEGRATION`]: a JSON prelude (`statusCode`, `headers`,
//! `cookies`), [`DELIMITER`], then the body.

use base64::Engine as _;

/// The request header that marks a streamed response.
pub const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";
/// The content type of a streamed HTTP answer (prelude, delimiter, body).
pub const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// What ends the prelude.
pub const DELIMITER: [u8; 8] = [0; 8];
/// The trailer naming an error after the first byte.
pub const ERROR_TYPE_TRAILER: &str = "lambda-runtime-function-error-type";
/// The trailer carrying its error document, base64.
pub const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";
/// Most bytes a prelude may have.
pub const MAX_PRELUDE: usize = 64 << 10;

/// Where the prelude ends in what has arrived so far: `Ok(Some((prelude,
/// body_start)))` once the delimiter is in, `Ok(None)` while it may still
/// come, and an error once `buf` passed [`MAX_PRELUDE`] without one.
pub fn split_prelude(buf: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    if let Some(at) = buf.windows(DELIMITER.len()).position(|w| w == DELIMITER) {
        return Ok(Some((&buf[..at], at + DELIMITER.len())));
    }
    if buf.len() > MAX_PRELUDE {
        return Err(format!(
            "no prelude delimiter (8 NUL bytes) within the first {MAX_PRELUDE} bytes"
        ));
    }
    Ok(None)
}

/// A whole streamed HTTP answer as the 2.0 proxy response it stands for:
/// the prelude's fields, and the body base64.
pub fn as_proxy_response(whole: &[u8]) -> Result<serde_json::Value, String> {
    let (prelude, body_start) =
        split_prelude(whole)?.ok_or("the answer ended before the prelude's delimiter (8 NUL bytes)")?;
    let mut head: serde_json::Value = if prelude.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(prelude).map_err(|e| format!("the prelude is not JSON: {e}"))?
    };
    let obj = head.as_object_mut().ok_or("the prelude is not a JSON object")?;
    obj.entry("statusCode").or_insert(200.into());
    obj.insert(
        "body".into(),
        base64::engine::general_purpose::STANDARD
            .encode(&whole[body_start..])
            .into(),
    );
    obj.insert("isBase64Encoded".into(), true.into());
    Ok(head)
}

/// The error document of the trailers: the body decoded, or a document made
/// from the type alone.
pub fn trailer_error(error_type: &str, body_b64: Option<&str>) -> Vec<u8> {
    body_b64
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .filter(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| v.is_object()))
        .unwrap_or_else(|| {
            serde_json::json!({"errorType": error_type, "errorMessage": "the function failed after it began streaming"})
                .to_string()
                .into_bytes()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_http_answer_becomes_its_proxy_response() {
        let mut whole = br#"{"statusCode":201,"headers":{"content-type":"text/plain"},"cookies":["a=1"]}"#.to_vec();
        whole.extend_from_slice(&DELIMITER);
        whole.extend_from_slice(b"hello\x00\xff");
        let v = as_proxy_response(&whole).unwrap();
        assert_eq!(v["statusCode"], 201);
        assert_eq!(v["cookies"][0], "a=1");
        assert_eq!(v["isBase64Encoded"], true);
        let body = base64::engine::general_purpose::STANDARD
            .decode(v["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(body, b"hello\x00\xff", "byte for byte, NULs in the body included");
        let mut bare = b"{}".to_vec();
        bare.extend_from_slice(&DELIMITER);
        assert_eq!(as_proxy_response(&bare).unwrap()["statusCode"], 200, "200 by default");
    }

    #[test]
    fn broken_preludes_say_what_is_wrong() {
        let with = |prelude: &[u8]| [prelude, &DELIMITER[..], b"x"].concat();
        for (whole, why) in [
            (b"{\"statusCode\":200}".to_vec(), "ended before the prelude"),
            (with(b"not json"), "not JSON"),
            (with(b"[1]"), "not a JSON object"),
            (vec![b' '; MAX_PRELUDE + 1], "no prelude delimiter"),
        ] {
            let err = as_proxy_response(&whole).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert_eq!(split_prelude(b"{\"a\"").unwrap(), None, "may still come");
    }

    #[test]
    fn trailer_errors_keep_the_functions_document() {
        let doc = br#"{"errorType":"TypeError","errorMessage":"late"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc);
        assert_eq!(trailer_error("TypeError", Some(&b64)), doc.to_vec());
        let made: serde_json::Value = serde_json::from_slice(&trailer_error("Oops", Some("@@"))).unwrap();
        assert_eq!(made["errorType"], "Oops");
    }
}
