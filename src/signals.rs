//! Signals and reloads (SPEC 9, 12.1): a signal-hook thread turns SIGTERM/SIGINT into a
//! graceful shutdown and SIGHUP/SIGUSR1 into a reload; a timer thread runs `--timed-reload`.
//! Handlers only record; this normal thread acts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::net::Listener;
use crate::proxy::Proxy;

/// Re-reads identity and trust and swaps them in; `Ok` carries the new leaf's subject.
pub type ReloadFn = dyn Fn() -> Result<String, String> + Send + Sync;

/// Reloads are serialized so their log lines never interleave.
static RELOAD_LOCK: Mutex<()> = Mutex::new(());

/// Runs one reload with its log lines (SPEC 9). Skipped once shutdown started.
pub fn reload(proxy: &Proxy, reload: &ReloadFn) {
    let _serial = RELOAD_LOCK.lock();
    if proxy.is_shutting_down() {
        return;
    }
    match reload() {
        Ok(subject) => log::info!("loaded certificate: {subject}"),
        Err(e) => log::info!("error reloading TLS configuration: {e}"),
    }
    log::info!("reloading configuration complete");
}

/// Installs the handlers and starts the signal thread. Signals that arrived before this call
/// had their default action (SPEC 12.1).
pub fn start(
    proxy: Arc<Proxy>,
    listener: Arc<Listener>,
    reloader: Arc<ReloadFn>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut listener = Some(listener);
            for sig in signals.forever() {
                match sig {
                    SIGHUP | SIGUSR1 => {
                        if proxy.is_shutting_down() {
                            continue;
                        }
                        let name = if sig == SIGHUP {
                            "hangup"
                        } else {
                            "user defined signal 1"
                        };
                        log::info!("received {name}, reloading TLS configuration");
                        reload(&proxy, &*reloader);
                    }
                    _ => {
                        let Some(l) = listener.take() else { continue };
                        let name = if sig == SIGTERM {
                            "terminated"
                        } else {
                            "interrupt"
                        };
                        log::info!("received {name}, shutting down");
                        restore_default(SIGTERM);
                        restore_default(SIGINT);
                        proxy.begin_shutdown(&l);
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts the `--timed-reload` timer: the first tick one interval after start.
pub fn start_timer(
    every: Duration,
    proxy: Arc<Proxy>,
    reloader: Arc<ReloadFn>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reload-timer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                reload(&proxy, &*reloader);
            }
        })?;
    Ok(())
}

/// Gives `sig` back its default action, so a second SIGTERM/SIGINT kills (SPEC 12.1).
fn restore_default(sig: i32) {
    // SAFETY: installing SIG_DFL passes no pointers and is async-signal-safe; signal-hook's own
    // handler for `sig` is simply replaced, which is the point.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}
