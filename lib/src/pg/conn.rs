//! Connection settings found the way `psql` and `pg_basebackup` find them.
//!
//! Flags win over `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`; the password comes from
//! `PGPASSWORD`, else the password file (`PGPASSFILE`, else `~/.pgpass`, ignored with a
//! warning unless it is a regular file without group or world access). With nothing set:
//! the local socket directories `/var/run/postgresql` and `/tmp`, port 5432, the operating
//! system user, and a database named after the user. A host starting with `/` is a socket
//! directory; `PGHOST` may list several hosts separated by commas. The password is never
//! logged, and [`ConnParams`]'s `Debug` hides it.

use std::fmt;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Socket directories tried when no host is given.
pub const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];
/// Port used when none is given.
pub const DEFAULT_PORT: u16 = 5432;

/// Where and as whom to connect.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnParams {
    /// Host name, address or socket directory; comma-separated for several; `None`: local sockets.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ConnParams {
    /// Resolve the settings from flags, then the environment, then the defaults above. The
    /// result has `port`, `user` and `dbname` filled in.
    ///
    /// # Errors
    /// [`Error::Config`] naming `PGPORT` when it is not a port, `PGSSLMODE` when it asks for
    /// TLS (this build connects without TLS: use a socket or a trusted network), `PGUSER` when
    /// no user name can be found.
    pub fn from_env_and_flags(
        host: Option<String>,
        port: Option<u16>,
        user: Option<String>,
        dbname: Option<String>,
    ) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::resolve(host, port, user, dbname, &env)
    }

    /// [`Self::from_env_and_flags`] with the environment passed in (for tests).
    ///
    /// # Errors
    /// As [`Self::from_env_and_flags`].
    pub fn resolve(
        host: Option<String>,
        port: Option<u16>,
        user: Option<String>,
        dbname: Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        if let Some(mode) = env("PGSSLMODE")
            && matches!(mode.as_str(), "require" | "verify-ca" | "verify-full")
        {
            return Err(Error::config(
                "PGSSLMODE",
                format!("{mode} needs tls, which this build does not support; use disable or prefer"),
            ));
        }
        let host = host.or_else(|| env("PGHOST"));
        let port = match (port, env("PGPORT")) {
            (Some(p), _) => p,
            (None, Some(p)) => {
                p.trim().parse().map_err(|_| Error::config("PGPORT", format!("{p:?} is not a port number")))?
            }
            (None, None) => DEFAULT_PORT,
        };
        let user = match user.or_else(|| env("PGUSER")) {
            Some(u) => u,
            None => os_user_name(env)
                .ok_or_else(|| Error::config("PGUSER", "not set and the operating system user name is unknown"))?,
        };
        let dbname = dbname.or_else(|| env("PGDATABASE")).unwrap_or_else(|| user.clone());
        let password = match env("PGPASSWORD") {
            Some(p) => Some(p),
            None => {
                let file =
                    env("PGPASSFILE").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
                let first_host = host.as_deref().and_then(|h| h.split(',').next()).unwrap_or("");
                file.and_then(|f| read_pgpass(&f, first_host, port, &dbname, &user))
            }
        };
        Ok(ConnParams { host, port: Some(port), user: Some(user), dbname: Some(dbname), password })
    }

    /// The hosts to try, in order.
    pub fn hosts(&self) -> Vec<String> {
        match self.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            None => DEFAULT_SOCKET_DIRS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A tokio-postgres configuration for these settings.
    pub fn to_config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        for h in self.hosts() {
            if h.starts_with('/') {
                config.host_path(h);
            } else {
                config.host(&h);
            }
        }
        config.port(self.port.unwrap_or(DEFAULT_PORT));
        if let Some(u) = &self.user {
            config.user(u);
        }
        if let Some(d) = self.dbname.as_ref().or(self.user.as_ref()) {
            config.dbname(d);
        }
        if let Some(p) = &self.password {
            config.password(p);
        }
        config.application_name(application_name);
        config
    }

    /// `host:port` (or the socket directories) for log lines; never the password.
    pub fn describe(&self) -> String {
        format!("{} port {}", self.hosts().join(","), self.port.unwrap_or(DEFAULT_PORT))
    }
}

/// The user name for the process's uid from `/etc/passwd`, else `USER` or `LOGNAME`.
fn os_user_name(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let uid = fs::metadata("/proc/self").ok().map(|m| m.uid());
    let from_passwd = uid.and_then(|uid| {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
    });
    from_passwd.or_else(|| env("USER")).or_else(|| env("LOGNAME"))
}

