//! `daemonhost call COMMAND [params]`: one command, pretty JSON out, exit code from `success`.
//!
//! The parameter syntax follows the original CLI so that muscle memory and scripts carry over:
//!
//! - `--key=value` and `--key value`; a bare `--flag` (followed by another `--…` or nothing) is
//!   `true`; a positional `key=value` works too.
//! - Values that read as JSON numbers or booleans become numbers and booleans; values starting
//!   with `{` or `[` must be JSON and are parsed as such; everything else is a string (so
//!   `--name=007` stays the string `"007"`, which is not a JSON number).
//! - `--params '{...}'` merges a whole object at its position; a repeated key overwrites
//!   (the last occurrence wins, whether it came from `--params` or a flag).
//! - `--json` (one compact line instead of pretty JSON) and `--timeout DURATION` are the CLI's
//!   own flags wherever they appear; after a lone `--` every flag is a parameter, which is how
//!   to send a parameter literally named `json`, `timeout` or `params`.
//! - `help` takes one positional argument: `daemonhost call help data/list`.
//!
//! Exit codes: 0 success, 1 the command failed (the error code and message go to stderr),
//! 2 no host is running (with a hint to start one).
//!
//! Default timeouts are per command, as in the original CLI: 10 s, 60 s for `ai/*`, 300 s for
//! `genome/*`; the same value is sent as `timeout_ms` so host and client agree.

use daemonhost_protocol::{CallError, Client, ClientError};
use serde_json::{Map, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// What the arguments after `COMMAND` amount to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallArgs {
    /// The request's params object.
    pub params: Map<String, Value>,
    /// `--json`: print one compact line.
    pub json: bool,
    /// `--timeout`: overrides the per-command default.
    pub timeout: Option<Duration>,
}

/// Parse the arguments after the command name.
pub fn parse_call_args(command: &str, args: &[String]) -> Result<CallArgs, String> {
    let mut out = CallArgs::default();
    let mut flags_done = false; // after `--`, reserved names are params
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" && !flags_done {
            flags_done = true;
            continue;
        }
        if let Some(body) = arg.strip_prefix("--") {
            if body.is_empty() {
                return Err("'--' may appear only once".into());
            }
            let (key, inline) = match body.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (body, None),
            };
            if key.is_empty() {
                return Err(format!("'{arg}': missing parameter name before '='"));
            }
            // `--key value`: the next argument is the value unless it is another flag.
            let mut take_next = || -> Option<String> {
                if inline.is_some() {
                    return inline.clone();
                }
                match args.get(i) {
                    Some(next) if !next.starts_with("--") => {
                        i += 1;
                        Some(next.clone())
                    }
                    _ => None,
                }
            };
            match key {
                "json" if !flags_done => {
                    out.json = match inline.as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(v) => return Err(format!("--json takes no value (got '{v}')")),
                    };
                }
                "timeout" if !flags_done => {
                    let raw = take_next().ok_or("--timeout needs a value, e.g. --timeout=30s")?;
                    out.timeout = Some(parse_duration(&raw)?);
                }
                "params" if !flags_done => {
                    let raw = take_next().ok_or("--params needs a JSON object")?;
                    match serde_json::from_str::<Value>(&raw) {
                        Ok(Value::Object(m)) => out.params.extend(m),
                        Ok(_) => return Err("--params must be a JSON object".into()),
                        Err(e) => return Err(format!("--params is not valid JSON: {e}")),
                    }
                }
                _ => {
                    let value = match take_next() {
                        Some(raw) => parse_value(&raw).map_err(|e| format!("--{key}: {e}"))?,
                        None => Value::Bool(true),
                    };
                    out.params.insert(key.to_owned(), value);
                }
            }
        } else if let Some((k, v)) = arg.split_once('=')
            && is_param_name(k)
        {
            let value = parse_value(v).map_err(|e| format!("{k}: {e}"))?;
            out.params.insert(k.to_owned(), value);
        } else if command == "help" && !out.params.contains_key("command") {
            out.params
                .insert("command".to_owned(), Value::String(arg.clone()));
        } else {
            return Err(format!(
                "unexpected argument '{arg}': pass parameters as --key=value"
            ));
        }
    }
    Ok(out)
}

fn is_param_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// One flag value: a JSON number or boolean, JSON for `{…`/`[…`, otherwise the string itself.
pub fn parse_value(raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(raw)
            .map_err(|e| format!("value looks like JSON but is not: {e}"));
    }
    match raw {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let numeric = raw
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit());
    if numeric && let Ok(n) = serde_json::from_str::<serde_json::Number>(raw) {
        return Ok(Value::Number(n));
    }
    Ok(Value::String(raw.to_owned()))
}

/// `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds (`1.5`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(pos) => s.split_at(pos),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{raw}' is not a duration (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "'{raw}': unknown unit '{unit}' (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{raw}' is not a valid duration"))
}

/// The CLI's default deadline for `command`: 10 s, 60 s for `ai/*`, 300 s for `genome/*`.
pub fn default_timeout(command: &str) -> Duration {
    if command.starts_with("ai/") {
        Duration::from_secs(60)
    } else if command.starts_with("genome/") {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(10)
    }
}

/// Exit code when no host is listening.
pub const EXIT_NOT_RUNNING: u8 = 2;
/// Exit code when the command failed.
pub const EXIT_FAILED: u8 = 1;

/// Print the standard "no host" message and return exit code 2.
pub fn not_running(socket: &Path) -> ExitCode {
    let dir = socket
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".daemonhost".into());
    eprintln!(
        "error: no daemonhost is running (nothing listens on {})",
        socket.display()
    );
    eprintln!("hint: start one with `daemonhost run --data-dir {dir}`");
    ExitCode::from(EXIT_NOT_RUNNING)
}

