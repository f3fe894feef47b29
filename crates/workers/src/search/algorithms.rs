//! The stateless algorithms of `search/execute` (and `search/vector`), with the original's
//! semantics and result shape.
//!
//! - **bm25**: Okapi BM25 over the tokens of [`super::tokenize`]. For each query token *with
//!   repetition* (a query `rust rust` counts `rust` twice, as in the original),
//!   `score(d) += idf(t) · tf·(k1+1) / (tf + k1·(1 − b + b·|d|/avgdl))` where
//!   `idf(t) = ln((N − df + 0.5)/(df + 0.5) + 1)`, `|d|` is the document's token count and `avgdl`
//!   the mean token count of the corpus. Scores are then divided by the maximum (when it is > 0),
//!   so the best document scores 1.0. Defaults k1 = 1.2, b = 0.75.
//! - **bow**: Jaccard similarity `|Q ∩ D| / |Q ∪ D|` of the *sets* of tokens of query and
//!   document, after removing the original's English stop words. Not renormalised (already 0–1).
//! - **cosine** (text): despite its name, and exactly as in the original, the Jaccard similarity
//!   of the sets of lowercased **whitespace-separated** words (punctuation kept, no minimum
//!   length). Real cosine similarity is `search/vector`.
//! - **vector**: cosine similarity of dense vectors, optionally L2-normalised first, with scores
//!   below `threshold` set to 0. Vectors of a different length than the query score 0.
//!
//! `rankedIndices` sorts by score descending; ties keep corpus order (a stable sort).

use std::collections::{HashMap, HashSet};

use daemonhost_protocol::params::{ParamError, ParamType};
use serde_json::{Map, Value, json};

use super::tokenize::{MIN_TOKEN_LEN, for_each_token, lower};

/// Scores in corpus order plus the indices ranked by descending score.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutput {
    /// One score per corpus document, in corpus order.
    pub scores: Vec<f64>,
    /// Corpus indices by descending score (stable for ties).
    pub ranked_indices: Vec<usize>,
}

impl SearchOutput {
    fn from_scores(scores: Vec<f64>) -> Self {
        let mut ranked: Vec<usize> = (0..scores.len()).collect();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        SearchOutput {
            scores,
            ranked_indices: ranked,
        }
    }
}

/// The three text algorithms of `search/execute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Jaccard over token sets without stop words.
    Bow,
    /// Okapi BM25, max-normalised.
    Bm25,
    /// Jaccard over whitespace words (the original's "cosine").
    Cosine,
}

impl Algorithm {
    /// Every algorithm, in the order `search/list` reports them.
    pub const ALL: [Algorithm; 3] = [Algorithm::Bow, Algorithm::Bm25, Algorithm::Cosine];

    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Bow => "bow",
            Algorithm::Bm25 => "bm25",
            Algorithm::Cosine => "cosine",
        }
    }

    /// Parse a wire name.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Parameter names (what `search/params` lists and `search/execute` `params` accepts).
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            Algorithm::Bow => &["case_insensitive", "min_term_length"],
            Algorithm::Bm25 => &["k1", "b", "case_insensitive"],
            Algorithm::Cosine => &["normalize", "threshold"],
        }
    }
}

/// Tunable parameters of all algorithms, with the original's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmParams {
    /// BM25 term-frequency saturation (1.2).
    pub k1: f64,
    /// BM25 length normalisation (0.75).
    pub b: f64,
    /// Lowercase before tokenizing (true).
    pub case_insensitive: bool,
    /// BoW minimum token length in bytes (2).
    pub min_term_length: usize,
    /// Vector search: L2-normalise first (true). Accepted but unused by text cosine.
    pub normalize: bool,
    /// Vector search: scores below are set to 0 (0.0). Accepted but unused by text cosine.
    pub threshold: f64,
}

impl Default for AlgorithmParams {
    fn default() -> Self {
        AlgorithmParams {
            k1: 1.2,
            b: 0.75,
            case_insensitive: true,
            min_term_length: MIN_TOKEN_LEN,
            normalize: true,
            threshold: 0.0,
        }
    }
}

