//! The original search module's tokenizer, reproduced exactly.
//!
//! Rules (from the original `Bm25Algorithm::tokenize`):
//! 1. lowercase the whole text with Unicode rules (`str::to_lowercase`), unless case-sensitive;
//! 2. split on every char that is not alphanumeric in the Unicode sense (`char::is_alphanumeric`),
//!    so `don't` → `don`, `t` and `genome/paging-register` → `genome`, `paging`, `register`;
//! 3. keep pieces whose length **in UTF-8 bytes** is at least `min_len` (2 by default). The
//!    original measures `str::len`, so a single non-ASCII letter such as `é` (2 bytes) is kept
//!    while a single ASCII letter is dropped. We keep that quirk for score parity.
//!
//! No stemming and no stop words (BoW adds its stop-word list on top).

use std::borrow::Cow;

/// Default minimum token length in bytes.
pub const MIN_TOKEN_LEN: usize = 2;

/// Lowercase `text` (cheaply for ASCII, which gives the same result as `to_lowercase`).
pub(crate) fn lower(text: &str, case_insensitive: bool) -> Cow<'_, str> {
    if !case_insensitive {
        return Cow::Borrowed(text);
    }
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// Call `f` for every token of already-lowercased `text`, in order.
pub(crate) fn for_each_token<'a>(text: &'a str, min_len: usize, mut f: impl FnMut(&'a str)) {
    if text.is_ascii() {
        // Fast path: for ASCII, `char::is_alphanumeric` is `is_ascii_alphanumeric`.
        let bytes = text.as_bytes();
        let mut start = None;
        for (i, b) in bytes.iter().enumerate() {
            if b.is_ascii_alphanumeric() {
                if start.is_none() {
                    start = Some(i);
                }
            } else if let Some(s) = start.take()
                && i - s >= min_len
            {
                f(&text[s..i]);
            }
        }
        if let Some(s) = start
            && bytes.len() - s >= min_len
        {
            f(&text[s..]);
        }
    } else {
        for piece in text.split(|c: char| !c.is_alphanumeric()) {
            if piece.len() >= min_len {
                f(piece);
            }
        }
    }
}

/// Tokenize with the default rules (lowercase, min length 2).
pub fn tokenize(text: &str) -> Vec<String> {
    tokenize_with(text, true, MIN_TOKEN_LEN)
}

/// Tokenize with explicit case handling and minimum byte length.
pub fn tokenize_with(text: &str, case_insensitive: bool, min_len: usize) -> Vec<String> {
    let lowered = lower(text, case_insensitive);
    let mut out = Vec::new();
    for_each_token(&lowered, min_len, |t| out.push(t.to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lowercases_and_drops_short() {
        assert_eq!(
            tokenize("Use genome/paging-register with personaId"),
            ["use", "genome", "paging", "register", "with", "personaid"]
        );
        assert_eq!(tokenize("a I x9 don't"), ["x9", "don"]);
        assert_eq!(tokenize(""), Vec::<String>::new());
        assert_eq!(tokenize("  ,,, !! "), Vec::<String>::new());
        assert_eq!(tokenize("hello_world"), ["hello", "world"]);
        assert_eq!(tokenize("v2.0 BETA"), ["v2", "beta"]);
        assert_eq!(tokenize("end."), ["end"]);
    }

    #[test]
    fn unicode_rules_match_the_original() {
        // Unicode lowercase and alphanumerics; a single 2-byte letter is kept (byte length).
        assert_eq!(tokenize("Ünïcode É ok"), ["ünïcode", "é", "ok"]);
        assert_eq!(tokenize("日本語テキスト"), ["日本語テキスト"]);
        assert_eq!(tokenize("naïve—café"), ["naïve", "café"]);
        // Final sigma follows `str::to_lowercase`.
        assert_eq!(tokenize("ΟΔΟΣ"), ["\u{3bf}\u{3b4}\u{3bf}\u{3c2}"]);
    }

    #[test]
    fn case_sensitive_and_min_len() {
        assert_eq!(tokenize_with("Ab cD e", false, 2), ["Ab", "cD"]);
        assert_eq!(tokenize_with("Ab cD e", true, 1), ["ab", "cd", "e"]);
        assert_eq!(tokenize_with("abc abcd", true, 4), ["abcd"]);
    }

    #[test]
    fn ascii_fast_path_equals_generic_path() {
        let text = "The quick-brown fox; jumps_over 42 lazy dogs!! x y zz";
        let lowered = text.to_lowercase();
        let generic: Vec<&str> = lowered
            .split(|c: char| !c.is_alphanumeric())
            .filter(|s| s.len() >= 2)
            .collect();
        let mut fast = Vec::new();
        for_each_token(&lowered, 2, |t| fast.push(t));
        assert_eq!(fast, generic);
    }
}
