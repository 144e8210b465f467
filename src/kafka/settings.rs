//! The user's Kafka client settings: librdkafka properties (security,
//! timeouts, tuning) layered onto every client weir makes.
//!
//! Sources, later wins:
//!
//! 1. the `kafka:` map of the topology file (`weir run`, `weir reset`) or
//!    of the sink file (`weir sink`);
//! 2. `--kafka-config-file PATH`, a Java-style `.properties` file (the
//!    `client.properties` Kafka users already have);
//! 3. `WEIR_KAFKA_CONFIG_<KEY>` environment variables
//!    (`WEIR_KAFKA_CONFIG_SASL_PASSWORD` → `sasl.password`);
//! 4. `--kafka-config KEY=VALUE` (repeatable): a flag beats the environment,
//!    as for every weir flag with an environment fallback.
//!
//! The environment prefix is `WEIR_KAFKA_CONFIG_`, not `WEIR_KAFKA_`:
//! `./dev` and the tests already use `WEIR_KAFKA_PORT`, `WEIR_KAFKA_HEAP`,
//! `WEIR_KAFKA3_PORT` and the like, which would otherwise be read as the
//! (unknown) properties `port`, `heap`...
//!
//! Any value may refer to a secret instead of holding it, so that none has
//! to be written on a command line or in a file under version control:
//! `${env:NAME}` is the environment variable NAME, `${file:PATH}` the whole
//! content of the file PATH without its trailing newline (a mounted
//! Kubernetes or Docker secret); `$${` is a literal `${`. (Kafka's own
//! FileConfigProvider form `${file:PATH:KEY}`, a key of a properties file,
//! is not supported: PATH is the whole text after `file:`.)
//!
//! Values are never logged: [`Settings::summary`] prints every key with
//! where it came from, and the values of keys that may hold a secret
//! ([`is_secret`]) as `[redacted]`.
//!
//! The properties weir's guarantees depend on are refused wherever they
//! come from, with the reason ([`protected`]).
//!
//! The settings are per process (one command per process): `main` installs
//! them once before any client is made, and [`super::client_config`]
//! applies them to every client: consumers, producers, admin and metadata
//! clients, the restore consumer.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use indexmap::IndexMap;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// Prefix of the environment variables that set a property.
pub(crate) const ENV_PREFIX: &str = "WEIR_KAFKA_CONFIG_";

/// Why weir refuses to let `key` be set, or `None` if it may be.
pub(crate) fn protected(key: &str) -> Option<&'static str> {
    Some(match key {
        "bootstrap.servers" | "metadata.broker.list" => "weir takes the brokers from --bootstrap (or WEIR_BOOTSTRAP)",
        "group.id" => {
            "weir names its consumer groups: the application_id for weir run, the sink's `group:` for weir sink"
        }
        "group.instance.id" => "weir decides the group membership of its consumers",
        "group.protocol" | "group.remote.assignor" | "partition.assignment.strategy" => {
            "weir run's rebalance handling is written for the classic group protocol with the cooperative-sticky \
             assignor (tasks that stay on an instance keep running through a rebalance)"
        }
        "enable.auto.commit" | "enable.auto.offset.store" | "auto.commit.interval.ms" => {
            "weir commits offsets itself, together with its results (in the transaction under exactly_once, in \
             Postgres for weir sink); an automatic commit would skip records after a crash"
        }
        "auto.offset.reset" => {
            "weir's inputs are read from the earliest offset, and its restore consumer must fail on a truncated \
             changelog rather than skip it; use `weir reset` to reprocess from a time"
        }
        "isolation.level" => {
            "weir reads read_committed: records of aborted transactions must not reach results, stores or Postgres"
        }
        "enable.partition.eof" => "weir run's event-time ordering needs end-of-partition events",
        "transactional.id" => {
            "weir derives it from the application_id and the instance so that a restarted instance fences its \
             predecessor (exactly_once)"
        }
        "transaction.timeout.ms" => {
            "weir's exactly_once commit timing is checked against it (`weir validate` refuses a commit_interval \
             over half of it)"
        }
        "enable.idempotence" | "acks" | "enable.gapless.guarantee" => {
            "weir's producers are idempotent with acks=all: a retried send must not duplicate or reorder records"
        }
        "max.poll.interval.ms" => "it must exceed the longest round of weir run's loop (src/runtime/timeouts.rs)",
        "partitioner" | "partitioner_cb" => {
            "records must land on the partition Kafka's Java clients (and weir's repartitioning) choose: murmur2"
        }
        _ => return None,
    })
}

