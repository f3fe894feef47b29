//! Topic and pattern syntax: validation, parsing and a reference matcher.
//!
//! Both are checked once, when a topic is published or a pattern subscribed, so the index never sees
//! malformed input and the publish path can split on `:` without further checks.

use std::fmt;

/// Longest topic or pattern accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;
/// Most `:`-separated segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;
/// Most concrete paths one pattern may expand to through its brace groups (`{a,b}:{c,d}` is 4).
///
/// A brace group inserts the subscription under each alternative, so the product of the group sizes is
/// the number of index entries a single subscription costs; this bound keeps that cost small.
pub const MAX_EXPANSIONS: usize = 256;

/// Why a topic or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxReason {
    /// The whole string is empty.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("has more than {max} segments")]
    TooManySegments {
        /// The limit.
        max: usize,
    },
    /// A segment between two `:` (or at either end) is empty.
    #[error("segment is empty")]
    EmptySegment,
    /// A segment holds only whitespace.
    #[error("segment is only whitespace")]
    BlankSegment,
    /// A topic segment contains a character reserved for patterns.
    #[error("contains reserved character {0:?}")]
    ReservedChar(char),
    /// `*` mixed with other characters in one segment (`foo*`).
    #[error("a wildcard `*` must be the whole segment")]
    PartialWildcard,
    /// A brace group that does not span the whole segment (`a{b,c}`), or a stray `}` / `,`.
    #[error("a brace group `{{...}}` must be the whole segment")]
    PartialBrace,
    /// `{}`.
    #[error("brace group is empty")]
    EmptyBraces,
    /// `{a,}` or `{,a}`.
    #[error("brace group has an empty alternative")]
    EmptyAlternative,
    /// `{a,*}` or `{a,{b}}`.
    #[error("brace alternatives must be plain literals (no wildcard or nested braces)")]
    NonLiteralAlternative,
    /// The brace groups multiply out to more than [`MAX_EXPANSIONS`] paths.
    #[error("brace groups expand to more than {max} topics")]
    TooManyExpansions {
        /// The limit.
        max: usize,
    },
}

/// A topic that cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic {topic:?} at segment {segment} (byte {position}): {reason}")]
pub struct TopicError {
    /// The topic (shortened to its first 64 bytes when longer).
    pub topic: String,
    /// Zero-based index of the offending segment.
    pub segment: usize,
    /// Byte offset of the offending segment.
    pub position: usize,
    /// What is wrong.
    pub reason: SyntaxReason,
}

/// A pattern that cannot be subscribed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?} at segment {segment} (byte {position}): {reason}")]
pub struct PatternError {
    /// The pattern (shortened to its first 64 bytes when longer).
    pub pattern: String,
    /// Zero-based index of the offending segment.
    pub segment: usize,
    /// Byte offset of the offending segment.
    pub position: usize,
    /// What is wrong.
    pub reason: SyntaxReason,
}

/// Shortens outside input before it is copied into an error.
fn excerpt(s: &str) -> String {
    const KEEP: usize = 64;
    if s.len() <= KEEP {
        return s.to_owned();
    }
    let mut end = KEEP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Checks the parts shared by topics and patterns: non-empty, length and segment count.
/// Returns `(segment, position, reason)` on failure.
fn check_shape(s: &str) -> Result<(), (usize, usize, SyntaxReason)> {
    if s.is_empty() {
        return Err((0, 0, SyntaxReason::Empty));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err((
            0,
            0,
            SyntaxReason::TooLong {
                len: s.len(),
                max: MAX_TOPIC_LEN,
            },
        ));
    }
    if s.split(':').nth(MAX_SEGMENTS).is_some() {
        return Err((
            MAX_SEGMENTS,
            0,
            SyntaxReason::TooManySegments { max: MAX_SEGMENTS },
        ));
    }
    Ok(())
}

/// Checks one literal segment (a topic segment or a brace alternative).
///
/// Byte-level on purpose: this runs for every publish, and the reserved characters are all ASCII.
fn check_literal(seg: &str) -> Result<(), SyntaxReason> {
    let bytes = seg.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(SyntaxReason::EmptySegment);
    };
    for &b in bytes {
        if matches!(b, b'*' | b'{' | b'}' | b',') {
            return Err(SyntaxReason::ReservedChar(char::from(b)));
        }
    }
    // A whitespace-only segment starts with ASCII whitespace or a multi-byte (possibly Unicode
    // whitespace) character; only then is the full Unicode-aware check needed.
    if (first.is_ascii_whitespace() || !first.is_ascii()) && seg.trim().is_empty() {
        return Err(SyntaxReason::BlankSegment);
    }
    Ok(())
}

/// Validates a topic: `:`-separated, non-empty segments, no `*{},`, no whitespace-only segment, at most
/// [`MAX_TOPIC_LEN`] bytes and [`MAX_SEGMENTS`] segments.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    let fail = |segment, position, reason| TopicError {
        topic: excerpt(topic),
        segment,
        position,
        reason,
    };
    check_shape(topic).map_err(|(s, p, r)| fail(s, p, r))?;
    let mut at = 0;
    for (i, seg) in topic.split(':').enumerate() {
        check_literal(seg).map_err(|r| fail(i, at, r))?;
        at += seg.len() + 1;
    }
    Ok(())
}

