//! TLS to Postgres for `weir sink`, following libpq's `sslmode` in the
//! connection URL (`?sslmode=verify-full&sslrootcert=/etc/ca.pem`):
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | not checked |
//! | `require` | always | not checked (checked against `sslrootcert` when one is given, as libpq does) |
//! | `verify-ca` | always | signed by `sslrootcert` (default: the system's CAs) |
//! | `verify-full` | always | as `verify-ca`, and issued for the host connected to |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`, so those two options are taken out of the URL here and
//! applied to the OpenSSL connector (the OpenSSL librdkafka links too).

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS options of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) mode: Mode,
    pub(crate) root_cert: Option<PathBuf>,
}

fn mode(value: &str) -> Result<Mode, String> {
    Ok(match value {
        "disable" => Mode::Disable,
        "prefer" => Mode::Prefer,
        "require" => Mode::Require,
        "verify-ca" => Mode::VerifyCa,
        "verify-full" => Mode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
        }
    })
}

/// `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection string without `sslmode` and `sslrootcert`, and those
/// options. Both forms libpq takes: a URL (`postgres://…?sslmode=…`) and
/// `key=value` words (`host=… sslmode=…`, values without blanks).
pub(crate) fn split(conn: &str) -> Result<(String, Options), String> {
    let mut options = Options {
        mode: Mode::Prefer,
        root_cert: None,
    };
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => options.mode = mode(&value)?,
            "sslrootcert" => options.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, percent_decode(v))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in conn.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k.trim(), v.trim_matches('\'').to_string())? {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok((rest, options))
}

impl Options {
    /// tokio-postgres' share of the mode: whether to ask for TLS and
    /// whether it is required.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector checking the server's certificate as the mode says.
    pub(crate) fn connector(&self) -> Result<MakeTlsConnector, String> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| format!("setting up TLS: {e}"))?;
        let verify = match self.mode {
            Mode::Disable | Mode::Prefer => false,
            Mode::Require => self.root_cert.is_some(),
            Mode::VerifyCa | Mode::VerifyFull => true,
        };
        if verify {
            if let Some(ca) = &self.root_cert {
                builder
                    .set_ca_file(ca)
                    .map_err(|e| format!("sslrootcert={}: cannot load it: {e}", ca.display()))?;
            }
            builder.set_verify(SslVerifyMode::PEER);
        } else {
            builder.set_verify(SslVerifyMode::NONE);
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        if self.mode != Mode::VerifyFull {
            // Only verify-full checks the host name.
            connector.set_callback(|config, _domain| {
                config.set_verify_hostname(false);
                Ok(())
            });
        }
        Ok(connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_url() {
        let (url, o) =
            split("postgres://u:p@db:5432/weir?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem")
                .unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/weir?application_name=x");
        assert_eq!(o.mode, Mode::VerifyFull);
        assert_eq!(o.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.ssl_mode(), SslMode::Require);
        let _: tokio_postgres::Config = url.parse().unwrap();

        let (url, o) = split("postgres://u@db/weir?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@db/weir");
        assert_eq!((o.mode, o.ssl_mode()), (Mode::Require, SslMode::Require));

        let (url, o) = split("postgres://u@db/weir").unwrap();
        assert_eq!(url, "postgres://u@db/weir");
        assert_eq!((o.mode, o.ssl_mode()), (Mode::Prefer, SslMode::Prefer));
        assert_eq!(
            split("postgres://u@db/weir?sslmode=disable").unwrap().1.ssl_mode(),
            SslMode::Disable
        );
        assert_eq!(
            split("postgres://u@db/weir?sslmode=verify-ca").unwrap().1.mode,
            Mode::VerifyCa
        );

        let err = split("postgres://u@db/weir?sslmode=verify_full").unwrap_err();
        assert!(err.contains("sslmode=verify_full is not one of"), "{err}");
    }

    #[test]
    fn key_value_strings_too() {
        let (conn, o) = split("host=db user=weir sslmode=verify-ca sslrootcert=/ca.pem dbname=weir").unwrap();
        assert_eq!(conn, "host=db user=weir dbname=weir");
        assert_eq!(o.mode, Mode::VerifyCa);
        assert_eq!(o.root_cert, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn a_missing_root_certificate_is_named() {
        let o = Options {
            mode: Mode::VerifyFull,
            root_cert: Some("/no/such/ca.pem".into()),
        };
        let err = o.connector().err().unwrap();
        assert!(err.contains("sslrootcert=/no/such/ca.pem"), "{err}");
        // Not checked, so not loaded.
        let o = Options {
            mode: Mode::Prefer,
            root_cert: Some("/no/such/ca.pem".into()),
        };
        assert!(o.connector().is_ok());
    }
}