/// Whether the value of `key` may be a secret (a password, a private key,
/// a token, a JAAS line) and must never be shown. Broad on purpose: a path
/// like `ssl.key.location` is hidden too.
pub(crate) fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "token",
        "jaas",
        "credential",
        "oauthbearer.config",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// What to print for `key`'s value.
pub(crate) fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "[redacted]"
    } else {
        value
    }
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The `kafka:` map of a topology or sink file, at a line.
    File { path: String, line: u64 },
    /// A `--kafka-config-file`, at a line.
    Properties { path: String, line: u64 },
    /// A `WEIR_KAFKA_CONFIG_*` variable.
    Env(String),
    /// `--kafka-config`.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } | Origin::Properties { path, line } => write!(f, "{path}:{line}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag => write!(f, "--kafka-config"),
        }
    }
}

/// One setting as written, before its references are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Kafka setting `{key}` ({origin}): {reason}")]
pub struct SettingError {
    pub key: String,
    pub origin: Origin,
    pub reason: String,
}

/// Check one key and its (unresolved) value as a file or flag gives them:
/// not protected, known to librdkafka, references well formed, and the
/// value one librdkafka accepts when it is written out (a reference is
/// resolved only when weir runs: the secret need not exist where the file
/// is validated). The error never contains the value.
pub(crate) fn check(key: &str, value: &str) -> Result<(), String> {
    if let Some(why) = protected(key) {
        return Err(format!("is set by weir and cannot be changed: {why}"));
    }
    let refs = references(value)?;
    // Only librdkafka knows its properties and their types; asking it
    // (without creating a client) catches a typo or a Java-only property
    // at `weir validate` rather than at start-up.
    let probe = if refs.is_empty() { value } else { "" };
    match librdkafka_accepts(key, probe) {
        Ok(()) => Ok(()),
        Err((RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, _)) => {
            Err("librdkafka (the Kafka client weir uses) has no such property; see \
             https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md (a property only Kafka's Java \
             clients have can be dropped)"
                .to_string())
        }
        Err(_) if !refs.is_empty() => Ok(()),
        Err((_, desc)) if is_secret(key) => Err(format!("librdkafka refuses the value{}", scrub(&desc, value))),
        Err((_, desc)) => Err(format!("librdkafka refuses {value:?}: {desc}")),
    }
}

/// librdkafka's message, unless it quotes the (secret) value.
fn scrub(desc: &str, value: &str) -> String {
    if value.is_empty() || !desc.contains(value) {
        format!(": {desc}")
    } else {
        String::new()
    }
}

fn librdkafka_accepts(key: &str, value: &str) -> Result<(), (RDKafkaConfRes, String)> {
    let mut cfg = ClientConfig::new();
    cfg.set(key, value);
    match cfg.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(res, desc, _, _)) => Err((res, desc)),
        Err(e) => Err((RDKafkaConfRes::RD_KAFKA_CONF_INVALID, e.to_string())),
    }
}

/// A `${provider:argument}` reference in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Env(String),
    File(PathBuf),
}

/// A value split into literal text and references.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(Reference),
}

