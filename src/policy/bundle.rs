//! Reading a policy: a single `.rego` file (v0), a bundle directory, or a gzip-compressed
//! tar bundle. Error texts keep the reference's wording (`loading error: …`, `N error(s)
//! occurred during loading: …`); the engine's own messages follow them.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use regorus::{Engine, Value};

/// A bundle or query that cannot be used; `Display` is the text after the log prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub(super) fn query(engine_text: &str) -> LoadError {
        LoadError(format!("1 error occurred: {}", engine_error(engine_text)))
    }
}

/// One engine error on one line, as OPA prints them (`<file>:<line>: <message>`), followed by
/// the source line and a caret when the engine gave them. Other texts pass unchanged.
pub fn engine_error(text: &str) -> String {
    let text = text.trim();
    let mut location = None;
    let mut message = None;
    let mut source = None;
    let mut caret = None;
    for line in text.lines() {
        if let Some(loc) = line.trim_start().strip_prefix("--> ") {
            location = Some(loc.trim());
        } else if let Some(msg) = line.strip_prefix("error: ") {
            message = Some(msg.trim());
        } else if let Some((_, code)) = line.split_once(" | ") {
            if source.is_none() && line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
                source = Some(code);
            } else if code.trim_start().starts_with('^') {
                caret = Some(code);
            }
        }
    }
    let (Some(location), Some(message)) = (location, message) else {
        return text.to_string();
    };
    // `file:line:col` → `file:line`.
    let location = match location.rsplit_once(':') {
        Some((head, col)) if col.chars().all(|c| c.is_ascii_digit()) => head,
        _ => location,
    };
    let mut out = format!("{location}: {message}");
    if let (Some(source), Some(caret)) = (source, caret) {
        out.push_str(&format!("\n\t{source}\n\t{caret}"));
    }
    out
}

/// Deepest bracket nesting a module may have. The engine's parser backtracks on `[`, so its
/// time grows exponentially with nesting depth (a module of forty `[` took minutes); real
/// policies stay far below this.
const MAX_NESTING: usize = 16;

/// Refuses a module nested deeper than [`MAX_NESTING`] before the parser sees it. Strings
/// and comments are skipped; the error names the file and line like the parser's errors.
fn check_nesting(display: &str, text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    match c {
                        '`' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "{display}:{line}: brackets nested deeper than {MAX_NESTING} levels"
                    ));
                }
            }
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Largest bundle, compressed or not, and largest single file read from one.
const MAX_BUNDLE: u64 = 64 << 20;

/// Go's wording for an I/O error (`no such file or directory`, `permission denied`, …).
pub fn go_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::UnexpectedEof => "unexpected EOF".into(),
        _ => {
            let s = e.to_string();
            let s = match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            };
            let mut c = s.chars();
            match c.next() {
                Some(first) => first.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

/// One file of a bundle: its path relative to the bundle root (no leading `/`), the name
/// used in messages, and its bytes.
struct File {
    rel: String,
    display: String,
    bytes: Vec<u8>,
}

/// Loads `path` into a fresh engine; also says whether the query is Rego v0.
pub fn load(path: &str) -> Result<(Engine, bool), LoadError> {
    if path.ends_with(".rego") {
        return single(path).map(|e| (e, true));
    }
    let files = read_bundle(path)?;
    bundle_engine(path, files).map(|e| (e, false))
}

/// Single-file mode: a v0 module (or a directory of `.rego` files, loaded recursively).
fn single(path: &str) -> Result<Engine, LoadError> {
    let during = |msg: String| LoadError(format!("1 error occurred during loading: {msg}"));
    let meta =
        std::fs::metadata(path).map_err(|e| during(format!("stat {path}: {}", go_io(&e))))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(Path::new(path), "", &mut files)
            .map_err(|e| during(format!("{path}: {}", go_io(&e))))?;
    } else {
        let bytes = read_capped(path).map_err(|e| during(format!("{path}: {}", go_io(&e))))?;
        files.push(File {
            rel: String::new(),
            display: path.to_string(),
            bytes,
        });
    }
    let mut engine = Engine::new();
    engine.set_rego_v0(true);
    for f in files
        .iter()
        .filter(|f| f.rel.is_empty() || f.rel.ends_with(".rego"))
    {
        let text = String::from_utf8_lossy(&f.bytes).into_owned();
        check_nesting(&f.display, &text).map_err(during)?;
        engine
            .add_policy(f.display.clone(), text)
            .map_err(|e| during(engine_error(&e.to_string())))?;
    }
    Ok(engine)
}

fn read_capped(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BUNDLE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BUNDLE {
        return Err(io::Error::other(format!(
            "larger than {} MiB",
            MAX_BUNDLE >> 20
        )));
    }
    Ok(bytes)
}

