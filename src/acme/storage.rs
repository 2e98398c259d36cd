//! The on-disk cache of ACME accounts and certificates, in the layout the reference (through
//! its certmagic library) uses, so an existing installation's files are picked up as they are
//! and ours stay readable by it:
//!
//! ```text
//! <root>/acme/<issuer>/users/<email>/<local part>.json   account (status, contact, location)
//! <root>/acme/<issuer>/users/<email>/<local part>.key    account key (PEM, ECDSA P-256)
//! <root>/certificates/<issuer>/<name>/<name>.crt          chain from the CA, leaf first
//! <root>/certificates/<issuer>/<name>/<name>.key          certificate key (PEM)
//! <root>/certificates/<issuer>/<name>/<name>.json         {"sans", "issuer_data"}
//! <root>/locks/issue_cert_<name>.lock                     held while issuing
//! ```
//!
//! `<root>` is `$XDG_DATA_HOME/certmagic`, else `$HOME/.local/share/certmagic`. Directories
//! are made 0700 and files 0600. Owns these files only; never talks to the network.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lock whose holder has not refreshed it for this long is taken over.
const LOCK_STALE: Duration = Duration::from_secs(10);

/// How often a held lock is refreshed.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5);

/// The storage root: `$XDG_DATA_HOME/certmagic`, else `$HOME/.local/share/certmagic` (relative
/// to the working directory when `HOME` is empty), as the reference computes it at start.
pub fn default_root() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    match non_empty("XDG_DATA_HOME") {
        Some(data) => PathBuf::from(data).join("certmagic"),
        None => PathBuf::from(non_empty("HOME").unwrap_or_default()).join(".local/share/certmagic"),
    }
}

/// A path component made safe the reference's way: lower case, `:` to `-`, space to `_`, `+`
/// to `_plus_`, `*` to `wildcard_`, `..` removed, anything outside `[A-Za-z0-9_@.-]` dropped.
pub fn safe(s: &str) -> String {
    let s = s.trim().to_lowercase();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push('_'),
            '+' => out.push_str("_plus_"),
            '*' => out.push_str("wildcard_"),
            ':' => out.push('-'),
            _ => out.push(c),
        }
    }
    let out = out.replace("..", "");
    out.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '.' | '-'))
        .collect()
}

/// The directory name of a CA: its host (with port) and path, slashes turned into dashes, e.g.
/// `https://acme-v02.api.letsencrypt.org/directory` gives `acme-v02.api.letsencrypt.org-directory`.
pub fn issuer_key(ca_url: &str) -> String {
    let Some((_, rest)) = ca_url.split_once("://") else {
        return safe(ca_url);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    let path = path.replace(['/', '\\'], "-");
    let path = path.trim_matches('-');
    let key = if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}-{path}")
    };
    safe(&key)
}

/// Where everything for one CA, name and email lives.
#[derive(Debug, Clone)]
pub struct Storage {
    pub root: PathBuf,
    issuer: String,
    name: String,
    email: String,
}

/// A certificate as stored: the PEM chain and key exactly as on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// An account as stored: its URL at the CA and its PEM key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub location: String,
    pub key_pem: Vec<u8>,
}

impl Storage {
    pub fn new(root: PathBuf, ca_url: &str, name: &str, email: &str) -> Storage {
        Storage {
            root,
            issuer: issuer_key(ca_url),
            name: name.to_lowercase(),
            email: email.to_lowercase(),
        }
    }

    fn cert_dir(&self) -> PathBuf {
        let name = safe(&self.name);
        self.root.join("certificates").join(&self.issuer).join(name)
    }

    fn cert_file(&self, ext: &str) -> PathBuf {
        self.cert_dir().join(format!("{}.{ext}", safe(&self.name)))
    }

    fn user_file(&self, ext: &str) -> PathBuf {
        let email = if self.email.is_empty() {
            "default"
        } else {
            &self.email
        };
        let local = match email.find('@') {
            None => email,
            Some(0) => &email[1..],
            Some(at) => &email[..at],
        };
        let stem = match (local.is_empty(), ext) {
            (false, _) => local,
            (true, "key") => "private",
            (true, _) => "registration",
        };
        self.root
            .join("acme")
            .join(&self.issuer)
            .join("users")
            .join(safe(email))
            .join(format!("{}.{ext}", safe(stem)))
    }

    /// The certificate's PEM chain file (for logs and `--check`).
    pub fn cert_path(&self) -> PathBuf {
        self.cert_file("crt")
    }

    /// The reference's storage self-test: the root can be created, written, read back and
    /// cleaned up. Errors read `failed storage check: mkdir /root/.local: permission denied -
    /// storage is probably misconfigured`.
    pub fn check(&self) -> Result<(), String> {
        let probe = self.root.join(format!("rw_test_{}", random_suffix()));
        let result = mkdir_all(&self.root)
            .and_then(|()| write_file(&probe, b"test"))
            .and_then(|()| {
                let back = fs::read(&probe).map_err(|e| io_text("open", &probe, &e))?;
                match back.as_slice() {
                    b"test" => Ok(()),
                    _ => Err(format!("{}: read back different bytes", probe.display())),
                }
            });
        let _ = fs::remove_file(&probe);
        result.map_err(|e| format!("failed storage check: {e} - storage is probably misconfigured"))
    }