fn parse_value(value: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            text.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or("a `${` without its closing `}` (write `$${` for a literal `${`)")?;
            let inner = &after[..end];
            let reference = if let Some(name) = inner.strip_prefix("env:") {
                if name.is_empty() {
                    return Err("`${env:}` names no variable".into());
                }
                Reference::Env(name.to_string())
            } else if let Some(path) = inner.strip_prefix("file:") {
                if path.is_empty() {
                    return Err("`${file:}` names no file".into());
                }
                Reference::File(PathBuf::from(path))
            } else {
                return Err(format!(
                    "unknown reference `${{{inner}}}`: use ${{env:NAME}} or ${{file:PATH}} (`$${{` for a literal `${{`)"
                ));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Ref(reference));
            rest = &after[end + 1..];
        } else {
            text.push('$');
            rest = &rest[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

fn references(value: &str) -> Result<Vec<Reference>, String> {
    Ok(parse_value(value)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
        .collect())
}

/// `value` with its references replaced by what they name; `env` looks a
/// variable up. The error names the variable or file, never a value.
pub(crate) fn resolve(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    for part in parse_value(value)? {
        match part {
            Part::Text(t) => out.push_str(&t),
            Part::Ref(Reference::Env(name)) => {
                out.push_str(&env(&name).ok_or_else(|| format!("refers to ${{env:{name}}}, which is not set"))?)
            }
            Part::Ref(Reference::File(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("refers to ${{file:{}}}, which cannot be read: {e}", path.display()))?;
                // A secret file usually ends with a newline the secret
                // does not contain.
                out.push_str(
                    text.strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text),
                );
            }
        }
    }
    Ok(out)
}

/// The property a `WEIR_KAFKA_CONFIG_*` variable sets, or `None` for
/// another variable: lower case, `_` → `.`, `__` → `_`, `___` → `-`
/// (the convention of Confluent's container images).
pub(crate) fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    let lower = rest.to_ascii_lowercase();
    let mut key = String::new();
    let mut chars = lower.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            key.push(c);
            continue;
        }
        let mut n = 1;
        while chars.peek() == Some(&'_') && n < 3 {
            chars.next();
            n += 1;
        }
        key.push(match n {
            1 => '.',
            2 => '_',
            _ => '-',
        });
    }
    Some(key)
}

/// The settings of `WEIR_KAFKA_CONFIG_*` variables in `vars`, sorted by
/// variable name (the environment has no order).
pub(crate) fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Raw> {
    let mut out: Vec<Raw> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            env_key(&var).map(|key| Raw {
                key,
                value,
                origin: Origin::Env(var),
            })
        })
        .collect();
    out.sort_by_key(|a| a.origin.to_string());
    out
}

/// A Java `.properties` file's `key=value` pairs with their line numbers:
/// `#` and `!` comments, `=`, `:` or white space between key and value,
/// a trailing `\` continuing a line, and the escapes `\t \n \r \f \\ \uXXXX`
/// (any other escaped character stands for itself, e.g. `\=` and `\:`).
pub(crate) fn parse_properties(text: &str) -> Result<Vec<(u64, String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, first)) = lines.next() {
        let start = first.trim_start();
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes.
        let mut logical = start.to_string();
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let line = i as u64 + 1;
        let (key, value) = split_property(&logical);
        // Trailing blanks dropped, as Kafka's Java clients trim values:
        // a path with a stray space at the end would not open.
        let value = value.trim_end_matches([' ', '\t', '\x0c']);
        let key = unescape(&key).map_err(|e| format!("line {line}: {e}"))?;
        let value = unescape(value).map_err(|e| format!("line {line}: {e}"))?;
        out.push((line, key, value));
    }
    Ok(out)
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    (s.len() - s.trim_end_matches('\\').len()) % 2 == 1
}

/// The raw (still escaped) key and value of a logical line.
fn split_property(line: &str) -> (String, String) {
    let mut key_end = line.len();
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\x0c' => {
                key_end = i;
                break;
            }
            _ => {}
        }
    }
    let key = line[..key_end].to_string();
    let mut rest = line[key_end..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest.to_string())
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let ch = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\u escape `\\u{hex}`"))?;
                out.push(ch);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Read a `--kafka-config-file`.
pub(crate) fn read_properties(path: &Path) -> Result<Vec<Raw>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --kafka-config-file {}: {e}", path.display()))?;
    let shown_path = path.display().to_string();
    Ok(parse_properties(&text)
        .map_err(|e| format!("{shown_path}: {e}"))?
        .into_iter()
        .map(|(line, key, value)| Raw {
            key,
            value,
            origin: Origin::Properties {
                path: shown_path.clone(),
                line,
            },
        })
        .collect())
}

/// One `--kafka-config KEY=VALUE`.
pub(crate) fn parse_flag(arg: &str) -> Result<Raw, String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| "--kafka-config takes KEY=VALUE, e.g. --kafka-config security.protocol=SASL_SSL".to_string())?;
    let key = key.trim();
    if key.is_empty() {
        return Err("--kafka-config: the key before `=` is empty".into());
    }
    Ok(Raw {
        key: key.to_string(),
        value: value.to_string(),
        origin: Origin::Flag,
    })
}