/// Collects every file under `dir` (sorted, so loading order is stable).
fn walk(dir: &Path, rel: &str, out: &mut Vec<File>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut total: u64 = out.iter().map(|f| f.bytes.len() as u64).sum();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = entry.path();
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            walk(&path, &child_rel, out)?;
            total = out.iter().map(|f| f.bytes.len() as u64).sum();
        } else if meta.is_file() && wanted(&child_rel) {
            let bytes = read_capped(&path)?;
            total += bytes.len() as u64;
            if total > MAX_BUNDLE {
                return Err(io::Error::other(format!(
                    "larger than {} MiB",
                    MAX_BUNDLE >> 20
                )));
            }
            out.push(File {
                display: path.to_string_lossy().into_owned(),
                rel: child_rel,
                bytes,
            });
        }
    }
    Ok(())
}

/// Files a bundle reader looks at; everything else (READMEs, other JSON) is ignored.
fn wanted(rel: &str) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    rel.ends_with(".rego")
        || matches!(
            base,
            "data.json"
                | "data.yaml"
                | "data.yml"
                | ".manifest"
                | ".signatures.json"
                | "policy.wasm"
                | "plan.json"
        )
}

/// Bundle mode: a directory, or else a gzip-compressed tar file.
fn read_bundle(path: &str) -> Result<Vec<File>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        LoadError(format!(
            "loading error: error reading {path:?}: stat {path}: {}",
            go_io(&e)
        ))
    })?;
    let failed = |msg: String| LoadError(format!("loading error: bundle {path}: {msg}"));
    if meta.is_dir() {
        let root = path.trim_end_matches('/');
        let mut files = Vec::new();
        walk(Path::new(path), "", &mut files).map_err(|e| failed(go_io(&e)))?;
        for f in &mut files {
            f.display = format!("{root}/{}", f.rel);
        }
        return Ok(files);
    }
    let bytes =
        read_capped(path).map_err(|e| failed(format!("bundle read failed: {}", go_io(&e))))?;
    read_archive(&bytes)
        .map_err(|msg| failed(format!("bundle read failed: archive read failed: {msg}")))
}

/// The members of a gzip-compressed tar archive.
fn read_archive(bytes: &[u8]) -> Result<Vec<File>, String> {
    // A gzip header is 10 bytes; Go's reader reports a shorter file as EOF first.
    match bytes.len() {
        0 => return Err("EOF".into()),
        1..10 => return Err("unexpected EOF".into()),
        _ if bytes[..2] != [0x1f, 0x8b] => return Err("gzip: invalid header".into()),
        _ => {}
    }
    let gz = flate2::read::GzDecoder::new(bytes).take(MAX_BUNDLE + 1);
    let mut archive = tar::Archive::new(gz);
    let mut files = Vec::new();
    let mut total: u64 = 0;
    let entries = archive.entries().map_err(|e| tar_error(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_error(&e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| tar_error(&e))?
            .to_string_lossy()
            .into_owned();
        let rel = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if rel.split('/').any(|c| c == "..") {
            return Err(format!("invalid path {name:?}"));
        }
        if !wanted(&rel) {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| tar_error(&e))?;
        total += data.len() as u64;
        if total > MAX_BUNDLE {
            return Err(format!("larger than {} MiB", MAX_BUNDLE >> 20));
        }
        files.push(File {
            display: format!("/{rel}"),
            rel,
            bytes: data,
        });
    }
    Ok(files)
}

fn tar_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "unexpected EOF".into(),
        _ => go_io(e),
    }
}

/// What `.manifest` says about syntax and roots.
struct Manifest {
    /// Default module syntax: true for Rego v0.
    v0: bool,
    /// Per-file overrides (path relative to the root, no leading `/`), true for v0.
    per_file: Vec<(String, bool)>,
    /// Path prefixes (slash-separated) the bundle may define; `[""]` means everything.
    roots: Vec<String>,
}

fn manifest(file: Option<&File>) -> Result<Manifest, String> {
    let mut m = Manifest {
        v0: false,
        per_file: Vec::new(),
        roots: vec![String::new()],
    };
    let Some(file) = file else {
        return Ok(m);
    };
    let text = String::from_utf8_lossy(&file.bytes);
    let value = Value::from_json_str(&text).map_err(|e| format!("{}: {e}", file.display))?;
    let version = |v: &Value| -> Result<bool, String> {
        match v.as_i64() {
            Ok(0) => Ok(true),
            Ok(1) => Ok(false),
            _ => Err(format!("{}: invalid rego_version", file.display)),
        }
    };
    if let Ok(obj) = value.as_object() {
        if let Some(v) = obj.get(&Value::from("rego_version")) {
            m.v0 = version(v)?;
        }
        if let Some(Value::Object(map)) = obj.get(&Value::from("file_rego_versions")) {
            for (k, v) in map.iter() {
                if let Ok(k) = k.as_string() {
                    m.per_file
                        .push((k.trim_start_matches('/').to_string(), version(v)?));
                }
            }
        }
        if let Some(roots) = obj.get(&Value::from("roots")) {
            let list = roots
                .as_array()
                .map_err(|_| format!("{}: roots must be an array", file.display))?;
            m.roots = list
                .iter()
                .filter_map(|r| r.as_string().ok().map(|s| s.trim_matches('/').to_string()))
                .collect();
        }
    }
    Ok(m)
}

