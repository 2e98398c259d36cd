//! Client mode: plaintext in, mutual TLS out (docs/behaviour.md §6.3, §7.2). Each accepted
//! connection dials `--target`, completes the TLS handshake (verifying the server) under
//! `--connect-timeout`, then the pipe runs.

use std::sync::Arc;
use std::time::Instant;

use rustls::{ClientConnection, Connection};

use crate::config::Timeouts;
use crate::logging::CONN_ERRS;
use crate::net::{self, Addr, Stream};
use crate::proxy::{self, Connector, Proxy};
use crate::relay::{self, Endpoint, HandshakeError};
use crate::tls::{ClientTls, Reloadable};
use crate::tunnel::ProxyUrl;

/// The client-mode connector.
pub struct Client {
    pub tls: Arc<Reloadable<ClientTls>>,
    pub target: Addr,
    pub timeouts: Timeouts,
    /// `--proxy`: reach the target through this proxy.
    pub proxy: Option<ProxyUrl>,
}

impl Client {
    /// Dials the target and completes the TLS handshake before `deadline`.
    pub fn dial(&self, deadline: Instant, proxy: &Proxy) -> Result<(Stream, Connection), String> {
        let sock = match &self.proxy {
            Some(proxy) => proxy.dial(&self.target.raw, deadline),
            None => net::dial(&self.target, deadline),
        };
        let mut sock = sock.map_err(|e| e.to_string())?;
        let ctx = self.tls.current();
        let conn = ClientConnection::new(ctx.config.clone(), ctx.server_name.clone())
            .map_err(HandshakeError::Tls)
            .and_then(|c| {
                let mut conn = Connection::Client(c);
                relay::handshake(&mut sock, &mut conn, deadline, proxy.cancel_flag())?;
                if let Connection::Client(c) = &conn {
                    ctx.recheck_resumed(c).map_err(HandshakeError::Tls)?;
                }
                Ok(conn)
            })
            .map_err(|e| e.to_string())?;
        Ok((sock, conn))
    }
}

impl Connector for Client {
    fn handle(&self, inbound: Stream, proxy: &Proxy) {
        let started = Instant::now();
        let deadline = started + self.timeouts.connect;
        let (sock, conn) = match self.dial(deadline, proxy) {
            Ok(pair) => pair,
            Err(e) => {
                if let Some(m) = proxy.metrics() {
                    crate::metrics::Metrics::inc(&m.accept_error);
                }
                log::error!(target: CONN_ERRS, "error on dial: {e}");
                return;
            }
        };
        let mut inbound = Endpoint::plain(inbound);
        let mut outbound = Endpoint::tls(sock, conn);
        proxy::pipe(
            &mut inbound,
            &mut outbound,
            &self.timeouts,
            started,
            proxy.metrics(),
        );
    }
}