/// A value of a `kafka:` map in a topology or sink file: YAML scalars
/// (`linger.ms: 5`, `enable.ssl.certificate.verification: false`) are
/// written out as librdkafka expects them.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FileValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for FileValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileValue::Bool(b) => write!(f, "{b}"),
            FileValue::Int(i) => write!(f, "{i}"),
            FileValue::Float(x) => write!(f, "{x}"),
            FileValue::Str(s) => f.write_str(s),
        }
    }
}

/// The `kafka:` map of a file as its spec types hold it.
pub(crate) type FileMap = IndexMap<String, serde_saphyr::Spanned<FileValue>>;

/// One entry of a file's `kafka:` map, checked, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    pub key: String,
    pub value: String,
    pub line: u64,
}

/// Check a file's `kafka:` map: each problem becomes a diagnostic at its
/// line (what `weir validate` prints).
pub(crate) fn check_file_map(map: &FileMap) -> (Vec<FileSetting>, Vec<crate::support::diag::Diagnostic>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in map {
        let text = value.value.to_string();
        match check(key, &text) {
            Ok(()) => out.push(FileSetting {
                key: key.clone(),
                value: text,
                line: value.referenced.line(),
            }),
            Err(reason) => errors.push(crate::support::diag::Diagnostic::at(
                value,
                format!("kafka: `{key}` {reason}"),
            )),
        }
    }
    (out, errors)
}

/// A file's checked settings as the first layer of [`Settings::build`].
pub fn from_file(path: &Path, settings: &[FileSetting]) -> Vec<Raw> {
    settings
        .iter()
        .map(|s| Raw {
            key: s.key.clone(),
            value: s.value.clone(),
            origin: Origin::File {
                path: path.display().to_string(),
                line: s.line,
            },
        })
        .collect()
}

/// A setting in effect, its references resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub origin: Origin,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value: it may be a secret and Debug output ends up in logs.
        f.debug_struct("Entry")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The settings in effect, later sources having replaced earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    entries: IndexMap<String, Entry>,
}

impl Settings {
    /// Layer `raw` (earliest first) into settings: every key checked,
    /// every reference resolved. Reports every problem, not just the first.
    pub fn build(raw: Vec<Raw>, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Vec<SettingError>> {
        let mut entries: IndexMap<String, Entry> = IndexMap::new();
        let mut errors = Vec::new();
        for r in raw {
            let fail = |reason: String| SettingError {
                key: r.key.clone(),
                origin: r.origin.clone(),
                reason,
            };
            if let Err(reason) = check(&r.key, &r.value) {
                errors.push(fail(reason));
                continue;
            }
            let value = match resolve(&r.value, env) {
                Ok(v) => v,
                Err(reason) => {
                    errors.push(fail(reason));
                    continue;
                }
            };
            if r.value != value {
                // A reference resolved: its value is checked now.
                if let Err((_, desc)) = librdkafka_accepts(&r.key, &value) {
                    let reason = if is_secret(&r.key) {
                        format!("librdkafka refuses the value it refers to{}", scrub(&desc, &value))
                    } else {
                        format!("librdkafka refuses {value:?}: {desc}")
                    };
                    errors.push(fail(reason));
                    continue;
                }
            }
            // A later source replaces the key in place: keep one entry per key.
            entries.shift_remove(&r.key);
            entries.insert(
                r.key,
                Entry {
                    value,
                    origin: r.origin,
                },
            );
        }
        if errors.is_empty() {
            Ok(Settings { entries })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), e))
    }

    /// Set every setting on `cfg`.
    pub fn apply(&self, cfg: &mut ClientConfig) {
        for (k, e) in &self.entries {
            cfg.set(k, &e.value);
        }
    }

    /// `key=value (origin)` for every setting, secrets redacted: what
    /// weir logs at start-up.
    pub fn summary(&self) -> String {
        self.entries
            .iter()
            .map(|(k, e)| format!("{k}={} ({})", shown(k, &e.value), e.origin))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

static INSTALLED: OnceLock<Settings> = OnceLock::new();

/// Make `settings` the ones every client of this process gets. Once per
/// process; a second call is a bug and panics.
pub fn install(settings: Settings) {
    if !settings.is_empty() {
        tracing::info!(settings = %settings.summary(), "Kafka client settings");
    }
    if INSTALLED.set(settings).is_err() {
        panic!("Kafka client settings installed twice");
    }
}

/// The installed settings (none before [`install`], e.g. in unit tests).
pub(crate) fn installed() -> Option<&'static Settings> {
    INSTALLED.get()
}