/// The password for this connection from the password file at `path`, if the file is usable
/// and has a matching line. A file with group or world access is ignored with a warning.
pub fn read_pgpass(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!("password file {} is not a plain file", path.display());
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    pgpass_lookup(&text, host, port, dbname, user)
}

/// libpq's password-file match: the first `host:port:database:user:password` line whose
/// fields equal the connection's or are `*`. `\:` and `\\` are escapes. A socket connection to
/// a default directory (or with no host) matches `localhost`.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let host = if host.is_empty() || DEFAULT_SOCKET_DIRS.contains(&host) { "localhost" } else { host };
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).find_map(|line| {
        let fields = split_pgpass_line(line.trim_end_matches('\r'))?;
        let matches = fields.iter().zip(wanted).take(4).all(|(f, w)| f == "*" || f == w);
        matches.then(|| fields.get(4).cloned()).flatten()
    })
}

/// Five fields split on unescaped `:`; the password is the rest of the line.
fn split_pgpass_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PGPASS: &str = "# comment\n\
        db.example.com:5432:app:alice:s3cret\n\
        *:*:*:bob:pa\\:ss\\\\word\n\
        localhost:5433:*:*:local-pw\n\
        /run/pg:*:*:carol:sock:pw\n";

    #[test]
    fn pgpass_matching() {
        assert_eq!(pgpass_lookup(PGPASS, "db.example.com", 5432, "app", "alice").as_deref(), Some("s3cret"));
        assert_eq!(pgpass_lookup(PGPASS, "db.example.com", 5432, "other", "alice"), None);
        assert_eq!(pgpass_lookup(PGPASS, "anything", 1, "x", "bob").as_deref(), Some("pa:ss\\word"));
        assert_eq!(pgpass_lookup(PGPASS, "", 5433, "x", "dave").as_deref(), Some("local-pw"));
        assert_eq!(pgpass_lookup(PGPASS, "/var/run/postgresql", 5433, "x", "dave").as_deref(), Some("local-pw"));
        assert_eq!(pgpass_lookup(PGPASS, "/run/pg", 5432, "x", "carol").as_deref(), Some("sock:pw"));
        assert_eq!(pgpass_lookup("short:line\n", "short", 5432, "x", "y"), None);
    }

    #[test]
    fn pgpass_file_must_be_private() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = tmp.path().join("pgpass");
        fs::write(&path, PGPASS).unwrap_or_else(|e| panic!("{e}"));
        let set = |mode| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("{e}"));
        set(0o644);
        assert_eq!(read_pgpass(&path, "h", 1, "d", "bob"), None);
        set(0o600);
        assert_eq!(read_pgpass(&path, "h", 1, "d", "bob").as_deref(), Some("pa:ss\\word"));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_override_environment() {
        let e = env(&[("PGHOST", "envhost"), ("PGPORT", "6000"), ("PGUSER", "envuser"), ("PGPASSWORD", "pw")]);
        let p = ConnParams::resolve(Some("/sock".into()), None, None, Some("db".into()), &e)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.host.as_deref(), p.port, p.user.as_deref(), p.dbname.as_deref(), p.password.as_deref()),
            (Some("/sock"), Some(6000), Some("envuser"), Some("db"), Some("pw"))
        );
        assert!(!format!("{p:?}").contains("pw\""), "password must not be printed: {p:?}");
        let p =
            ConnParams::resolve(None, Some(7000), Some("u".into()), None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.port, p.dbname.as_deref(), p.hosts()),
            (Some(7000), Some("u"), vec!["/var/run/postgresql".to_owned(), "/tmp".to_owned()])
        );
        let p = ConnParams::resolve(None, None, None, None, &env(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.user.is_some_and(|u| !u.is_empty()));
    }

    #[test]
    fn bad_environment_names_the_variable() {
        let err = |pairs: &[(&str, &str)]| {
            ConnParams::resolve(None, None, Some("u".into()), None, &env(pairs)).err().map(|e| e.to_string())
        };
        assert_eq!(err(&[("PGPORT", "54x")]).as_deref(), Some("setting PGPORT: \"54x\" is not a port number"));
        assert_eq!(
            err(&[("PGSSLMODE", "require")]).as_deref(),
            Some("setting PGSSLMODE: require needs tls, which this build does not support; use disable or prefer")
        );
    }
}