impl AlgorithmParams {
    /// Apply `{name: value}` overrides valid for `algorithm`. A name `algorithm` does not have is
    /// [`ParamError::Invalid`] (`validation`), a value of the wrong type [`ParamError::WrongType`]
    /// (`bad_request`); the caller names the object (`params.k1: must be a number`).
    pub fn apply(
        &mut self,
        algorithm: Algorithm,
        overrides: &Map<String, Value>,
    ) -> Result<(), ParamError> {
        for (name, value) in overrides {
            if !algorithm.param_names().contains(&name.as_str()) {
                return Err(ParamError::invalid(
                    name.chars().take(64).collect::<String>(),
                    format!(
                        "unknown parameter for {} (known: {})",
                        algorithm.name(),
                        algorithm.param_names().join(", ")
                    ),
                ));
            }
            let wrong = |ty| ParamError::wrong_type(name.as_str(), ty);
            match name.as_str() {
                "k1" => self.k1 = value.as_f64().ok_or_else(|| wrong(ParamType::Number))?,
                "b" => self.b = value.as_f64().ok_or_else(|| wrong(ParamType::Number))?,
                "case_insensitive" => {
                    self.case_insensitive =
                        value.as_bool().ok_or_else(|| wrong(ParamType::Boolean))?;
                }
                "min_term_length" => {
                    let n = value
                        .as_u64()
                        .ok_or_else(|| wrong(ParamType::UnsignedInteger))?;
                    self.min_term_length = usize::try_from(n).unwrap_or(usize::MAX);
                }
                "normalize" => {
                    self.normalize = value.as_bool().ok_or_else(|| wrong(ParamType::Boolean))?
                }
                "threshold" => {
                    self.threshold = value.as_f64().ok_or_else(|| wrong(ParamType::Number))?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `{name: value}` of `algorithm`'s parameters.
    pub fn values(&self, algorithm: Algorithm) -> Value {
        let mut m = Map::new();
        for &name in algorithm.param_names() {
            let v = match name {
                "k1" => json!(self.k1),
                "b" => json!(self.b),
                "case_insensitive" => json!(self.case_insensitive),
                "min_term_length" => json!(self.min_term_length),
                "normalize" => json!(self.normalize),
                "threshold" => json!(self.threshold),
                _ => Value::Null,
            };
            m.insert(name.to_owned(), v);
        }
        Value::Object(m)
    }
}

/// Run `algorithm` over `corpus`.
pub fn execute<S: AsRef<str>>(
    algorithm: Algorithm,
    query: &str,
    corpus: &[S],
    params: &AlgorithmParams,
) -> SearchOutput {
    match algorithm {
        Algorithm::Bm25 => bm25(query, corpus, params.k1, params.b, params.case_insensitive),
        Algorithm::Bow => bow(
            query,
            corpus,
            params.case_insensitive,
            params.min_term_length,
        ),
        Algorithm::Cosine => cosine_text(query, corpus),
    }
}

/// The BM25 inverse document frequency.
#[inline]
pub fn bm25_idf(n: usize, df: usize) -> f64 {
    let n = n as f64;
    let df = df as f64;
    ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
}

/// One term's BM25 contribution (without the idf factor).
#[inline]
pub(crate) fn bm25_tf_part(tf: f64, doc_len: f64, avg_len: f64, k1: f64, b: f64) -> f64 {
    (tf * (k1 + 1.0)) / (tf + k1 * (1.0 - b + b * (doc_len / avg_len)))
}

/// Raw (unnormalised) BM25 scores in corpus order. This is also the brute-force reference the
/// incremental [`super::MessageIndex`] is tested against.
pub fn bm25_raw_scores<S: AsRef<str>>(
    query: &str,
    corpus: &[S],
    k1: f64,
    b: f64,
    case_insensitive: bool,
) -> Vec<f64> {
    let n = corpus.len();
    if n == 0 {
        return Vec::new();
    }
    let mut tfs: Vec<HashMap<String, usize>> = Vec::with_capacity(n);
    let mut lens = Vec::with_capacity(n);
    for doc in corpus {
        let lowered = lower(doc.as_ref(), case_insensitive);
        let mut tf: HashMap<String, usize> = HashMap::new();
        let mut len = 0usize;
        for_each_token(&lowered, MIN_TOKEN_LEN, |t| {
            len += 1;
            *tf.entry(t.to_owned()).or_insert(0) += 1;
        });
        tfs.push(tf);
        lens.push(len);
    }
    let avg = lens.iter().sum::<usize>() as f64 / n as f64;
    let q_lowered = lower(query, case_insensitive);
    let mut query_terms = Vec::new();
    for_each_token(&q_lowered, MIN_TOKEN_LEN, |t| query_terms.push(t));
    let idfs: Vec<f64> = query_terms
        .iter()
        .map(|t| bm25_idf(n, tfs.iter().filter(|m| m.contains_key(*t)).count()))
        .collect();
    tfs.iter()
        .zip(&lens)
        .map(|(tf, &len)| {
            let mut score = 0.0;
            for (t, idf) in query_terms.iter().zip(&idfs) {
                if let Some(&f) = tf.get(*t) {
                    score += idf * bm25_tf_part(f as f64, len as f64, avg, k1, b);
                }
            }
            score
        })
        .collect()
}

/// BM25, max-normalised to [0, 1].
pub fn bm25<S: AsRef<str>>(
    query: &str,
    corpus: &[S],
    k1: f64,
    b: f64,
    case_insensitive: bool,
) -> SearchOutput {
    let mut scores = bm25_raw_scores(query, corpus, k1, b, case_insensitive);
    let max = scores.iter().copied().fold(0.0_f64, f64::max);
    if max > 0.0 {
        for s in &mut scores {
            *s /= max;
        }
    }
    SearchOutput::from_scores(scores)
}

/// The original's BoW stop words.
pub const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had",
    "do", "does", "did", "will", "would", "could", "should", "may", "might", "must", "shall",
    "can", "need", "dare", "ought", "used", "to", "of", "in", "for", "on", "with", "at", "by",
    "from", "as", "into", "through", "during", "before", "after", "above", "below", "between",
    "under", "again", "further", "then", "once", "here", "there", "when", "where", "why", "how",
    "all", "each", "few", "more", "most", "other", "some", "such", "no", "nor", "not", "only",
    "own", "same", "so", "than", "too", "very", "just", "and", "but", "if", "or", "because",
    "until", "while", "this", "that", "these", "those", "it", "its",
];

fn bow_set(text: &str, case_insensitive: bool, min_len: usize) -> HashSet<String> {
    let lowered = lower(text, case_insensitive);
    let mut set = HashSet::new();
    for_each_token(&lowered, min_len, |t| {
        if !STOP_WORDS.contains(&t) {
            set.insert(t.to_owned());
        }
    });
    set
}

fn jaccard(q: &HashSet<String>, d: &HashSet<String>) -> f64 {
    if q.is_empty() || d.is_empty() {
        return 0.0;
    }
    let inter = q.intersection(d).count();
    let union = q.len() + d.len() - inter;
    inter as f64 / union as f64
}

/// Bag of words: Jaccard over stop-word-free token sets.
pub fn bow<S: AsRef<str>>(
    query: &str,
    corpus: &[S],
    case_insensitive: bool,
    min_len: usize,
) -> SearchOutput {
    let q = bow_set(query, case_insensitive, min_len);
    let scores = corpus
        .iter()
        .map(|d| jaccard(&q, &bow_set(d.as_ref(), case_insensitive, min_len)))
        .collect();
    SearchOutput::from_scores(scores)
}

fn word_set(text: &str) -> HashSet<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The original's text "cosine": Jaccard over lowercased whitespace words.
pub fn cosine_text<S: AsRef<str>>(query: &str, corpus: &[S]) -> SearchOutput {
    let q = word_set(query);
    let scores = corpus
        .iter()
        .map(|d| jaccard(&q, &word_set(d.as_ref())))
        .collect();
    SearchOutput::from_scores(scores)
}

fn l2_normalize(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

/// Cosine similarity of dense vectors.
pub fn cosine_vectors(
    query: &[f64],
    corpus: &[Vec<f64>],
    normalize: bool,
    threshold: f64,
) -> SearchOutput {
    let mut q = query.to_vec();
    if normalize {
        l2_normalize(&mut q);
    }
    let scores = corpus
        .iter()
        .map(|v| {
            if v.len() != q.len() || q.is_empty() {
                return 0.0;
            }
            let mut c = v.clone();
            if normalize {
                l2_normalize(&mut c);
            }
            let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
            for (a, b) in q.iter().zip(&c) {
                dot += a * b;
                na += a * a;
                nb += b * b;
            }
            let den = (na * nb).sqrt();
            let sim = if den == 0.0 { 0.0 } else { dot / den };
            if sim >= threshold { sim } else { 0.0 }
        })
        .collect();
    SearchOutput::from_scores(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BM25 against the formula on a fixed corpus, computed by hand.
    ///
    /// Corpus (tokens after the tokenizer; `in` and `the` are kept, no stop words in BM25):
    /// ```text
    /// d0 "Rust async runtime"              [rust async runtime]              |d0| = 3
    /// d1 "rust, Rust memory-safety"        [rust rust memory safety]         |d1| = 4
    /// d2 "Python async!"                   [python async]                    |d2| = 2
    /// d3 "the async async runtime in rust" [the async async runtime in rust] |d3| = 6
    /// d4 "cooking recipes a b c"           [cooking recipes]                 |d4| = 2 (1-char dropped)
    /// ```
    /// N = 5, avgdl = (3+4+2+6+2)/5 = 17/5 = 3.4. Query "rust async".
    /// df(rust) = 3 (d0 d1 d3), df(async) = 3 (d0 d2 d3), so both
    /// idf = ln((5 − 3 + 0.5)/(3 + 0.5) + 1) = ln(2.5/3.5 + 1) = ln(1.7142857) = 0.5389965.
    /// With k1 = 1.2, b = 0.75: K(|d|) = 1.2·(0.25 + 0.75·|d|/3.4), part(tf) = 2.2·tf/(tf + K).
    /// ```text
    /// d0: K = 1.2·(0.25 + 0.6617647) = 1.0941176; rust tf1 → 2.2/2.0941176 = 1.0505618,
    ///     async tf1 → 1.0505618; score = 0.5389965·2.1011236 = 1.1324983
    /// d1: K = 1.2·(0.25 + 0.8823529) = 1.3588235; rust tf2 → 4.4/3.3588235 = 1.3099825;
    ///     score = 0.5389965·1.3099825 = 0.7060760
    /// d2: K = 1.2·(0.25 + 0.4411765) = 0.8294118; async tf1 → 2.2/1.8294118 = 1.2025723;
    ///     score = 0.5389965·1.2025723 = 0.6481823
    /// d3: K = 1.2·(0.25 + 1.3235294) = 1.8882353; rust tf1 → 2.2/2.8882353 = 0.7617108,
    ///     async tf2 → 4.4/3.8882353 = 1.1316188; score = 0.5389965·1.8933296 = 1.0204980
    /// d4: 0
    /// ```
    /// Ranking: d0 > d3 > d1 > d2 > d4 (the short d0 beats d3 despite d3's tf 2 on async).
    /// Normalised by max 1.1324983: [1, 0.6234676, 0.5723473, 0.9011034, 0].
    #[test]
    fn bm25_matches_hand_computed_formula() {
        let corpus = [
            "Rust async runtime",
            "rust, Rust memory-safety",
            "Python async!",
            "the async async runtime in rust",
            "cooking recipes a b c",
        ];
        let raw = bm25_raw_scores("rust async", &corpus, 1.2, 0.75, true);
        let expected_raw = [1.1324983, 0.7060760, 0.6481823, 1.0204980, 0.0];
        for (got, want) in raw.iter().zip(expected_raw) {
            assert!((got - want).abs() < 1e-6, "raw {raw:?}");
        }
        let out = bm25("rust async", &corpus, 1.2, 0.75, true);
        let expected = [1.0, 0.6234676, 0.5723473, 0.9011034, 0.0];
        for (got, want) in out.scores.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "normalised {:?}", out.scores);
        }
        assert_eq!(out.ranked_indices, [0, 3, 1, 2, 4]);
        assert!((bm25_idf(5, 3) - 0.5389965).abs() < 1e-7);
    }

    #[test]
    fn bm25_handles_empty_corpora_no_match_repeated_terms_and_tokenless_documents() {
        let empty: [&str; 0] = [];
        assert_eq!(bm25("x", &empty, 1.2, 0.75, true).scores, Vec::<f64>::new());
        // No match anywhere: all zero, order kept.
        let out = bm25("zzz", &["aa bb", "cc"], 1.2, 0.75, true);
        assert_eq!(out.scores, [0.0, 0.0]);
        assert_eq!(out.ranked_indices, [0, 1]);
        // Repeated query terms count twice (as in the original): same ranking, raw doubles.
        let once = bm25_raw_scores("aa", &["aa bb", "cc"], 1.2, 0.75, true);
        let twice = bm25_raw_scores("aa aa", &["aa bb", "cc"], 1.2, 0.75, true);
        assert!((twice[0] - 2.0 * once[0]).abs() < 1e-12);
        // Documents without tokens do not produce NaN.
        let out = bm25("aa", &["", "!"], 1.2, 0.75, true);
        assert_eq!(out.scores, [0.0, 0.0]);
    }

    #[test]
    fn bow_is_jaccard_without_stop_words() {
        // Q = {rust, runtime}; d0 = {rust, runtime, fast} → 2/3; d1 = {runtime} → 1/2;
        // d2 = {} after stop words → 0.
        let out = bow(
            "the Rust runtime",
            &["a fast rust runtime", "runtime", "the and of"],
            true,
            2,
        );
        assert_eq!(out.scores, [2.0 / 3.0, 0.5, 0.0]);
        assert_eq!(out.ranked_indices, [0, 1, 2]);
    }

    #[test]
    fn cosine_text_is_whitespace_jaccard() {
        // Words keep punctuation: "rust," differs from "rust".
        let out = cosine_text("Rust is fast", &["rust is fast", "rust, is", "slow"]);
        assert_eq!(out.scores, [1.0, 1.0 / 4.0, 0.0]);
    }

    #[test]
    fn cosine_ranks_by_angle_and_zeroes_mismatched_lengths_and_scores_below_the_threshold() {
        let out = cosine_vectors(
            &[1.0, 0.0, 0.0],
            &[
                vec![1.0, 0.0, 0.0],
                vec![0.0, 1.0, 0.0],
                vec![0.7, 0.7, 0.0],
                vec![1.0],
            ],
            true,
            0.0,
        );
        assert_eq!(out.ranked_indices[0], 0);
        assert!((out.scores[2] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(out.scores[3], 0.0);
        let out = cosine_vectors(&[1.0, 0.0], &[vec![0.7, 0.7]], true, 0.9);
        assert_eq!(out.scores, [0.0]);
    }

    #[test]
    fn bm25_params_apply_and_a_param_of_another_algorithm_is_refused() {
        let mut p = AlgorithmParams::default();
        let o = json!({"k1": 2.0, "b": 0.5});
        p.apply(Algorithm::Bm25, o.as_object().expect("obj"))
            .expect("ok");
        assert_eq!((p.k1, p.b), (2.0, 0.5));
        let bad = json!({"min_term_length": 3});
        assert!(
            p.apply(Algorithm::Bm25, bad.as_object().expect("obj"))
                .is_err()
        );
        assert_eq!(
            AlgorithmParams::default().values(Algorithm::Bm25),
            json!({"k1": 1.2, "b": 0.75, "case_insensitive": true})
        );
    }
}
