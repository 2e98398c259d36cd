//! `--enable-pprof`: the reference's `/debug/pprof/` routes on the status listener, as far as
//! they mean something for a native process.
//!
//! The reference serves Go's runtime profiles there. What operators actually read is the first
//! line of `GET /debug/pprof/goroutine?debug=1`, `goroutine profile: total N`, to watch for
//! leaks. Here the unit of concurrency is the OS thread (one per connection plus a fixed few),
//! so N is the process's thread count and it moves with load the way the goroutine count does;
//! one line per thread follows (id, name and state from `/proc`). `/debug/pprof/` is an index
//! of what is served. Every other profile describes Go's runtime, which this process does not
//! have, so it answers 404 with a line saying so rather than anything made up.
//!
//! Owns no sockets: the status server asks [`route`] first and serves what it returns.
//! Without the flag [`route`] returns `None` and the paths are ordinary unknown paths.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the routes on (`--enable-pprof`). Call before the status listener serves.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// An answer of these routes: status code, content type, extra header lines (each ending in
/// CRLF) and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub ctype: &'static str,
    pub headers: String,
    pub body: String,
}

const PREFIX: &str = "/debug/pprof";
const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
/// Every answer but the redirect carries these, as the reference's handlers send them; error
/// answers add `X-Go-Pprof: 1`, which `go tool pprof` looks for to show the body.
const NOSNIFF: &str = "X-Content-Type-Options: nosniff\r\n";
const ERROR_HEADERS: &str = "X-Content-Type-Options: nosniff\r\nX-Go-Pprof: 1\r\n";

/// The answer for a request target (path and query), or `None` when it is not one of these
/// routes or the flag is off. Any method is accepted, as in the reference.
pub fn route(target: &str) -> Option<Response> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    answer(target)
}

fn answer(target: &str) -> Option<Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path.strip_prefix(PREFIX)?;
    if name.is_empty() {
        return Some(Response {
            code: 307,
            ctype: HTML,
            headers: "Location: /debug/pprof/\r\n".to_string(),
            body: "<a href=\"/debug/pprof/\">Temporary Redirect</a>.\n\n".to_string(),
        });
    }
    let name = name.strip_prefix('/')?;
    Some(match name {
        "" => Response {
            code: 200,
            ctype: HTML,
            headers: NOSNIFF.to_string(),
            body: index(),
        },
        "goroutine" if debug_level(query) > 0 => Response {
            code: 200,
            ctype: TEXT,
            headers: NOSNIFF.to_string(),
            body: goroutine_text(&crate::procinfo::threads()),
        },
        "goroutine" => not_served(
            "goroutine is served only as text (debug=1): this native process has no Go \
             runtime to take a binary profile of",
        ),
        _ => not_served(
            "this native process has no Go runtime; only goroutine?debug=1 (its OS threads) \
             is served",
        ),
    })
}

fn not_served(why: &str) -> Response {
    Response {
        code: 404,
        ctype: TEXT,
        headers: ERROR_HEADERS.to_string(),
        body: format!("Unknown profile: {why}\n"),
    }
}

/// `debug=N` of the query; absent or unparsable is 0, as Go's handler reads it.
fn debug_level(query: &str) -> i64 {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "debug")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The reference's header line with the thread count, then one line per thread.
pub fn goroutine_text(threads: &[crate::procinfo::Thread]) -> String {
    let mut out = format!("goroutine profile: total {}\n", threads.len());
    for t in threads {
        out.push_str(&format!("# thread {} [{}] {}\n", t.tid, t.name, t.state));
    }
    out
}

fn index() -> String {
    let count = crate::procinfo::thread_count().unwrap_or(0);
    format!(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n\
         <br>\n<p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\n\
         Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
         <tr><td>{count}</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>\n\
         </table>\n<br>\n<p>\n<div class=profile-name>goroutine: </div> The process's OS \
         threads (one per connection plus a fixed few), with their names and states. This \
         is a native process: Go's other profiles (heap, allocs, block, mutex, \
         threadcreate, profile, trace, cmdline, symbol) do not exist here.\n</p>\n\
         </body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procinfo::Thread;

    #[test]
    fn goroutine_text_starts_with_the_reference_header() {
        let threads = [
            Thread {
                tid: 10,
                name: "ghostunnel".into(),
                state: "S (sleeping)".into(),
            },
            Thread {
                tid: 12,
                name: "status".into(),
                state: "R (running)".into(),
            },
        ];
        assert_eq!(
            goroutine_text(&threads),
            "goroutine profile: total 2\n# thread 10 [ghostunnel] S (sleeping)\n\
             # thread 12 [status] R (running)\n"
        );
    }

    #[test]
    fn routes_and_their_answers() {
        let r = answer("/debug/pprof").unwrap();
        assert_eq!((r.code, r.ctype), (307, HTML));
        assert_eq!(r.headers, "Location: /debug/pprof/\r\n");
        assert_eq!(
            r.body,
            "<a href=\"/debug/pprof/\">Temporary Redirect</a>.\n\n"
        );
        let r = answer("/debug/pprof/").unwrap();
        assert_eq!((r.code, r.ctype), (200, HTML));
        assert!(r.body.contains("goroutine?debug=1"), "{}", r.body);
        let r = answer("/debug/pprof/goroutine?debug=1").unwrap();
        assert_eq!((r.code, r.ctype), (200, TEXT));
        let first = r.body.lines().next().unwrap();
        let n: usize = first
            .strip_prefix("goroutine profile: total ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r.body.lines().count(), n + 1, "{}", r.body);
        assert!(n >= 1);
        assert_eq!(answer("/debug/pprof/goroutine?debug=2").unwrap().code, 200);
        for other in [
            "/debug/pprof/goroutine",
            "/debug/pprof/goroutine?debug=0",
            "/debug/pprof/heap",
            "/debug/pprof/profile?seconds=5",
            "/debug/pprof/cmdline",
            "/debug/pprof/goroutine/x",
        ] {
            let r = answer(other).unwrap();
            assert_eq!((r.code, r.ctype), (404, TEXT), "{other}");
            assert_eq!(r.headers, ERROR_HEADERS, "{other}");
            assert!(r.body.starts_with("Unknown profile: "), "{other}");
            assert_eq!(r.body.lines().count(), 1, "{other}");
        }
        assert_eq!(answer("/debug/pprofx"), None);
        assert_eq!(answer("/_status"), None);
    }
}