/// The command-line side of the settings, shared by every command that
/// talks to Kafka.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// librdkafka client properties from a Java-style .properties file
    /// (e.g. the client.properties of a managed Kafka). Values may refer to
    /// secrets as ${env:NAME} or ${file:PATH}.
    #[arg(long, value_name = "PATH")]
    pub kafka_config_file: Option<PathBuf>,
    /// One librdkafka client property, KEY=VALUE (repeatable; wins over the
    /// file, the environment's WEIR_KAFKA_CONFIG_<KEY> and the topology's
    /// or sink's `kafka:` map). Secrets belong in ${env:NAME} or
    /// ${file:PATH}, not here.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE")]
    pub kafka_config: Vec<String>,
}

/// Settings could not be assembled; every problem is listed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

impl KafkaArgs {
    /// The settings in effect: `file` (a topology's or sink's `kafka:`
    /// map), then the properties file, the process environment, the flags.
    pub fn settings(&self, file: Vec<Raw>) -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self.settings_with(file, &env)
    }

    fn settings_with(&self, file: Vec<Raw>, env: &HashMap<String, String>) -> Result<Settings, SettingsError> {
        let mut raw = file;
        let mut problems = Vec::new();
        if let Some(path) = &self.kafka_config_file {
            match read_properties(path) {
                Ok(r) => raw.extend(r),
                Err(e) => problems.push(e),
            }
        }
        raw.extend(from_env(env.iter().map(|(k, v)| (k.clone(), v.clone()))));
        for arg in &self.kafka_config {
            match parse_flag(arg) {
                Ok(r) => raw.push(r),
                Err(e) => problems.push(e),
            }
        }
        match Settings::build(raw, &|name| env.get(name).cloned()) {
            Ok(s) if problems.is_empty() => Ok(s),
            Ok(_) => Err(SettingsError(problems)),
            Err(errors) => {
                problems.extend(errors.iter().map(ToString::to_string));
                Err(SettingsError(problems))
            }
        }
    }

    /// Assemble the settings and install them for this process.
    pub fn install(&self, file: Vec<Raw>) -> Result<(), SettingsError> {
        install(self.settings(file)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn raw(key: &str, value: &str, origin: Origin) -> Raw {
        Raw {
            key: key.into(),
            value: value.into(),
            origin,
        }
    }

    fn file(line: u64) -> Origin {
        Origin::File {
            path: "t.yaml".into(),
            line,
        }
    }

    #[test]
    fn later_sources_win_and_keep_one_entry_per_key() {
        let s = Settings::build(
            vec![
                raw("security.protocol", "PLAINTEXT", file(3)),
                raw("linger.ms", "7", file(4)),
                raw(
                    "security.protocol",
                    "SASL_SSL",
                    Origin::Env("WEIR_KAFKA_CONFIG_SECURITY_PROTOCOL".into()),
                ),
                raw("security.protocol", "SSL", Origin::Flag),
            ],
            &no_env,
        )
        .unwrap();
        assert_eq!(s.get("security.protocol").unwrap().value, "SSL");
        assert_eq!(s.get("security.protocol").unwrap().origin, Origin::Flag);
        assert_eq!(s.get("linger.ms").unwrap().value, "7");
        assert_eq!(s.iter().count(), 2);
        let mut cfg = ClientConfig::new();
        s.apply(&mut cfg);
        assert_eq!(cfg.get("security.protocol"), Some("SSL"));
        assert_eq!(cfg.get("linger.ms"), Some("7"));
    }

    #[test]
    fn the_layers_are_file_then_properties_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let props = dir.path().join("client.properties");
        std::fs::write(&props, "client.id=from-file\nlinger.ms=11\nsocket.timeout.ms=9000\n").unwrap();
        let args = KafkaArgs {
            kafka_config_file: Some(props),
            kafka_config: vec!["client.id=from-flag".into()],
        };
        let env: HashMap<String, String> = [
            ("WEIR_KAFKA_CONFIG_CLIENT_ID".to_string(), "from-env".to_string()),
            ("WEIR_KAFKA_CONFIG_LINGER_MS".to_string(), "12".to_string()),
            // ./dev's own variables are not settings.
            ("WEIR_KAFKA_PORT".to_string(), "59092".to_string()),
        ]
        .into();
        let s = args
            .settings_with(
                vec![
                    raw("socket.timeout.ms", "1000", file(2)),
                    raw("batch.num.messages", "77", file(5)),
                ],
                &env,
            )
            .unwrap();
        let got = |k: &str| s.get(k).unwrap().value.clone();
        assert_eq!(got("batch.num.messages"), "77");
        assert_eq!(got("socket.timeout.ms"), "9000");
        assert_eq!(got("linger.ms"), "12");
        assert_eq!(got("client.id"), "from-flag");
        assert_eq!(s.iter().count(), 4);
    }

    #[test]
    fn protected_keys_are_refused_with_the_reason_wherever_they_come_from() {
        for key in [
            "isolation.level",
            "transactional.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "partition.assignment.strategy",
            "group.id",
            "enable.idempotence",
            "bootstrap.servers",
            "auto.offset.reset",
            "transaction.timeout.ms",
        ] {
            let err = check(key, "x").unwrap_err();
            assert!(err.contains("is set by weir and cannot be changed"), "{key}: {err}");
            let errors = Settings::build(vec![raw(key, "x", Origin::Flag)], &no_env).unwrap_err();
            assert_eq!(errors.len(), 1);
            let msg = errors[0].to_string();
            assert!(
                msg.starts_with(&format!("Kafka setting `{key}` (--kafka-config): is set by weir")),
                "{msg}"
            );
        }
        assert!(check("isolation.level", "read_uncommitted")
            .unwrap_err()
            .contains("read_committed"));
        assert!(check("security.protocol", "SASL_SSL").is_ok());
        assert!(check("sasl.mechanism", "SCRAM-SHA-512").is_ok());
    }

    #[test]
    fn unknown_properties_and_bad_values_are_named() {
        let err = check("sasl.kerberos.keytab.path", "x").unwrap_err();
        assert!(err.contains("no such property"), "{err}");
        // librdkafka explains this Java-only one itself.
        let err = check("sasl.jaas.config", "org.apache...").unwrap_err();
        assert!(err.contains("JAAS configuration is not supported"), "{err}");
        let err = check("linger.ms", "soon").unwrap_err();
        assert!(err.contains("\"soon\""), "{err}");
        // A secret's value is not repeated in the error.
        let err = check("ssl.key.password", "${nope:x}").unwrap_err();
        assert!(err.contains("unknown reference"), "{err}");
        // A reference is resolved only at run time, so any value passes here.
        assert!(check("linger.ms", "${env:LINGER}").is_ok());
        // Every problem is reported, not only the first.
        let errors = Settings::build(
            vec![
                raw("no.such.thing", "1", file(2)),
                raw("group.id", "g", file(3)),
                raw("linger.ms", "5", file(4)),
            ],
            &no_env,
        )
        .unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].origin, file(2));
        assert_eq!(errors[1].key, "group.id");
    }

    #[test]
    fn references_resolve_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let env = |name: &str| (name == "USER_NAME").then(|| "alice".to_string());
        assert_eq!(resolve("${env:USER_NAME}", &env).unwrap(), "alice");
        assert_eq!(
            resolve(&format!("${{file:{}}}", secret.display()), &env).unwrap(),
            "s3cret"
        );
        assert_eq!(resolve("a-${env:USER_NAME}-b", &env).unwrap(), "a-alice-b");
        assert_eq!(resolve("cost $5, $${env:X}", &env).unwrap(), "cost $5, ${env:X}");
        let err = resolve("${env:MISSING}", &env).unwrap_err();
        assert!(err.contains("${env:MISSING}, which is not set"), "{err}");
        let err = resolve("${file:/no/such/file}", &env).unwrap_err();
        assert!(err.contains("/no/such/file") && err.contains("cannot be read"), "{err}");
        assert!(resolve("${env:X", &env).unwrap_err().contains("closing"));
        assert!(resolve("${vault:x}", &env).unwrap_err().contains("unknown reference"));

        let s = Settings::build(
            vec![
                raw("sasl.username", "${env:USER_NAME}", file(2)),
                raw("sasl.password", &format!("${{file:{}}}", secret.display()), file(3)),
            ],
            &env,
        )
        .unwrap();
        assert_eq!(s.get("sasl.username").unwrap().value, "alice");
        assert_eq!(s.get("sasl.password").unwrap().value, "s3cret");
        let errors = Settings::build(vec![raw("sasl.password", "${env:MISSING}", file(3))], &env).unwrap_err();
        assert!(errors[0].to_string().contains("t.yaml:3"), "{}", errors[0]);
    }

    #[test]
    fn secrets_are_redacted_in_the_summary_and_in_debug_output() {
        let env = |name: &str| (name == "PW").then(|| "hunter2".to_string());
        let s = Settings::build(
            vec![
                raw("security.protocol", "SASL_SSL", file(2)),
                raw(
                    "sasl.password",
                    "${env:PW}",
                    Origin::Env("WEIR_KAFKA_CONFIG_SASL_PASSWORD".into()),
                ),
                raw("ssl.key.pem", "-----BEGIN PRIVATE KEY-----", Origin::Flag),
                raw("sasl.oauthbearer.config", "principal=abc", Origin::Flag),
            ],
            &env,
        )
        .unwrap();
        let summary = s.summary();
        assert!(summary.contains("security.protocol=SASL_SSL (t.yaml:2)"), "{summary}");
        assert!(
            summary.contains("sasl.password=[redacted] (environment variable WEIR_KAFKA_CONFIG_SASL_PASSWORD)"),
            "{summary}"
        );
        for secret in ["hunter2", "PRIVATE KEY", "principal=abc"] {
            assert!(!summary.contains(secret), "{summary}");
            assert!(!format!("{s:?}").contains(secret));
        }
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "x.token",
            "ssl.key.location",
        ] {
            assert!(is_secret(key), "{key}");
        }
        assert!(!is_secret("sasl.username") && !is_secret("security.protocol"));
    }

    #[test]
    fn environment_variable_names_map_to_properties() {
        assert_eq!(
            env_key("WEIR_KAFKA_CONFIG_SASL_PASSWORD").as_deref(),
            Some("sasl.password")
        );
        assert_eq!(
            env_key("WEIR_KAFKA_CONFIG_SSL_CA_LOCATION").as_deref(),
            Some("ssl.ca.location")
        );
        assert_eq!(env_key("WEIR_KAFKA_CONFIG_A__B___C_D").as_deref(), Some("a_b-c.d"));
        assert_eq!(env_key("WEIR_KAFKA_PORT"), None);
        assert_eq!(env_key("WEIR_KAFKA_CONFIG_"), None);
        let raw = from_env([
            ("WEIR_KAFKA_CONFIG_SASL_USERNAME".to_string(), "u".to_string()),
            ("WEIR_KAFKA_HEAP".to_string(), "-Xmx1g".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].key, "sasl.username");
    }

    #[test]
    fn java_properties_files_parse_as_java_reads_them() {
        let text = "# Confluent Cloud\n\
                    ! also a comment\n\
                    \n\
                    security.protocol=SASL_SSL\n\
                    sasl.mechanisms : PLAIN\n\
                    sasl.username   key123\n\
                    sasl.password=a\\=b\\:c \\\n    continued\n\
                    ssl.ca.location=/etc/ssl/ca.pem   \n\
                    weird\\ key=\\u0041\\t!\n\
                    empty=\n";
        let got = parse_properties(text).unwrap();
        let pairs: Vec<(u64, &str, &str)> = got.iter().map(|(l, k, v)| (*l, k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                (4, "security.protocol", "SASL_SSL"),
                (5, "sasl.mechanisms", "PLAIN"),
                (6, "sasl.username", "key123"),
                (7, "sasl.password", "a=b:c continued"),
                (9, "ssl.ca.location", "/etc/ssl/ca.pem"),
                (10, "weird key", "A\t!"),
                (11, "empty", ""),
            ]
        );
        assert!(parse_properties("k=\\u12\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn flags_need_key_equals_value() {
        assert_eq!(parse_flag("linger.ms=5").unwrap().value, "5");
        assert_eq!(parse_flag("sasl.password=a=b").unwrap().value, "a=b");
        assert!(parse_flag("linger.ms").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_flag("=5").is_err());
    }
}