    /// The stored certificate, `Ok(None)` when there is none (no `.crt` or no `.key`).
    pub fn load_cert(&self) -> Result<Option<StoredCert>, String> {
        let (Some(chain_pem), Some(key_pem)) = (
            read_optional(&self.cert_file("crt"))?,
            read_optional(&self.cert_file("key"))?,
        ) else {
            return Ok(None);
        };
        Ok(Some(StoredCert { chain_pem, key_pem }))
    }

    /// Stores a new certificate: key, then chain, then the metadata the reference expects
    /// beside them (`sans` and the order's `issuer_data`).
    pub fn save_cert(
        &self,
        cert: &StoredCert,
        cert_url: &str,
        ca_url: &str,
        account: &str,
    ) -> Result<(), String> {
        mkdir_all(&self.cert_dir())?;
        write_file(&self.cert_file("key"), &cert.key_pem)?;
        write_file(&self.cert_file("crt"), &cert.chain_pem)?;
        let meta = serde_json::json!({
            "sans": [self.name],
            "issuer_data": { "url": cert_url, "ca": ca_url, "account": account },
        });
        let text = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())?;
        // The reference indents with tabs; keep its files byte-alike.
        let text = text
            .lines()
            .map(|l| {
                let spaces = l.len() - l.trim_start_matches(' ').len();
                format!("{}{}", "\t".repeat(spaces / 2), &l[spaces..])
            })
            .collect::<Vec<_>>()
            .join("\n");
        write_file(&self.cert_file("json"), text.as_bytes())
    }

    /// The stored account, `Ok(None)` when there is none. An account file without a location
    /// (possible in older caches) is treated as absent: the key is looked up again at the CA.
    pub fn load_account(&self) -> Result<Option<StoredAccount>, String> {
        let (Some(json), Some(key_pem)) = (
            read_optional(&self.user_file("json"))?,
            read_optional(&self.user_file("key"))?,
        ) else {
            return Ok(None);
        };
        let value: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|e| format!("decoding account {}: {e}", self.user_file("json").display()))?;
        let location = value["location"].as_str().unwrap_or_default().to_string();
        Ok(Some(StoredAccount { location, key_pem }))
    }

    /// Stores an account: its key and its registration (`status`, `contact`,
    /// `termsOfServiceAgreed`, `orders`, `location`).
    pub fn save_account(&self, account: &StoredAccount) -> Result<(), String> {
        let json = self.user_file("json");
        if let Some(dir) = json.parent() {
            mkdir_all(dir)?;
        }
        write_file(&self.user_file("key"), &account.key_pem)?;
        let contact: Vec<String> = match self.email.is_empty() {
            true => vec![],
            false => vec![format!("mailto:{}", self.email)],
        };
        let reg = serde_json::json!({
            "status": "valid",
            "contact": contact,
            "termsOfServiceAgreed": true,
            "orders": "",
            "location": account.location,
        });
        let text = serde_json::to_string_pretty(&reg).map_err(|e| e.to_string())?;
        write_file(&json, text.as_bytes())
    }

    /// Takes the issuance lock for the name, waiting while another live process holds it, at
    /// most `wait`. A lock not refreshed for 10 s is stale and taken over.
    pub fn lock(&self, wait: Duration) -> Result<Lock, String> {
        let dir = self.root.join("locks");
        mkdir_all(&dir)?;
        let path = dir.join(format!("issue_cert_{}.lock", safe(&self.name)));
        let start = std::time::Instant::now();
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    let now = rfc3339(SystemTime::now());
                    let body = format!("{{\"created\":\"{now}\",\"updated\":\"{now}\"}}");
                    f.write_all(body.as_bytes())
                        .map_err(|e| io_text("write", &path, &e))?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_none_or(|age| age > LOCK_STALE);
                    if stale {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if start.elapsed() >= wait {
                        return Err(format!(
                            "timed out waiting for lock {} held by another process",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(io_text("open", &path, &e)),
            }
        }
    }
}

/// A held issuance lock; released (the file removed) on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Marks the lock as still held, so that no other process takes it over as stale.
    pub fn refresh(&self) {
        let now = SystemTime::now();
        if let Ok(f) = OpenOptions::new().write(true).open(&self.path) {
            let _ = f.set_modified(now);
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `mkdir -p` with mode 0700 whose error names the directory that failed, as Go's MkdirAll
/// does: `mkdir /root/.local: permission denied`.
fn mkdir_all(dir: &Path) -> Result<(), String> {
    if let Ok(meta) = fs::metadata(dir) {
        return match meta.is_dir() {
            true => Ok(()),
            false => Err(format!("mkdir {}: not a directory", dir.display())),
        };
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_text("mkdir", dir, &e)),
    }
}

/// Writes a whole file with mode 0600 through a temporary file and a rename, so a reader never
/// sees half a certificate.
fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", random_suffix()));
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_text("open", &tmp, &e))?;
        f.write_all(data).map_err(|e| io_text("write", &tmp, &e))?;
        f.sync_all().map_err(|e| io_text("sync", &tmp, &e))?;
        fs::rename(&tmp, path).map_err(|e| io_text("rename", path, &e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_text("open", path, &e)),
    }
}

