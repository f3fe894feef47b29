//! Provider keys from `DIR/secrets.env`.
//!
//! The file is `KEY=value` lines (`#` comments, blank lines, an optional `export ` prefix and
//! optional matching single or double quotes around the value). It is refused when its mode
//! grants group or others any permission, as ssh does with private keys: a key readable by
//! every local user is already leaked, and failing loudly is how the operator learns it. A
//! refusal does not stop the daemon; providers that need a key are marked unusable with the
//! cause. A missing file means "no secrets", which suits local, keyless servers.
//!
//! Values live in [`Secret`], whose `Debug` and `Display` print `***`, so a key cannot reach a
//! log line or an answer through formatting. Parse errors name the line number, never its text.
//! Reading is blocking file I/O, so the daemon calls [`load_secrets`] on the CPU pool.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest secrets file read.
pub const MAX_SECRETS_BYTES: u64 = 64 * 1024;

/// A secret value. Formatting never shows it; [`Secret::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that sends it (a request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The loaded secrets. `Debug` lists names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: HashMap<String, Secret>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Secrets").field("names", &names).finish()
    }
}

impl Secrets {
    /// The secret called `name`.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }
    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// Add one (tests and embedders).
    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.values.insert(name.into(), value);
    }
}

/// Why the secrets file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// Group or others have some permission on the file.
    #[error("{path}: refused: mode {mode:03o} grants group/others access; run `chmod 600 {path}`")]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is larger than [`MAX_SECRETS_BYTES`].
    #[error("{path}: larger than {MAX_SECRETS_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not `KEY=value` (the line's text is not repeated: it may hold a key).
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Whether `name` is a valid variable name (`[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes).
pub fn valid_key_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parse `KEY=value` text. Errors carry the line number and a reason, never the text.
pub fn parse_secrets(text: &str) -> Result<Secrets, (usize, &'static str)> {
    let mut out = Secrets::default();
    for (ix, raw) in text.lines().enumerate() {
        let line_no = ix.saturating_add(1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err((line_no, "expected KEY=value"));
        };
        let key = key.trim();
        if !valid_key_name(key) {
            return Err((line_no, "the key is not a valid variable name"));
        }
        let value = value.trim();
        let value = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            [b'"' | b'\'', ..] => return Err((line_no, "unterminated quote")),
            _ => value,
        };
        out.insert(key, Secret::new(value));
    }
    Ok(out)
}

/// Read and parse `path`. A missing file is `Ok(empty)`. Blocking: call it on the CPU pool.
pub fn load_secrets(path: &Path) -> Result<Secrets, SecretsError> {
    let io = |e: std::io::Error| SecretsError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Secrets::default()),
        Err(e) => return Err(io(e)),
    };
    // Check the mode of the file we opened, not of whatever the path names a moment later.
    let meta = file.metadata().map_err(io)?;
    check_mode(path, &meta)?;
    if meta.len() > MAX_SECRETS_BYTES {
        return Err(SecretsError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut text = String::new();
    file.take(MAX_SECRETS_BYTES.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_SECRETS_BYTES {
        return Err(SecretsError::TooLarge {
            path: path.to_owned(),
        });
    }
    parse_secrets(&text).map_err(|(line, reason)| SecretsError::Parse {
        path: path.to_owned(),
        line,
        reason,
    })
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), SecretsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Insecure {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), SecretsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_comments_quotes_and_export() {
        let s = parse_secrets(
            "# keys\n\nOPENAI_KEY=sk-abc\nexport ANTHROPIC_KEY = \"a b\"\nSINGLE='x=y'\nEMPTY=\n",
        )
        .expect("parses");
        assert_eq!(s.len(), 4);
        assert_eq!(s.get("OPENAI_KEY").map(Secret::expose), Some("sk-abc"));
        assert_eq!(s.get("ANTHROPIC_KEY").map(Secret::expose), Some("a b"));
        assert_eq!(s.get("SINGLE").map(Secret::expose), Some("x=y"));
        assert_eq!(s.get("EMPTY").map(Secret::expose), Some(""));
    }

    #[test]
    fn parse_errors_name_the_line_not_the_text() {
        assert_eq!(
            parse_secrets("A=1\nsk-secret-without-key\n").map(|_| ()),
            Err((2, "expected KEY=value"))
        );
        assert_eq!(
            parse_secrets("1BAD=x").map(|_| ()),
            Err((1, "the key is not a valid variable name"))
        );
        assert_eq!(
            parse_secrets("A=\"open").map(|_| ()),
            Err((1, "unterminated quote"))
        );
    }

    #[test]
    fn secrets_never_format_their_values() {
        let mut s = Secrets::default();
        s.insert("OPENAI_KEY", Secret::new("sk-very-secret"));
        let shown = format!("{s:?} {} {:?}", Secret::new("sk-x"), Secret::new("sk-y"));
        assert!(!shown.contains("sk-"), "{shown}");
        assert!(shown.contains("OPENAI_KEY"));
    }

    #[cfg(unix)]
    #[test]
    fn group_or_world_readable_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.env");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"KEY=sk-secret\n").expect("write");
        drop(f);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_secrets(&path).expect_err("0644 is refused");
        assert!(matches!(err, SecretsError::Insecure { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && !msg.contains("sk-secret"),
            "{msg}"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(load_secrets(&path).is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = load_secrets(&path).expect("0600 is accepted");
        assert_eq!(s.get("KEY").map(Secret::expose), Some("sk-secret"));
    }

    #[test]
    fn a_missing_file_means_no_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = load_secrets(&dir.path().join("secrets.env")).expect("missing is fine");
        assert!(s.is_empty());
    }
}