/// Byte range of a literal inside the pattern text (patterns are at most 1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: u16,
    end: u16,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        // Both are <= MAX_TOPIC_LEN, checked before any span is made.
        let clamp = |x: usize| u16::try_from(x).unwrap_or(u16::MAX);
        Self {
            start: clamp(start),
            end: clamp(end),
        }
    }

    /// The literal's text within `raw` (the pattern it was parsed from).
    pub(crate) fn of(self, raw: &str) -> &str {
        raw.get(usize::from(self.start)..usize::from(self.end))
            .unwrap_or_default()
    }
}

/// One parsed pattern segment. Literals are spans into the pattern text: parsing allocates only the
/// text, the segment list and one list per brace group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches exactly this text.
    Literal(Span),
    /// `*` not in last position: matches exactly one segment.
    Star,
    /// `{a,b,c}`: matches any listed literal (deduplicated, in written order).
    AnyOf(Box<[Span]>),
}

/// A parsed, validated subscription pattern.
///
/// A trailing `*` is not stored as a segment: it sets [`Pattern::rest`], meaning "one or more further
/// segments". The pattern `*` alone is therefore zero segments plus `rest`, and matches every topic.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: Box<str>,
    segments: Box<[Segment]>,
    rest: bool,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.raw).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Pattern {
    /// Parses and validates a pattern.
    ///
    /// Segments are literals, `*` (one segment; as the last segment: one or more), or a brace group
    /// `{a,b}` spanning the whole segment.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let fail = |segment, position, reason| PatternError {
            pattern: excerpt(pattern),
            segment,
            position,
            reason,
        };
        check_shape(pattern).map_err(|(s, p, r)| fail(s, p, r))?;
        let mut segs = Vec::new();
        let mut rest = false;
        let mut expansions: usize = 1;
        let mut start = 0;
        for i in 0.. {
            let end = pattern[start..]
                .find(':')
                .map_or(pattern.len(), |p| start + p);
            let last = end == pattern.len();
            let parsed = parse_segment(pattern, start, end).map_err(|r| fail(i, start, r))?;
            match parsed {
                Segment::Star if last => rest = true,
                Segment::AnyOf(ref alts) => {
                    expansions = expansions.saturating_mul(alts.len());
                    if expansions > MAX_EXPANSIONS {
                        return Err(fail(
                            i,
                            start,
                            SyntaxReason::TooManyExpansions {
                                max: MAX_EXPANSIONS,
                            },
                        ));
                    }
                    segs.push(parsed);
                }
                other => segs.push(other),
            }
            if last {
                break;
            }
            start = end + 1;
        }
        Ok(Self {
            raw: pattern.into(),
            segments: segs.into_boxed_slice(),
            rest,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The text the segments' spans point into.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the pattern ends in a "rest" wildcard (trailing `*`).
    pub(crate) fn rest(&self) -> bool {
        self.rest
    }

    /// Reference matcher: recursive over the segment slices, no index. The bus never calls it on the
    /// publish path; it exists for tests, diagnostics and as the benchmark baseline.
    pub fn matches(&self, topic: &str) -> bool {
        let topic: Vec<&str> = topic.split(':').collect();
        match_slices(&self.raw, &self.segments, self.rest, &topic)
    }
}

fn match_slices(raw: &str, pat: &[Segment], rest: bool, topic: &[&str]) -> bool {
    match (pat.split_first(), topic.split_first()) {
        (None, None) => !rest,
        (None, Some(_)) => rest,
        (Some(_), None) => false,
        (Some((p, pat_tail)), Some((t, topic_tail))) => {
            let hit = match p {
                Segment::Literal(l) => l.of(raw) == *t,
                Segment::Star => true,
                Segment::AnyOf(alts) => alts.iter().any(|a| a.of(raw) == *t),
            };
            hit && match_slices(raw, pat_tail, rest, topic_tail)
        }
    }
}

/// Parses `raw[start..end]`.
fn parse_segment(raw: &str, start: usize, end: usize) -> Result<Segment, SyntaxReason> {
    let seg = &raw[start..end];
    if seg.is_empty() {
        return Err(SyntaxReason::EmptySegment);
    }
    if seg == "*" {
        return Ok(Segment::Star);
    }
    if let Some(inner) = seg.strip_prefix('{') {
        let Some(inner) = inner.strip_suffix('}') else {
            return Err(SyntaxReason::PartialBrace);
        };
        if inner.is_empty() {
            return Err(SyntaxReason::EmptyBraces);
        }
        let mut alts: Vec<Span> = Vec::new();
        let mut at = start + 1;
        for alt in inner.split(',') {
            if alt.is_empty() {
                return Err(SyntaxReason::EmptyAlternative);
            }
            if alt.bytes().any(|b| matches!(b, b'*' | b'{' | b'}')) {
                return Err(SyntaxReason::NonLiteralAlternative);
            }
            check_literal(alt)?;
            if !alts.iter().any(|a| a.of(raw) == alt) {
                alts.push(Span::new(at, at + alt.len()));
            }
            at += alt.len() + 1;
        }
        return Ok(match alts.as_slice() {
            [one] => Segment::Literal(*one),
            _ => Segment::AnyOf(alts.into_boxed_slice()),
        });
    }
    for b in seg.bytes() {
        match b {
            b'*' => return Err(SyntaxReason::PartialWildcard),
            b'{' | b'}' | b',' => return Err(SyntaxReason::PartialBrace),
            _ => {}
        }
    }
    check_literal(seg)?;
    Ok(Segment::Literal(Span::new(start, end)))
}
