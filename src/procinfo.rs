//! What the kernel says about this process, read from `/proc/self`: its threads (for the
//! `/debug/pprof/goroutine` listing and the thread-count series) and the figures every
//! Prometheus exporter publishes as `process_*`.
//!
//! Owns no state and no threads; every call reads the files afresh. The sandbox keeps
//! `/proc/<own pid>` readable when the status port is on, so this works after it is applied.
//! A file that cannot be read yields `None` (the series is then left out), never a made-up
//! value.

use std::fs;

/// One thread of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub tid: u32,
    /// `comm`, as set by the thread's name (at most 15 bytes).
    pub name: String,
    /// The `State:` line of its status file, e.g. `S (sleeping)`.
    pub state: String,
}

/// The process's threads, in thread-id order.
pub fn threads() -> Vec<Thread> {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out: Vec<Thread> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            // A thread may end between the listing and this read: it is then left out.
            let status = fs::read_to_string(e.path().join("status")).ok()?;
            Some(Thread {
                tid,
                name: field(&status, "Name:").unwrap_or_default().to_string(),
                state: field(&status, "State:").unwrap_or_default().to_string(),
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// `Threads:` of `/proc/self/status`: the number of OS threads right now.
pub fn thread_count() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    field(&status, "Threads:")?.parse().ok()
}

/// The value after `key` on its line of a `/proc` status-style file, trimmed.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim())
}

/// The `process_*` figures, computed from the same files and limits as the Prometheus Go
/// client does, so the values agree with what its exporters report for a process.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// Unix seconds.
    pub start_time: Option<f64>,
    pub open_fds: Option<u64>,
    /// Soft `RLIMIT_NOFILE`.
    pub max_fds: Option<f64>,
    /// Soft `RLIMIT_AS` (2^64 when unlimited, as the Go client reports it).
    pub virtual_max_bytes: Option<f64>,
    /// `IpExt` octets of the network namespace (not of this process alone).
    pub network_receive_bytes: Option<u64>,
    pub network_transmit_bytes: Option<u64>,
    pub threads: Option<u64>,
}

/// Clock ticks per second of `/proc/*/stat` times; fixed at 100 on Linux's user ABI.
const USER_HZ: f64 = 100.0;

impl Process {
    pub fn read() -> Process {
        let mut p = Process::default();
        if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may itself hold spaces and parentheses.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22,
            // vsize 23, rss 24 (pages).
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                p.cpu_seconds = Some((u + s) as f64 / USER_HZ);
            }
            p.virtual_bytes = num(20);
            p.resident_bytes = num(21).map(|pages| pages * page_size());
            if let (Some(start), Some(boot)) = (num(19), boot_time()) {
                p.start_time = Some(boot as f64 + start as f64 / USER_HZ);
            }
        }
        p.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        if let Ok(limits) = fs::read_to_string("/proc/self/limits") {
            p.max_fds = soft_limit(&limits, "Max open files");
            p.virtual_max_bytes = soft_limit(&limits, "Max address space");
        }
        if let Ok(netstat) = fs::read_to_string("/proc/self/net/netstat") {
            p.network_receive_bytes = ip_ext(&netstat, "InOctets");
            p.network_transmit_bytes = ip_ext(&netstat, "OutOctets");
        }
        p.threads = thread_count();
        p
    }
}

/// The soft limit of a `/proc/self/limits` row; `unlimited` is 2^64 as Go's client shows it.
fn soft_limit(limits: &str, name: &str) -> Option<f64> {
    let row = limits.lines().find(|l| l.starts_with(name))?;
    match row[name.len()..].split_whitespace().next()? {
        "unlimited" => Some(18_446_744_073_709_551_616.0),
        v => v.parse::<u64>().ok().map(|v| v as f64),
    }
}

/// A column of the `IpExt:` rows (names line, then values line) of `net/netstat`.
fn ip_ext(netstat: &str, name: &str) -> Option<u64> {
    let mut rows = netstat.lines().filter(|l| l.starts_with("IpExt:"));
    let names = rows.next()?;
    let values = rows.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// System boot time (unix seconds) from `/proc/stat`. Read once: the value never changes, and
/// the sandbox does not leave `/proc/stat` readable.
pub fn boot_time() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        field(&stat, "btime")?.parse().ok()
    })
}

/// The page size, from the auxiliary vector the kernel handed the process.
fn page_size() -> u64 {
    // `getauxval` cannot fail in a way that matters: it returns 0 for an unknown key, and
    // every Linux kernel passes AT_PAGESZ.
    #[allow(unsafe_code)]
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let v = unsafe { libc::getauxval(libc::AT_PAGESZ) };
    if v == 0 { 4096 } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_threads_are_listed_with_names_and_states() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            rx.recv()
        });
        ready.recv().unwrap();
        let list = threads();
        // The main thread (tid = pid), this test's thread and the probe, each with a name
        // and a state.
        assert!(list.len() >= 2, "{list:?}");
        assert!(
            list.iter()
                .all(|t| t.tid > 0 && !t.name.is_empty() && !t.state.is_empty()),
            "{list:?}"
        );
        assert!(list.iter().any(|t| t.tid == std::process::id()), "{list:?}");
        assert!(thread_count().unwrap() >= 2);
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn process_figures_are_plausible() {
        let p = Process::read();
        let rss = p.resident_bytes.unwrap();
        assert!(rss > 100_000 && rss < 10_000_000_000, "{p:?}");
        assert!(p.virtual_bytes.unwrap() >= rss, "{p:?}");
        assert!(p.open_fds.unwrap() >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap() as f64, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 30.0, "{p:?}");
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        assert!(p.threads.unwrap() >= 1);
    }

    #[test]
    fn limits_and_netstat_rows_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(
            soft_limit(limits, "Max address space"),
            Some(18_446_744_073_709_551_616.0)
        );
        let net =
            "TcpExt: A B\nTcpExt: 1 2\nIpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 99 42\n";
        assert_eq!(ip_ext(net, "InOctets"), Some(99));
        assert_eq!(ip_ext(net, "OutOctets"), Some(42));
    }
}
