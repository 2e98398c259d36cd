//! Giving memory back: the untouched part of an idle connection thread's stack, the
//! allocator's free pages after a burst of connections, and glibc tuned for many threads.
//!
//! A worker thread's stack is touched deep during a TLS handshake (the key exchange and the
//! signature code keep large arrays on it), then the copy loop needs a few pages. The kernel
//! keeps every page once touched, so thousands of idle connections would each hold the
//! handshake's high-water mark. glibc likewise keeps freed heap pages in its arenas until asked.

use std::cell::Cell;

/// The glibc tunables set for this daemon (name, value), unless the operator set them:
/// - no per-thread malloc cache. It keeps up to 7 freed chunks of every small size in every
///   thread; with one thread per connection, each idle connection would hold what its
///   handshake freed, about 9 KiB per process that no trim can reach (1,000 idle connections:
///   67 KiB per connection for a client and server together with the cache, 49 KiB without).
///   The arenas still serve each thread without contention; only the cache goes.
/// - a 1 MiB cache of exited threads' stacks instead of 40 MiB: glibc keeps 16 KiB of each
///   cached stack resident, so a burst of thousands of connections would leave megabytes
///   behind. The worker pool keeps its own idle threads anyway.
const TUNABLES: [(&str, &str); 2] = [
    ("glibc.malloc.tcache_count", "0"),
    ("glibc.pthread.stack_cache_size", "1048576"),
];

/// Set in the environment of the re-executed process.
const REEXEC_MARKER: &str = "GHOSTUNNEL_MALLOC_TUNED";

/// Applies [`TUNABLES`] by re-executing this program once with `GLIBC_TUNABLES` set: glibc
/// reads tunables only when a process starts. Call first thing in `main`; returns only when
/// nothing was done (everything already set, by us or by the operator, whose settings are
/// kept) or when the re-exec failed (the process then runs on with glibc's defaults).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    {
        // The marker guards against an exec loop: glibc may rewrite GLIBC_TUNABLES in place
        // while parsing it (2.36 cuts it at the first ':'), so its value cannot tell.
        if std::env::var_os(REEXEC_MARKER).is_some() {
            return;
        }
        let current = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
        let given = current.to_string_lossy().into_owned();
        let missing: Vec<String> = TUNABLES
            .iter()
            .filter(|(name, _)| !given.contains(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if missing.is_empty() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut value = current;
        if !value.is_empty() {
            value.push(":");
        }
        value.push(missing.join(":"));
        reexec(&exe, value);
    }
}