impl Manifest {
    fn permits(&self, path: &str) -> bool {
        self.roots
            .iter()
            .any(|r| r.is_empty() || path == r || path.starts_with(&format!("{r}/")))
    }

    fn roots_text(&self) -> String {
        format!("[{}]", self.roots.join(" "))
    }

    fn is_v0(&self, rel: &str) -> bool {
        self.per_file
            .iter()
            .find(|(p, _)| p == rel)
            .map_or(self.v0, |(_, v0)| *v0)
    }
}

/// Builds the engine from a bundle's files.
fn bundle_engine(path: &str, files: Vec<File>) -> Result<Engine, LoadError> {
    let failed = |msg: String| LoadError(format!("loading error: bundle {path}: {msg}"));
    let base = |f: &File| f.rel.rsplit('/').next().unwrap_or(&f.rel).to_string();
    if files.iter().any(|f| f.rel == ".signatures.json") {
        return Err(failed("verification key not provided".into()));
    }
    if let Some(f) = files
        .iter()
        .find(|f| f.rel == "policy.wasm" || f.rel == "plan.json")
    {
        return Err(failed(format!(
            "{}: wasm and plan bundles are not supported by this build",
            f.display
        )));
    }
    let manifest = manifest(files.iter().find(|f| f.rel == ".manifest")).map_err(failed)?;
    let mut engine = Engine::new();
    for f in files.iter().filter(|f| f.rel.ends_with(".rego")) {
        engine.set_rego_v0(manifest.is_v0(&f.rel));
        let text = String::from_utf8_lossy(&f.bytes).into_owned();
        check_nesting(&f.display, &text).map_err(|e| failed(format!("1 error occurred: {e}")))?;
        let package = engine.add_policy(f.display.clone(), text).map_err(|e| {
            failed(format!(
                "1 error occurred: {}",
                engine_error(&e.to_string())
            ))
        })?;
        let package = package
            .strip_prefix("data.")
            .unwrap_or(&package)
            .to_string();
        if !manifest.permits(&package.replace('.', "/")) {
            return Err(failed(format!(
                "manifest roots {} do not permit 'package {package}' in module '{}'",
                manifest.roots_text(),
                f.display
            )));
        }
    }
    for f in files.iter().filter(|f| {
        let b = base(f);
        b == "data.json" || b == "data.yaml" || b == "data.yml"
    }) {
        let text = String::from_utf8_lossy(&f.bytes);
        if !f.rel.ends_with(".json") {
            // No YAML parser in this build (its size); `opa build` writes JSON data anyway.
            return Err(failed(format!(
                "{}: YAML data files are not supported by this build (use data.json)",
                f.display
            )));
        }
        let mut value =
            Value::from_json_str(&text).map_err(|e| failed(format!("{}: {e}", f.display)))?;
        let dir: Vec<&str> = match f.rel.rsplit_once('/') {
            Some((d, _)) => d.split('/').filter(|c| !c.is_empty()).collect(),
            None => Vec::new(),
        };
        // Data at the root is checked key by key, elsewhere at its directory.
        let paths: Vec<String> = if dir.is_empty() {
            match value.as_object() {
                Ok(obj) => obj
                    .keys()
                    .filter_map(|k| k.as_string().ok().map(|k| k.to_string()))
                    .collect(),
                Err(_) => vec![String::new()],
            }
        } else {
            vec![dir.join("/")]
        };
        if let Some(path) = paths.iter().find(|p| !manifest.permits(p)) {
            return Err(failed(format!(
                "manifest roots {} do not permit data at path '/{path}'",
                manifest.roots_text()
            )));
        }
        for component in dir.iter().rev() {
            let mut map = std::collections::BTreeMap::new();
            map.insert(Value::from(*component), value);
            value = Value::from(map);
        }
        engine
            .add_data(value)
            .map_err(|e| failed(format!("{}: {e}", f.display)))?;
    }
    Ok(engine)
}

/// Loads a bundle from archive bytes (the fuzz target's entry): every error is a `LoadError`.
pub fn load_archive_bytes(bytes: &[u8]) -> Result<Engine, LoadError> {
    let files = read_archive(bytes).map_err(LoadError)?;
    bundle_engine("fuzz.tar.gz", files)
}