/// `<op> <path>: <errno text>` without Rust's `(os error N)`.
fn io_text(op: &str, path: &Path, e: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), crate::net::strip_os_error(e))
}

fn random_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("{}{nanos:09}", std::process::id())
}

/// UTC time as `YYYY-MM-DDThh:mm:ssZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn issuer_directories_match_the_reference() {
        assert_eq!(
            issuer_key("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(
            issuer_key("https://127.0.0.1:35600/dir"),
            "127.0.0.1-35600-dir"
        );
        assert_eq!(issuer_key("https://ca.example/"), "ca.example");
        assert_eq!(issuer_key("https://ca.example/a/b/"), "ca.example-a-b");
    }

    #[test]
    fn safe_names_drop_what_a_path_must_not_hold() {
        assert_eq!(safe("GhostUnnel.Example.com"), "ghostunnel.example.com");
        assert_eq!(safe("*.example.com"), "wildcard_.example.com");
        assert_eq!(safe("a+b c"), "a_plus_b_c");
        assert_eq!(safe("../../etc/passwd"), "etcpasswd");
        assert_eq!(safe("admin@example.com"), "admin@example.com");
    }

    #[test]
    fn files_land_where_the_reference_keeps_them() {
        let s = Storage::new(
            PathBuf::from("/d/certmagic"),
            "https://127.0.0.1:35600/dir",
            "GhostUnnel.example.com",
            "Admin@Example.com",
        );
        assert_eq!(
            s.cert_path(),
            Path::new(
                "/d/certmagic/certificates/127.0.0.1-35600-dir/ghostunnel.example.com/ghostunnel.example.com.crt"
            )
        );
        assert_eq!(
            s.user_file("key"),
            Path::new("/d/certmagic/acme/127.0.0.1-35600-dir/users/admin@example.com/admin.key")
        );
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gt-acme-{tag}-{}", random_suffix()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn certificates_and_accounts_round_trip_with_private_modes() {
        let root = scratch("rt").join("certmagic");
        let s = Storage::new(
            root.clone(),
            "https://ca.example/dir",
            "a.example",
            "me@x.org",
        );
        s.check().unwrap();
        assert_eq!(s.load_cert().unwrap(), None);
        assert_eq!(s.load_account().unwrap(), None);
        let cert = StoredCert {
            chain_pem: b"chain".to_vec(),
            key_pem: b"key".to_vec(),
        };
        s.save_cert(
            &cert,
            "https://ca.example/cert/1",
            "https://ca.example/dir",
            "https://ca.example/acct/1",
        )
        .unwrap();
        assert_eq!(s.load_cert().unwrap(), Some(cert));
        let meta = fs::read_to_string(s.cert_file("json")).unwrap();
        assert!(
            meta.contains("\n\t\"sans\": [\n\t\t\"a.example\"\n\t]"),
            "{meta}"
        );
        let acct = StoredAccount {
            location: "https://ca.example/acct/1".into(),
            key_pem: b"akey".to_vec(),
        };
        s.save_account(&acct).unwrap();
        assert_eq!(s.load_account().unwrap(), Some(acct));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.cert_file("key")), 0o600);
        assert_eq!(mode(&s.cert_dir()), 0o700);
        assert_eq!(mode(&root), 0o700);
        let _ = fs::remove_dir_all(root.parent().unwrap());
    }

    #[test]
    fn the_storage_check_names_the_directory_it_cannot_make() {
        let base = scratch("ro");
        fs::create_dir_all(&base).unwrap();
        let blocker = base.join("file");
        fs::write(&blocker, b"").unwrap();
        let s = Storage::new(blocker.join("certmagic"), "https://ca/dir", "a", "b@c");
        let e = s.check().unwrap_err();
        assert_eq!(
            e,
            format!(
                "failed storage check: mkdir {}: not a directory - storage is probably misconfigured",
                blocker.display()
            )
        );
        let _ = fs::remove_dir_all(&base);
    }

    #[test]
    fn a_live_lock_excludes_and_a_stale_one_is_taken_over() {
        let root = scratch("lock");
        let s = Storage::new(root.clone(), "https://ca/dir", "a.example", "b@c");
        let held = s.lock(Duration::ZERO).unwrap();
        let e = s.lock(Duration::from_millis(600)).unwrap_err();
        assert!(e.contains("timed out waiting for lock"), "{e}");
        // Age the lock past staleness: the next taker removes it.
        let f = OpenOptions::new().write(true).open(&held.path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let second = s.lock(Duration::ZERO).unwrap();
        drop(second);
        assert!(!held.path.exists());
        std::mem::forget(held);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn rfc3339_renders_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000)),
            "2026-05-28T20:26:40Z"
        );
    }
}