/// execve(2) of `exe` with our argv and environment plus the tunables and the marker. Returns
/// only if it failed. (Direct, rather than through `std::process::Command`, whose spawning
/// machinery would add 38 KB to the binary for this one call.)
#[cfg(target_env = "gnu")]
fn reexec(exe: &std::path::Path, tunables: std::ffi::OsString) {
    use std::ffi::{CString, OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;

    let c = |s: &OsStr| CString::new(s.as_bytes()).ok();
    let pair = |k: &OsStr, v: &OsStr| {
        let mut kv = OsString::from(k);
        kv.push("=");
        kv.push(v);
        c(&kv)
    };
    let Some(path) = c(exe.as_os_str()) else {
        return;
    };
    let Some(args) = std::env::args_os()
        .map(|a| c(&a))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let env = std::env::vars_os()
        .filter(|(k, _)| k != "GLIBC_TUNABLES" && k != REEXEC_MARKER)
        .map(|(k, v)| pair(&k, &v))
        .chain([
            pair(OsStr::new("GLIBC_TUNABLES"), &tunables),
            pair(OsStr::new(REEXEC_MARKER), OsStr::new("1")),
        ])
        .collect::<Option<Vec<_>>>();
    let Some(env) = env else {
        return;
    };
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: `path`, `argv` and `envp` are NUL-terminated strings and NULL-terminated arrays
    // that outlive the call; execve only returns on failure, leaving the process as it was.
    #[allow(unsafe_code)]
    unsafe {
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
}

/// Leave this much below the current stack pointer alone: the frames of the calls made from
/// here (madvise itself, a signal handler) live there.
const STACK_MARGIN: usize = 1024;

thread_local! {
    /// This thread's scratch buffer, kept between the connections a pooled worker serves.
    static SCRATCH: Cell<Option<PageBuf>> = const { Cell::new(None) };
    /// The lowest usable address of this thread's stack (above the guard page), once known.
    static STACK_LOW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Returns the pages of the calling thread's stack below the current frame to the kernel.
/// They read back as zeros if the thread goes deep again, which is what fresh stack is.
/// Best effort: does nothing where the stack bounds cannot be read.
pub fn release_stack() {
    let Some(low) = stack_low() else {
        return;
    };
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let page = page_size();
    let high = sp.saturating_sub(STACK_MARGIN) & !(page - 1);
    let low = (low + page - 1) & !(page - 1);
    if high <= low {
        return;
    }
    // SAFETY: [low, high) lies inside this thread's own stack mapping, below every live frame
    // (the current one and a margin for the calls made from it). Nothing points there, and
    // MADV_DONTNEED on private anonymous memory only swaps the pages for zero-fill ones.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
    }
}

fn stack_low() -> Option<usize> {
    if let Some(low) = STACK_LOW.get() {
        return Some(low);
    }
    let low = query_stack_low()?;
    STACK_LOW.set(Some(low));
    Some(low)
}

#[allow(unsafe_code)]
fn query_stack_low() -> Option<usize> {
    // SAFETY: pthread_getattr_np initialises `attr` for the calling thread; it is read with
    // pthread_attr_getstack and destroyed exactly once, on the same path.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then_some(addr as usize)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// A scratch buffer in its own anonymous mapping, so that an idle connection can hand its
/// pages back to the kernel at once ([`PageBuf::release`]) instead of leaving a hole in a
/// malloc arena that stays resident. Reads back as zeros after a release, like new memory.
pub struct PageBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    /// Pages may be resident (touched since the last release).
    dirty: bool,
}

// SAFETY: PageBuf owns its mapping exclusively, like a Box<[u8]>.
#[allow(unsafe_code)]
unsafe impl Send for PageBuf {}

impl PageBuf {
    /// Maps `len` bytes (rounded up to whole pages). No memory is used until it is written.
    pub fn new(len: usize) -> std::io::Result<PageBuf> {
        let page = page_size();
        let len = len.div_ceil(page).max(1) * page;
        // SAFETY: a fresh private anonymous mapping; the result is checked before use.
        #[allow(unsafe_code)]
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or(std::io::ErrorKind::OutOfMemory)?;
        Ok(PageBuf {
            ptr,
            len,
            dirty: false,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.dirty = true;
        // SAFETY: `ptr` is a live mapping of `len` readable, writable bytes owned by `self`,
        // and the returned borrow is tied to `&mut self`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len)
        }
    }

    /// Gives the pages back to the kernel; the buffer stays usable (zero-filled on next use).
    pub fn release(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // SAFETY: the whole mapping is ours and no borrow of it outlives `&mut self`.
        #[allow(unsafe_code)]
        unsafe {
            libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Runs `f` with this thread's scratch buffer of `len` bytes, mapped on first use and kept
/// for the next connection the thread serves (its pages may have been handed back meanwhile).
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut PageBuf) -> R) -> std::io::Result<R> {
    let mut buf = match SCRATCH.take() {
        Some(b) if b.len >= len => b,
        _ => PageBuf::new(len)?,
    };
    let r = f(&mut buf);
    SCRATCH.set(Some(buf));
    Ok(r)
}

/// A burst of connections is over: the next thread to settle trims the allocator.
static TRIM_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks for [`trim`] once the pool has settled: right after a burst, the threads that served it
/// are still exiting and freeing (thread-local state), and a trim now would leave those holes.
pub fn trim_soon() {
    TRIM_PENDING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Hands back what an idle pooled thread holds: its scratch buffer's pages and its stack below
/// the current frame; and the allocator's free pages, if a burst ended since ([`trim_soon`]).
pub fn release_idle_thread() {
    if let Some(mut buf) = SCRATCH.take() {
        buf.release();
        SCRATCH.set(Some(buf));
    }
    release_stack();
    if TRIM_PENDING.swap(false, std::sync::atomic::Ordering::Relaxed) {
        trim();
    }
}

/// Caps glibc's malloc arenas at one per CPU. glibc adds arenas as threads contend, up to eight
/// per CPU; a burst of connection threads creates them all and each keeps memory after the
/// burst (500 connections: 15 MiB an idle minute later instead of 10). No more threads than
/// CPUs run at once, so the extra arenas buy little. Call once at startup, before the threads.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt(3) only sets an allocator parameter.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cpus).unwrap_or(i32::MAX));
        }
    }
}

/// Returns the allocator's free pages to the kernel (glibc's malloc_trim walks every arena).
/// Called after a burst of connections has drained and when the last pooled worker leaves, not
/// per connection.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches `kib` KiB of stack below the caller.
    #[inline(never)]
    fn go_deep(kib: usize) -> u8 {
        let mut block = [0u8; 1024];
        block[kib % 1024] = kib as u8;
        let below = if kib > 1 { go_deep(kib - 1) } else { 0 };
        std::hint::black_box(&mut block);
        block[kib % 1024].wrapping_add(below)
    }

    /// Resident pages in [start, start + len), exactly (mincore walks the page tables).
    #[allow(unsafe_code)]
    fn resident(start: usize, len: usize) -> usize {
        let page = page_size();
        let start = start & !(page - 1);
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is mapped (a live stack or buffer) and `vec` has one byte per page.
        let rc =
            unsafe { libc::mincore(start as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn a_released_page_buffer_leaves_rss_and_reads_as_zeros() {
        let mut buf = PageBuf::new(1 << 20).unwrap();
        let (start, len) = (buf.ptr.as_ptr() as usize, buf.len);
        assert_eq!(resident(start, len), 0, "untouched");
        buf.as_mut_slice().fill(0xa5);
        assert_eq!(resident(start, len), 256, "all touched");
        buf.release();
        assert_eq!(resident(start, len), 0, "released");
        assert!(buf.as_mut_slice().iter().all(|&b| b == 0));
    }

    #[test]
    fn a_deep_stack_is_given_back_and_still_usable() {
        let worker = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| {
                let low = stack_low().unwrap();
                let here = 0u8;
                let below = std::ptr::addr_of!(here) as usize - 8192 - low;
                go_deep(600);
                let deep = resident(low, below);
                release_stack();
                let released = resident(low, below);
                // The stack still works afterwards, deep again.
                go_deep(600);
                (deep, released)
            })
            .unwrap();
        let (deep, released) = worker.join().unwrap();
        assert!(deep >= 140, "the recursion touched {deep} pages");
        assert_eq!(released, 0, "{released} of {deep} pages still resident");
    }
}
