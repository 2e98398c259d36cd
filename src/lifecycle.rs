//! The process's lifecycle state machine: `initializing → listening ⇄ reloading → stopping`.
//!
//! [`Lifecycle`] owns the phase and the last reload time, and tells systemd about every change
//! under the same lock (through [`Announcer`]), so nothing but watchdog pings can follow
//! `stopping`. `/_status` (status.rs) reads it, the signal thread and the accept loop move it.
//! Owns no sockets besides the notifier it is given, and no TLS.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::proxy::Proxy;
use crate::sync::lock;
use crate::systemd::Notifier;

/// The lifecycle phase, as `/_status` and systemd see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Initializing,
    Listening,
    Reloading,
    Stopping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "initializing",
            Phase::Listening => "listening",
            Phase::Reloading => "reloading",
            Phase::Stopping => "stopping",
        }
    }
}

struct State {
    phase: Phase,
    last_reload: Option<SystemTime>,
}

/// The process's lifecycle state. Shared by the signal thread, the accept loop and the status
/// server; every method may be called from any thread.
pub struct Lifecycle {
    state: Mutex<State>,
    announcer: Announcer,
}

impl Lifecycle {
    pub fn new(announcer: Announcer) -> Lifecycle {
        Lifecycle {
            state: Mutex::new(State {
                phase: Phase::Initializing,
                last_reload: None,
            }),
            announcer,
        }
    }

    /// Moves to `phase` unless stopping already began (stopping is final). Returns whether the
    /// move happened.
    pub fn enter(&self, phase: Phase) -> bool {
        let mut st = lock(&self.state);
        if st.phase == Phase::Stopping {
            return false;
        }
        if phase == Phase::Reloading {
            st.last_reload = Some(SystemTime::now());
        }
        st.phase = phase;
        self.announcer.announce(phase);
        true
    }

    pub fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    /// When the last reload began; `None` before the first.
    pub fn last_reload(&self) -> Option<SystemTime> {
        lock(&self.state).last_reload
    }
}

/// Tells systemd about phase changes: `READY=1`, `RELOADING=1` (with `MONOTONIC_USEC`),
/// `STOPPING=1`, each followed by `STATUS=<phase> | <summary> | <n> open connections`.
pub struct Announcer {
    notifier: Arc<Notifier>,
    proxy: Arc<Proxy>,
    /// `<mode> proxying <listen> => <target>`.
    summary: String,
}

impl Announcer {
    pub fn new(notifier: Arc<Notifier>, proxy: Arc<Proxy>, summary: String) -> Announcer {
        Announcer {
            notifier,
            proxy,
            summary,
        }
    }

    fn announce(&self, phase: Phase) {
        let sd = &self.notifier;
        match phase {
            Phase::Listening => sd.send("READY=1"),
            Phase::Reloading => sd.reloading(),
            Phase::Stopping => sd.send("STOPPING=1"),
            Phase::Initializing => return,
        }
        let open = self.proxy.open_connections();
        sd.send(&format!(
            "STATUS={} | {} | {open} open connections",
            phase.as_str(),
            self.summary
        ));
    }
}
