//! The same-origin path of a URL: `/proxy/<percent-encoded-url>`, what `proxy/url` answers and
//! what the web listener serves by calling `proxy/fetch`.
//!
//! **Encoding** ([`encode_path`]): every byte of the URL's UTF-8 except the unreserved
//! characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` (uppercase hex), so the whole
//! URL is one path segment: its `/`, `?`, `#`, `%`, `:` and `&` are all escaped, and no
//! browser or router can split, normalise (`..`) or cut it.
//!
//! **Decoding** ([`decode_path`]): the inverse. It takes the request's path as it arrived, raw
//! (not a router's already-decoded parameter: decoding twice would turn a `%2525` in the URL
//! into `%`) and without the query string. Every `%XX` is decoded; a `%` not followed by two
//! hex digits is an error; other characters are taken as they are, so a hand-written
//! `/proxy/https://example.com/` works too. The result must be UTF-8. For every string `s`,
//! `decode_path(&encode_path(s)) == Ok(s)`.

use crate::error::ProxyError;

/// The prefix of every proxied path.
pub const PATH_PREFIX: &str = "/proxy/";

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `/proxy/` followed by `url` percent-encoded as one path segment.
pub fn encode_path(url: &str) -> String {
    let mut out = String::with_capacity(PATH_PREFIX.len() + url.len() * 3);
    out.push_str(PATH_PREFIX);
    for &b in url.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The URL inside a path made by [`encode_path`] (see the module docs for what is accepted).
pub fn decode_path(path: &str) -> Result<String, ProxyError> {
    let bad = |reason: String| ProxyError::BadPath { reason };
    let rest = path
        .strip_prefix(PATH_PREFIX)
        .ok_or_else(|| bad(format!("must start with '{PATH_PREFIX}'")))?;
    if rest.is_empty() {
        return Err(bad(format!("no URL after '{PATH_PREFIX}'")));
    }
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&h| hex_value(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex_value(l)));
            match pair {
                Some((h, l)) => out.push((h << 4) | l),
                None => {
                    return Err(bad(format!(
                        "'%' at byte {} of the encoded URL is not followed by two hex digits",
                        i
                    )));
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("the decoded URL is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_url_is_one_segment_with_every_reserved_character_escaped() {
        let p = encode_path("https://example.com/a b/c?d=1&e=%2F#f");
        assert_eq!(
            p,
            "/proxy/https%3A%2F%2Fexample.com%2Fa%20b%2Fc%3Fd%3D1%26e%3D%252F%23f"
        );
        assert_eq!(p.matches('/').count(), 2, "{p}");
        assert_eq!(
            decode_path(&p).expect("decode"),
            "https://example.com/a b/c?d=1&e=%2F#f"
        );
        assert_eq!(encode_path("é"), "/proxy/%C3%A9");
    }

    #[test]
    fn decoding_takes_hand_written_paths_and_refuses_broken_escapes() {
        assert_eq!(
            decode_path("/proxy/https://example.com/x").expect("raw"),
            "https://example.com/x"
        );
        assert_eq!(decode_path("/proxy/%c3%a9").expect("lowercase hex"), "é");
        for (path, why) in [
            ("/other/x", "must start with '/proxy/'"),
            ("proxy/x", "must start with"),
            ("/proxy/", "no URL"),
            ("/proxy/%", "not followed by two hex digits"),
            ("/proxy/%4", "not followed by two hex digits"),
            ("/proxy/%zz", "not followed by two hex digits"),
            ("/proxy/%FF", "not UTF-8"),
        ] {
            let e = decode_path(path).expect_err(path);
            assert!(e.to_string().contains(why), "{path}: {e}");
        }
    }

    proptest! {
        #[test]
        fn decode_path_inverts_encode_path_for_any_string(s in any::<String>()) {
            prop_assume!(!s.is_empty());
            let p = encode_path(&s);
            prop_assert!(p.starts_with(PATH_PREFIX));
            prop_assert!(p[PATH_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            prop_assert_eq!(decode_path(&p), Ok(s));
        }

        #[test]
        fn decode_path_inverts_encode_path_for_urls(
            host in "[a-z0-9-]{1,20}(\\.[a-z]{2,6}){1,2}",
            path in "(/[ -~]{0,12}){0,4}",
            query in proptest::option::of("[ -~]{0,30}"),
        ) {
            let url = match query {
                Some(q) => format!("https://{host}{path}?{q}"),
                None => format!("https://{host}{path}"),
            };
            prop_assert_eq!(decode_path(&encode_path(&url)), Ok(url));
        }

        #[test]
        fn decode_path_never_panics(s in any::<String>()) {
            let _ = decode_path(&format!("{PATH_PREFIX}{s}"));
        }
    }
}