/// Connect, or explain why not. `Err(code)` is the exit code to return.
pub async fn connect(socket: &Path) -> Result<Client, ExitCode> {
    match Client::connect(socket).await {
        Ok(c) => Ok(c),
        Err(ClientError::NotRunning { .. }) => Err(not_running(socket)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(EXIT_NOT_RUNNING))
        }
    }
}

/// Print a failed call on stderr (`--json`: as one JSON object) and return exit code 1.
pub fn report_error(err: &CallError, json: bool) -> ExitCode {
    let (code, message) = match err {
        CallError::Remote(body) => (body.code.as_str().to_owned(), body.message.clone()),
        CallError::Timeout { after } => (
            "timeout".to_owned(),
            format!("no answer within {} ms", after.as_millis()),
        ),
        CallError::Disconnected => (
            "disconnected".to_owned(),
            "the host closed the connection before answering".to_owned(),
        ),
        other => ("client".to_owned(), other.to_string()),
    };
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"success": false, "error": {"code": code, "message": message}})
        );
    } else {
        eprintln!("error: {code}: {message}");
    }
    ExitCode::from(EXIT_FAILED)
}

/// Print a result on stdout: pretty, or one compact line.
pub fn print_result(v: &Value, json: bool) {
    let text = if json {
        serde_json::to_string(v)
    } else {
        serde_json::to_string_pretty(v)
    };
    // Serializing a `Value` into a string cannot fail. A closed stdout (`| head`) is not an
    // error of the command: the output is simply not wanted any more.
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{}", text.unwrap_or_default());
}

/// `daemonhost call`.
pub async fn run(
    socket: &Path,
    command: &str,
    args: &[String],
    json_flag: bool,
    timeout_flag: Option<Duration>,
) -> ExitCode {
    let parsed = match parse_call_args(command, args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let json = json_flag || parsed.json;
    let timeout = parsed
        .timeout
        .or(timeout_flag)
        .unwrap_or_else(|| default_timeout(command));
    let client = match connect(socket).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client
        .call(command, Value::Object(parsed.params), Some(timeout))
        .await
    {
        Ok(v) => {
            print_result(&v, json);
            ExitCode::SUCCESS
        }
        Err(e) => report_error(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn params(cmd: &str, a: &[&str]) -> Value {
        Value::Object(parse_call_args(cmd, &args(a)).expect("parse").params)
    }

    #[test]
    fn call_args_equals_and_space_forms() {
        assert_eq!(
            params("data/list", &["--collection=users", "--limit", "5"]),
            json!({"collection": "users", "limit": 5})
        );
        assert_eq!(
            params("x", &["limit=5", "name=a=b"]),
            json!({"limit": 5, "name": "a=b"})
        );
    }

    #[test]
    fn call_args_bare_flag_is_true() {
        assert_eq!(
            params("x", &["--verbose", "--deep", "--n", "-3"]),
            json!({"verbose": true, "deep": true, "n": -3})
        );
        assert_eq!(params("x", &["--last"]), json!({"last": true}));
    }

    #[test]
    fn call_args_values_are_json_ish() {
        assert_eq!(
            params(
                "x",
                &[
                    "--a=1.5",
                    "--b=true",
                    "--c=false",
                    "--d={\"k\":[1]}",
                    "--e=[1,2]",
                    "--f=007",
                    "--g=hello world",
                    "--h=null",
                    "--i=1e3",
                    "--j="
                ]
            ),
            json!({"a": 1.5, "b": true, "c": false, "d": {"k": [1]}, "e": [1, 2],
                   "f": "007", "g": "hello world", "h": "null", "i": 1000.0, "j": ""})
        );
        let e = parse_call_args("x", &args(&["--d={oops"])).expect_err("bad json");
        assert!(e.contains("--d"), "{e}");
    }

    #[test]
    fn call_args_params_object_and_repeats_overwrite() {
        assert_eq!(
            params("x", &["--a=1", "--params", "{\"a\":2,\"b\":3}", "--b=4"]),
            json!({"a": 2, "b": 4})
        );
        assert_eq!(params("x", &["--a=1", "--a=2"]), json!({"a": 2}));
        assert!(parse_call_args("x", &args(&["--params=[1]"])).is_err());
        assert!(parse_call_args("x", &args(&["--params={"])).is_err());
        assert!(parse_call_args("x", &args(&["--params"])).is_err());
    }

    #[test]
    fn call_args_cli_flags_and_double_dash() {
        let p = parse_call_args("x", &args(&["--json", "--timeout", "2s", "--k=v"])).expect("p");
        assert!(p.json);
        assert_eq!(p.timeout, Some(Duration::from_secs(2)));
        assert_eq!(Value::Object(p.params), json!({"k": "v"}));
        let p = parse_call_args("x", &args(&["--", "--json", "--timeout=5"])).expect("p");
        assert!(!p.json);
        assert_eq!(Value::Object(p.params), json!({"json": true, "timeout": 5}));
    }

    #[test]
    fn call_args_positionals() {
        assert_eq!(
            params("help", &["data/list"]),
            json!({"command": "data/list"})
        );
        assert!(parse_call_args("ping", &args(&["oops"])).is_err());
        assert!(parse_call_args("help", &args(&["a", "b"])).is_err());
        assert!(parse_call_args("x", &args(&["--=1"])).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn default_timeouts_follow_the_original_cli() {
        assert_eq!(default_timeout("ping"), Duration::from_secs(10));
        assert_eq!(default_timeout("ai/generate"), Duration::from_secs(60));
        assert_eq!(default_timeout("genome/train"), Duration::from_secs(300));
    }
}
