//! Signals, reloads and shutdown (docs/behaviour.md §9, §12): a signal-hook thread turns
//! SIGTERM/SIGINT into a graceful shutdown and SIGHUP/SIGUSR1 into a reload; a timer thread runs
//! `--timed-reload`. Handlers only record; the [`Controller`] acts, on whichever thread asked, and
//! leaves the reloading itself to `reload.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::lifecycle::{Lifecycle, Phase};
use crate::net::Listener;
use crate::proxy::Proxy;
use crate::reload::Reloader;

/// Starts reloads and the shutdown. Every method may be called from any thread, concurrently
/// and repeatedly.
pub struct Controller {
    pub proxy: Arc<Proxy>,
    pub lifecycle: Arc<Lifecycle>,
    reloader: Arc<Reloader>,
    /// The listener until shutdown takes it (so shutdown happens once).
    listener: Mutex<Option<Arc<Listener>>>,
    /// Reloads are serialized so their log lines never interleave.
    reloading: Mutex<()>,
}

impl Controller {
    pub fn new(
        proxy: Arc<Proxy>,
        lifecycle: Arc<Lifecycle>,
        reloader: Arc<Reloader>,
        listener: Arc<Listener>,
    ) -> Controller {
        Controller {
            proxy,
            lifecycle,
            reloader,
            listener: Mutex::new(Some(listener)),
            reloading: Mutex::new(()),
        }
    }

    /// Runs one reload with its log lines, bracketed by the `reloading` phase, in docs/behaviour.md
    /// §9's order: `announce` (the signal's line) first, the phase last. Skipped once shutdown
    /// started.
    pub fn reload(&self, announce: Option<&str>) {
        if let Some(line) = announce {
            log::info!("{line}");
        }
        let _serial = crate::sync::lock(&self.reloading);
        if self.proxy.is_shutting_down() || !self.lifecycle.enter(Phase::Reloading) {
            return;
        }
        let result = self.reloader.reload();
        if let Some(m) = self.proxy.metrics() {
            m.reloaded(result.is_ok());
        }
        match &result.certificates {
            Ok(subject) => log::info!("loaded certificate: {subject}"),
            Err(e) => log::error!("error reloading TLS configuration: {e}"),
        }
        if let Err(line) = &result.authorizer {
            log::error!("{line}");
        }
        log::info!("reloading configuration complete");
        self.lifecycle.enter(Phase::Listening);
    }

    /// Starts the graceful shutdown (docs/behaviour.md §12.2) with `message` as its first log line;
    /// a second call does nothing.
    pub fn shutdown(&self, message: &str) {
        let taken = crate::sync::lock(&self.listener).take();
        let Some(listener) = taken else { return };
        log::info!("{message}");
        restore_default(SIGTERM);
        restore_default(SIGINT);
        self.lifecycle.enter(Phase::Stopping);
        self.proxy.begin_shutdown(&listener);
    }
}

/// Installs the handlers and starts the signal thread. Signals that arrived before this call
/// had their default action (docs/behaviour.md §12.1).
pub fn start(controller: Arc<Controller>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP | SIGUSR1 if !controller.proxy.is_shutting_down() => {
                        let name = if sig == SIGHUP {
                            "hangup"
                        } else {
                            "user defined signal 1"
                        };
                        controller.reload(Some(&format!(
                            "received {name}, reloading TLS configuration"
                        )));
                    }
                    SIGTERM => controller.shutdown("received terminated, shutting down"),
                    SIGINT => controller.shutdown("received interrupt, shutting down"),
                    // Reload signals while draining are ignored.
                    _ => {}
                }
            }
        })?;
    Ok(())
}

/// Starts the `--timed-reload` timer: the first tick one interval after start.
pub fn start_timer(every: Duration, controller: Arc<Controller>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reload-timer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                controller.reload(None);
            }
        })?;
    Ok(())
}

/// Gives `sig` back its default action, so a second SIGTERM/SIGINT kills (docs/behaviour.md §12.1).
fn restore_default(sig: i32) {
    // SAFETY: installing SIG_DFL passes no pointers; signal-hook's own handler for `sig` is
    // simply replaced, which is the point.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}
